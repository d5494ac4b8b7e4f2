"""Small helpers shared by the echo_guidance ROS nodes.

- :class:`ParamSpec` + :func:`declare_parameters`: declare parameters with a
  ``ParameterDescriptor`` (description, range, read-only), validate the start values and every
  later change with the same checks; a bad value is rejected with a reason naming the parameter.
- QoS profiles (:data:`IMAGE_QOS`, :data:`EVENT_QOS`, :data:`HEARTBEAT_QOS`): the project's choices,
  documented in docs/capture.md.
- :class:`DiagnosticsPublisher`: one ``diagnostic_msgs/DiagnosticStatus`` on ``/diagnostics`` at a
  fixed period, filled by a callback.
- :func:`run_node`: the rclpy init / spin / shutdown boilerplate, with the exits handled.
- :func:`seconds_to_time_msg` / :func:`time_msg_to_ns`: stamp conversions.

Example::

    SPECS = [ParamSpec('rate_hz', 30.0, 'Frame rate.', min_value=0.1, max_value=500.0)]

    class MyNode(Node):
        def __init__(self):
            super().__init__('my_node')
            self.params = declare_parameters(self, SPECS, on_change=self._reconfigure)
"""

import array
import dataclasses
import math
import sys

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


class ParameterValidationError(ValueError):
    """A node parameter has a value the node cannot work with."""


# Images: RELIABLE so the recorder's reliable subscription matches and gets every frame the
# network can carry, KEEP_LAST so a slow subscriber makes the publisher overwrite old samples
# instead of blocking the capture loop. Best-effort viewers (qos_profile_sensor_data) match too.
IMAGE_QOS_DEPTH = 10
IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=IMAGE_QOS_DEPTH,
                       reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# Discrete events (pedal presses, recorder commands): none may be lost.
EVENT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                       reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# Periodic heartbeats: only the newest matters; RELIABLE publishers match both kinds of subscriber.
HEARTBEAT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                           reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """How one parameter is declared and checked.

    Attributes:
        name: parameter name.
        default: default value; its Python type sets the ROS parameter type (use 0.0 for
            doubles, [0, 0] for integer arrays; never an empty list).
        description: shown by ``ros2 param describe``.
        min_value, max_value: inclusive numeric range (scalars, or every element of an array).
        choices: allowed values for strings.
        check: extra check ``f(value) -> None`` raising ValueError with the reason.
        read_only: cannot be changed after start.
        length: required array length.
    """

    name: str
    default: object
    description: str
    min_value: float | None = None
    max_value: float | None = None
    choices: tuple = ()
    check: object = None
    read_only: bool = False
    length: int | None = None

    def descriptor(self):
        """Build the rcl_interfaces ParameterDescriptor."""
        from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
        constraints = []
        if self.choices:
            constraints.append('one of: ' + ', '.join(map(str, self.choices)))
        if self.length is not None:
            constraints.append(f'exactly {self.length} values')
        descriptor = ParameterDescriptor(description=self.description, read_only=self.read_only,
                                         additional_constraints='; '.join(constraints))
        scalar = not isinstance(self.default, (list, tuple))
        if scalar and self.min_value is not None and self.max_value is not None:
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                descriptor.integer_range = [IntegerRange(
                    from_value=int(self.min_value), to_value=int(self.max_value), step=0)]
            elif isinstance(self.default, float):
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(self.min_value), to_value=float(self.max_value), step=0.0)]
        return descriptor

    def coerce(self, value):
        """Return ``value`` as the type of the default, or raise ParameterValidationError.

        The same rules as ROS parameter types, except that an integer is accepted (as a float) where
        a float is expected: ``rate_hz: 30`` means 30.0. Array elements follow the default's first
        element.
        """
        if isinstance(value, (tuple, array.array)):
            value = list(value)  # rclpy hands over array values as array.array
        if isinstance(self.default, (list, tuple)):
            if not isinstance(value, list):
                raise ParameterValidationError(
                    f'parameter {self.name!r} = {value!r}: expected a list, got {type(value).__name__}'
                )
            if not self.default:
                return value
            return [self._coerce_scalar(v, self.default[0], value) for v in value]
        return self._coerce_scalar(value, self.default, value)

    def _coerce_scalar(self, v, like, whole):
        integer = isinstance(v, int) and not isinstance(v, bool)
        if isinstance(like, bool):
            ok, expected = isinstance(v, bool), 'true or false'
        elif isinstance(like, int):
            ok, expected = integer, 'an integer'
        elif isinstance(like, float):
            if integer:
                return float(v)
            ok, expected = isinstance(v, float), 'a number'
        elif isinstance(like, str):
            ok, expected = isinstance(v, str), 'a string'
        else:
            ok, expected = True, ''
        if not ok:
            raise ParameterValidationError(
                f'parameter {self.name!r} = {whole!r}: expected {expected}'
                + (' in every element' if whole is not v else '')
                + f', got {type(v).__name__}'
            )
        return v

    def validate(self, value):
        """Return ``value`` normalised, or raise ParameterValidationError with the reason.

        Type (:meth:`coerce`), finiteness, range, choices and the extra check, in that order. The nodes
        call it on their start values and every change, ``echo-guidance up --check`` on a profile's.
        """
        value = self.coerce(value)

        def fail(reason):
            raise ParameterValidationError(f'parameter {self.name!r} = {value!r}: {reason}')

        values = value if isinstance(value, list) else [value]
        if isinstance(self.default, (list, tuple)) and self.length is not None and len(values) != self.length:
            fail(f'needs exactly {self.length} values, got {len(values)}')
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                fail('must be finite')
            if self.min_value is not None and not isinstance(v, (str, bool)) and v < self.min_value:
                fail(f'must be >= {self.min_value}')
            if self.max_value is not None and not isinstance(v, (str, bool)) and v > self.max_value:
                fail(f'must be <= {self.max_value}')
        if self.choices and value not in self.choices:
            fail(f'must be one of {", ".join(map(str, self.choices))}')
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as err:
                fail(str(err))
        return value


