"""A second ROS 2 process for tests: publish messages given as JSON, or echo received messages as JSON.

There is no ``ros2`` command line with the PyPI wheels; this stands in for ``ros2 topic pub`` and
``ros2 topic echo`` in multi-process tests. Any message type importable in this environment works.

    python test/ros_peer.py echo TYPE TOPIC --count N [--timeout S] [--best-effort]
    python test/ros_peer.py pub TYPE TOPIC JSON [--subscribers K] [--timeout S] [--best-effort]

``TYPE`` is e.g. ``echo_guidance/msg/Guidance``. ``echo`` prints one JSON object per received message on
stdout and exits 0 after ``N`` messages. ``pub`` takes a JSON object or a list of them (fields not given
keep their defaults; nested messages are nested objects), waits until ``K`` subscribers have matched
(``get_subscription_count``), publishes the messages in order and, on a reliable topic, waits until every
subscriber has acknowledged them. Reliable topics use transient-local durability with a history as long as
the message list, so a subscriber that matches late still gets every message. Both exit 2 with a message on
stderr when their time runs out. Run under the ROS_DOMAIN_ID the test chose (conftest's ``ros_env``).

The module's :func:`message_to_dict` and :func:`fill_message` are importable by tests too.
"""

import argparse
import importlib
import json
import os
import sys
import time

TIMEOUT_EXIT = 2


def message_class(type_name):
    """Return the message class for ``pkg/msg/Name`` (``pkg/Name`` is read as ``pkg/msg/Name``)."""
    parts = type_name.split('/')
    if len(parts) == 2:
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f'message type must look like pkg/msg/Name, got {type_name!r}')
    module = importlib.import_module(f'{parts[0]}.{parts[1]}')
    try:
        return getattr(module, parts[2])
    except AttributeError:
        raise ValueError(f'{parts[0]}.{parts[1]} has no message type {parts[2]!r}') from None


def _is_message(value):
    return hasattr(type(value), 'get_fields_and_field_types')


def _plain(value):
    """Convert a field value to JSON types: messages to dicts, arrays and sequences to lists."""
    if _is_message(value):
        return message_to_dict(value)
    if isinstance(value, (bytes, bytearray)):
        return list(value)
    if hasattr(value, 'tolist'):  # NumPy arrays (fixed-size numeric arrays) and NumPy scalars
        return value.tolist()
    if isinstance(value, (list, tuple)) or type(value).__name__ == 'array':  # array.array sequences
        return [_plain(item) for item in value]
    return value


def message_to_dict(message):
    """Return the message as nested dicts and lists of plain Python values, field order kept."""
    return {name: _plain(getattr(message, name)) for name in message.get_fields_and_field_types()}


def _nested_class(slot_type):
    """Return the message class of a NamespacedType slot type, or None for a basic/string type."""
    namespaces = getattr(slot_type, 'namespaces', None)
    if not namespaces:
        return None
    return getattr(importlib.import_module('.'.join(namespaces)), slot_type.name)


def fill_message(message, data):
    """Set the fields named in the dict ``data`` on ``message`` (recursively) and return the message.

    Raises:
        ValueError: ``data`` names a field the message does not have.
    """
    fields = list(message.get_fields_and_field_types())
    slot_types = dict(zip(fields, type(message).SLOT_TYPES))
    for name, value in data.items():
        if name not in slot_types:
            raise ValueError(f'{type(message).__name__} has no field {name!r}; fields: {", ".join(fields)}')
        slot_type = slot_types[name]
        element_type = getattr(slot_type, 'value_type', None)
        nested = _nested_class(slot_type)
        element_class = _nested_class(element_type) if element_type is not None else None
        if nested is not None:
            fill_message(getattr(message, name), value)
        elif element_class is not None:
            setattr(message, name, [fill_message(element_class(), item) for item in value])
        else:
            setattr(message, name, value)
    return message


def _qos(best_effort, depth):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    if best_effort:
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.VOLATILE)
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _fail(text):
    print(f'ros_peer: {text}', file=sys.stderr, flush=True)
    return TIMEOUT_EXIT