def declare_parameters(node, specs, on_change=None):
    """Declare ``specs`` on ``node``; return a dict name -> validated value (kept up to date).

    Start values (defaults or overrides from the command line / YAML) are validated and a bad one
    raises :class:`ParameterValidationError`. Later changes are validated the same way and
    rejected with the reason; accepted ones update the returned dict and then call
    ``on_change(changed: dict)``. ``on_change`` may raise ValueError to reject the change.
    """
    from rcl_interfaces.msg import SetParametersResult
    by_name = {spec.name: spec for spec in specs}
    values = {}
    for spec in specs:
        _coerce_override(node, spec)
        try:
            parameter = node.declare_parameter(spec.name, spec.default, spec.descriptor())
        except Exception as err:  # rclpy rejects out-of-range / wrongly typed overrides itself
            raise ParameterValidationError(f'parameter {spec.name!r}: {err}') from None
        values[spec.name] = spec.validate(parameter.value)
    # Refuse a misspelt name now, before the node opens devices or connects to an arm; the
    # calibration is declared next by the nodes that read it (run_node checks everything again).
    check_no_unknown_parameters(node, ignore_prefixes=(CALIBRATION_PREFIX,))

    def callback(parameters):
        changed = {}
        try:
            for parameter in parameters:
                spec = by_name.get(parameter.name)
                if spec is None:
                    continue
                changed[spec.name] = spec.validate(parameter.value)
            if changed and on_change is not None:
                on_change(dict(changed))
        except ValueError as err:
            return SetParametersResult(successful=False, reason=str(err))
        values.update(changed)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(callback)
    return values


def _coerce_override(node, spec):
    """Give a start value from a parameter file the spec's type where that loses nothing (30 -> 30.0).

    rclpy would refuse an integer for a float parameter; :meth:`ParamSpec.coerce` decides, the
    same code ``echo-guidance up --check`` runs.
    """
    overrides = getattr(node, '_parameter_overrides', None)  # rclpy's start values for this node
    if not overrides or spec.name not in overrides:
        return
    from rclpy.parameter import Parameter
    original = overrides[spec.name].value
    try:
        value = spec.coerce(original)
    except ParameterValidationError:
        return  # declare_parameter / validate report it with the reason
    if isinstance(value, list):
        same = len(value) == len(original) and all(type(a) is type(b) for a, b in zip(value, original))
    else:
        same = type(value) is type(original)
    if not same:
        overrides[spec.name] = Parameter(spec.name, value=value)


CALIBRATION_PREFIX = 'flange_to_probe.'


def undeclared_parameters(node):
    """Names a parameter file or ``-p`` sets for ``node`` that it never declared (ROS ignores them)."""
    overrides = getattr(node, '_parameter_overrides', None) or {}
    return sorted(name for name in overrides if not node.has_parameter(name))


def check_no_unknown_parameters(node, ignore_prefixes=()):
    """Raise ParameterValidationError naming the parameters ``node`` is given but does not declare."""
    unknown = [n for n in undeclared_parameters(node) if not n.startswith(tuple(ignore_prefixes))]
    if unknown:
        raise ParameterValidationError(
            f'unknown parameter(s) {unknown}: this node declares no such parameter '
            '(ros2 param list shows the declared ones)')


class DiagnosticsPublisher:
    """Publishes one DiagnosticStatus on /diagnostics every ``period_s``.

    Args:
        node: the rclpy node.
        name: status name, e.g. 'capture: /us/image'.
        hardware_id: device identity (port, source spec).
        fill: callable returning ``(level, message, values)``; level is 'OK', 'WARN', 'ERROR' or
            'STALE', values a dict whose items become KeyValue pairs.
    """

    LEVELS = {'OK': 0, 'WARN': 1, 'ERROR': 2, 'STALE': 3}

    def __init__(self, node, name, hardware_id, fill, period_s=1.0):
        """Create the publisher and timer."""
        from diagnostic_msgs.msg import DiagnosticArray
        self._node = node
        self.name = name
        self.hardware_id = hardware_id
        self._fill = fill
        self._publisher = node.create_publisher(DiagnosticArray, '/diagnostics', DIAGNOSTICS_QOS)
        self._timer = node.create_timer(period_s, self.publish)

    def publish(self):
        """Publish the current status now."""
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
        try:
            level, message, values = self._fill()
        except Exception as err:  # a bug in the fill callback must not take the node down
            level, message, values = 'ERROR', f'diagnostics failed: {type(err).__name__}: {err}', {}
        if level not in self.LEVELS:
            raise ValueError(f'diagnostic level must be one of {list(self.LEVELS)}, got {level!r}')
        status = DiagnosticStatus(level=bytes([self.LEVELS[level]]), name=self.name, message=message,
                                  hardware_id=self.hardware_id,
                                  values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._publisher.publish(array)


def seconds_to_time_msg(seconds):
    """Convert seconds (float) to builtin_interfaces/Time."""
    from builtin_interfaces.msg import Time
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def time_msg_to_ns(stamp):
    """Convert builtin_interfaces/Time to integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def run_node(node_factory, args=None):
    """Init rclpy, build the node with ``node_factory()``, spin until shutdown; return an exit code.

    A :class:`ParameterValidationError` (or other ValueError) raised while building the node, and a
    parameter the node does not declare (a misspelt name that ROS would silently ignore), are
    logged and give exit code 2. Ctrl-C, SIGTERM and external shutdown end the node cleanly with 0.

    Once the node spins, SIGINT and SIGTERM only ask it to stop: the callback that runs when the signal
    arrives finishes, then the node's ``close()`` runs. No exception is raised into the middle of a
    callback, so a bag message or an arm command is never left half written (rclpy's own handlers
    raise KeyboardInterrupt wherever the main thread happens to be). Before spinning, while the node is
    built, SIGINT and SIGTERM interrupt at once (KeyboardInterrupt).

    A node started by a launcher (``ECHO_GUIDANCE_SUPERVISOR_PID``, :mod:`echo_guidance.up.supervise`)
    refuses to start when the launcher is already gone (exit 3) and shuts itself down (SIGTERM to
    itself: the same clean path) as soon as it is orphaned.
    """
    import os
    import signal

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from echo_guidance.up.supervise import SupervisorWatch

    supervisor = SupervisorWatch()
    if supervisor.gone():
        print(f'[ERROR] cannot start: {supervisor.describe()}', file=sys.stderr, flush=True)
        return 3
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    stop = _StopRequest()
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            node = node_factory()
            check_no_unknown_parameters(node)
        except ValueError as err:
            print(f'[ERROR] cannot start: {err}', file=sys.stderr, flush=True)
            return 2

        def orphaned():
            print(f'[WARN] {supervisor.describe()}: shutting down', file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)

        supervisor.start_thread(orphaned)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        stop.spinning()
        while not stop.requested and rclpy.ok():
            # The timeout bounds how long a signal waits for its Python handler while nothing arrives.
            executor.spin_once(timeout_sec=SIGNAL_CHECK_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        # SIGINT/SIGTERM shut the rclpy context down while the executor was mid-wait; rclpy then
        # raises RuntimeError from the wait set instead of KeyboardInterrupt. Only swallow it then.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            close = getattr(node, 'close', None)
            if close is not None:
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


# Longest wait of the spinning node between looks at a stop request (a signal's Python handler runs
# when the executor's wait returns).
SIGNAL_CHECK_S = 0.1


class _StopRequest:
    """SIGINT/SIGTERM handler of :func:`run_node`: interrupt while the node is built, then ask it to stop."""

    def __init__(self):
        self.requested = False
        self._spinning = False

    def spinning(self):
        """From now on a signal only sets ``requested``: the spin loop ends between callbacks."""
        self._spinning = True

    def handle(self, signum, frame):
        if not self._spinning:
            raise KeyboardInterrupt
        self.requested = True