def echo(node, args):
    """Print received messages as JSON lines until ``args.count`` arrived; return the exit status."""
    import rclpy

    received = []

    def on_message(message):
        received.append(message)
        print(json.dumps(message_to_dict(message)), flush=True)

    node.create_subscription(message_class(args.type), args.topic, on_message,
                             _qos(args.best_effort, max(args.count, 10)))
    deadline = time.monotonic() + args.timeout
    while len(received) < args.count:
        if time.monotonic() > deadline:
            return _fail(f'received {len(received)} of {args.count} messages on {args.topic} '
                         f'within {args.timeout} s')
        rclpy.spin_once(node, timeout_sec=0.05)
    return 0


def publish(node, args):
    """Publish the JSON message(s) once enough subscribers matched; return the exit status."""
    from rclpy.duration import Duration

    cls = message_class(args.type)
    data = json.loads(args.json)
    messages = [fill_message(cls(), item) for item in (data if isinstance(data, list) else [data])]
    publisher = node.create_publisher(cls, args.topic, _qos(args.best_effort, max(len(messages), 10)))
    deadline = time.monotonic() + args.timeout
    while publisher.get_subscription_count() < args.subscribers:
        if time.monotonic() > deadline:
            return _fail(f'{publisher.get_subscription_count()} of {args.subscribers} subscribers matched '
                         f'on {args.topic} within {args.timeout} s')
        time.sleep(0.02)
    for message in messages:
        publisher.publish(message)
    if not args.best_effort:
        remaining = max(deadline - time.monotonic(), 0.1)
        if not publisher.wait_for_all_acked(Duration(seconds=remaining)):
            return _fail(f'subscribers on {args.topic} did not acknowledge every message '
                         f'within {args.timeout} s')
    return 0


def build_parser():
    """Build the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    for name, handler in (('echo', echo), ('pub', publish)):
        command = commands.add_parser(name)
        command.add_argument('type', help='message type, e.g. echo_guidance/msg/Guidance')
        command.add_argument('topic')
        if name == 'pub':
            command.add_argument('json', help='a JSON object, or a list of them, with the field values')
            command.add_argument('--subscribers', type=int, default=1,
                                 help='wait for this many matched subscribers before publishing')
        else:
            command.add_argument('--count', type=int, default=1, help='exit after this many messages')
        command.add_argument('--timeout', type=float, default=30.0, help='seconds before giving up')
        command.add_argument('--best-effort', action='store_true',
                             help='best-effort, volatile QoS (default: reliable, transient-local)')
        command.set_defaults(handler=handler)
    return parser


SHUTDOWN_GRACE_S = 10.0


def _close(node):
    """Destroy the node and shut rclpy down; report (not hang) if the middleware does not finish.

    Once in a few hundred runs of the full suite a Fast DDS peer never returned from shutting down
    after it had done its work (all messages printed), which turned a passing round trip into a
    timeout. The work's exit status is what the tests check, so shutdown gets a bounded grace.
    """
    import threading

    import rclpy

    def close():
        node.destroy_node()
        rclpy.try_shutdown()

    closer = threading.Thread(target=close, name='ros-peer-shutdown', daemon=True)
    closer.start()
    closer.join(SHUTDOWN_GRACE_S)
    if closer.is_alive():
        print(f'ros_peer: rclpy shutdown did not finish within {SHUTDOWN_GRACE_S:g} s; exiting anyway',
              file=sys.stderr, flush=True)
        return False
    return True


def main(argv=None):
    """Run one peer command under its own ROS context; return the exit status."""
    args = build_parser().parse_args(argv)
    import rclpy

    rclpy.init()
    node = rclpy.create_node(f'ros_peer_{args.command}')
    try:
        status = args.handler(node, args)
    except BaseException:
        _close(node)
        raise
    sys.stdout.flush()
    if not _close(node):
        # Middleware threads still running would keep the interpreter from exiting.
        sys.stderr.flush()
        os._exit(status)
    return status


if __name__ == '__main__':
    sys.exit(main())
