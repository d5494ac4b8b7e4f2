"""Run the demo graph once: start the profile's nodes, record, watch the controller, stop.

The graph is a profile (``config/profiles/demo_sim.yaml``) started with the same code as
``echo-guidance up`` (:class:`echo_guidance.recording.launcher.ProfileRun`, checked first with
:func:`echo_guidance.up.graph.check_profile`). The project's recorder node writes the demonstration
bag (frames, probe poses, synced poses, pedal events, wrench; docs/bag-format.md), started and
stopped through its services. The demonstration bag format has no channel for guidance or the
controller's state, so this process records those two topics into a second rosbag2 bag beside it
(written with the rosbags library, MCAP storage, CDR as received); rosbags' ``AnyReader`` reads the
two bags as one.
"""

import dataclasses
import json
import re
import socket
import threading
import time
from pathlib import Path

from echo_guidance.demo.summary import StateRecord, plane_reached_held

GUIDANCE_TOPIC = '/guidance'
STATE_TOPIC = '/arm_control/state'
CONTROL_BAG_NAME = 'guidance_control'
GUIDANCE_TYPE = 'echo_guidance/msg/Guidance'
STATE_TYPE = 'std_msgs/msg/String'
DISPLAY_URL = re.compile(r'display serving (?P<url>http://\S+)')


class DemoSetupError(RuntimeError):
    """The demo graph could not be brought up or kept running (names the node and why)."""


class DemoInterrupted(RuntimeError):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) ended the run; the graph was stopped in order.

    Attributes:
        record: the RunRecord so far (bags, exit statuses, cut-off bags).
        exit_status: 128 + the signal number.
    """

    def __init__(self, message, record, exit_status):
        """Keep the record and the exit status."""
        super().__init__(message)
        self.record = record
        self.exit_status = exit_status


@dataclasses.dataclass
class RunRecord:
    """What one run produced: bag paths, controller states, the page URL, the model id and node exits."""

    run_dir: Path
    demonstration_bag: Path = None
    control_bag: Path = None
    states: list = dataclasses.field(default_factory=list)
    display_url: str = ''
    model_id: str = ''
    guidance_messages: int = 0
    guidance_valid: int = 0
    stop_reason: str = ''
    exit_statuses: dict = dataclasses.field(default_factory=dict)
    wall_s: float = 0.0
    cut_off_bags: list = dataclasses.field(default_factory=list)


def free_display_port(preferred=8765, host='127.0.0.1'):
    """``preferred`` when nothing listens there, else 0 (the display then picks a free port and logs it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, int(preferred)))
        except OSError:
            return 0
    return int(preferred)


def state_record(text):
    """A :class:`StateRecord` from the JSON of an ``/arm_control/state`` message; None when malformed."""
    try:
        data = json.loads(text)
        return StateRecord(
            float(data['stamp']),
            str(data['state']),
            str(data.get('verdict', '')),
            str(data.get('reason', '')),
            str(data.get('detail', '')),
        )
    except (ValueError, KeyError, TypeError):
        return None


class ControlBagWriter:
    """Writes serialised ``/guidance`` and ``/arm_control/state`` messages into a rosbag2 (MCAP) bag."""

    def __init__(self, path):
        """Create the bag at ``path`` (must not exist) with one connection per topic."""
        from rosbags.rosbag2 import StoragePlugin, Writer

        from echo_guidance.bags._metadata import default_qos
        from echo_guidance.bags.schema import get_typestore

        store = get_typestore()
        self.path = Path(path)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections = {
            topic: self._writer.add_connection(
                topic, msgtype, typestore=store, offered_qos_profiles=default_qos(topic)  # reliable
            )
            for topic, msgtype in ((GUIDANCE_TOPIC, GUIDANCE_TYPE), (STATE_TOPIC, STATE_TYPE))
        }
        self._last_ns = 0
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(self._connections, 0)
        self.closed = False

    def write(self, topic, log_time_ns, data):
        """Append one CDR-serialised message; log times are kept strictly increasing."""
        with self._lock:
            if self.closed:
                return
            log_time_ns = max(int(log_time_ns), self._last_ns + 1)
            self._writer.write(self._connections[topic], log_time_ns, bytes(data))
            self._last_ns = log_time_ns
            self.counts[topic] += 1

    def close(self):
        """Finish the bag (summary, metadata.yaml). Idempotent."""
        with self._lock:
            if not self.closed:
                self.closed = True
                self._writer.close()


class DemoMonitor:
    """The demo's own ROS side: records guidance and controller state, calls the recorder's services.

    Args:
        control_bag: a :class:`ControlBagWriter`.
        context: an initialised rclpy Context (this process's ROS domain).
    """

    def __init__(self, control_bag, context):
        """Create the node, its subscriptions and service clients, and spin it in a thread."""
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.serialization import serialize_message
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        from echo_guidance.msg import Guidance

        self._serialize = serialize_message
        self.bag = control_bag
        self.states = []
        self.model_id = ''
        self.guidance_messages = 0
        self.guidance_valid = 0
        self.recording = True
        self._lock = threading.Lock()
        import rclpy

        self.node = rclpy.create_node('demo_monitor', context=context)
        reliable = QoSProfile(
            depth=50,
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.VOLATILE,
        )
        self.node.create_subscription(Guidance, GUIDANCE_TOPIC, self._on_guidance, reliable)
        self.node.create_subscription(String, STATE_TOPIC, self._on_state, reliable)
        self.start_client = self.node.create_client(Trigger, '/recorder/start')
        self.stop_client = self.node.create_client(Trigger, '/recorder/stop')
        self._trigger = Trigger
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name='demo-monitor', daemon=True)
        self._thread.start()

    def _spin(self):
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except (ExternalShutdownException, RuntimeError):
            pass

    def _now_ns(self):
        return self.node.get_clock().now().nanoseconds

    def stop_recording(self):
        """Record nothing more from here on.

        What follows the stop decision is the graph shutting down (nodes that exit one after
        another make the controller report node_dead faults), not the run.
        """
        with self._lock:
            self.recording = False

    def _on_guidance(self, msg):
        if not self.recording:
            return
        self.bag.write(GUIDANCE_TOPIC, self._now_ns(), self._serialize(msg))
        with self._lock:
            self.guidance_messages += 1
            self.guidance_valid += bool(msg.valid)
            if msg.model_id:
                self.model_id = msg.model_id

    def _on_state(self, msg):
        if not self.recording:
            return
        self.bag.write(STATE_TOPIC, self._now_ns(), self._serialize(msg))
        record = state_record(msg.data)
        if record is not None:
            with self._lock:
                self.states.append(record)

    def snapshot(self):
        """A copy of the controller states received so far."""
        with self._lock:
            return list(self.states)

    def call(self, client, timeout_s, still_running=None):
        """Call a Trigger service; return (success, message). ``still_running()`` may raise to abort."""
        deadline = time.monotonic() + timeout_s
        while not client.service_is_ready():
            if still_running is not None:
                still_running()
            if time.monotonic() > deadline:
                return False, f'service {client.srv_name} did not appear within {timeout_s:.0f} s'
            time.sleep(0.1)
        future = client.call_async(self._trigger.Request())
        while not future.done():
            if still_running is not None:
                still_running()
            if time.monotonic() > deadline:
                return False, f'service {client.srv_name} did not answer within {timeout_s:.0f} s'
            time.sleep(0.05)
        response = future.result()
        return bool(response.success), response.message

    def close(self):
        """Stop spinning and destroy the node (the bag is closed by its owner)."""
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=3.0)
        self.node.destroy_node()


def _say(text):
    print(f'demo: {text}', flush=True)


def run_graph(profile, values, run_dir, duration_s, hold_s=1.0, overrides=None, env=None, say=_say):
    """Start the profile, record, stop when the plane is reached and held or the time is up.

    Args:
        profile: the demo profile (RecordProfile) to run.
        values: placeholder values (model, target_plane, display_port, output_dir, config_dir).
        run_dir: the run's folder (bags, logs).
        duration_s: stop after this many seconds from the start of the graph.
        hold_s: stop early once the controller has reported plane_reached for this long.
        overrides: per-node parameter overrides (recorder session fields).
        env: environment of the node processes (ROS domain).
        say: progress printer.

    Returns:
        RunRecord.

    Raises:
        DemoSetupError: a node exited during the run, or the recorder could not start.
        DemoInterrupted: SIGINT, SIGTERM or SIGHUP; the graph was stopped (arm control first) and
            the bags closed (a recorder that had to be killed leaves its bag in ``cut_off_bags``).
    """
    from echo_guidance.up.supervise import StopSignals

    with StopSignals():
        return _run_graph(profile, values, run_dir, duration_s, hold_s, overrides, env, say)


def _run_graph(profile, values, run_dir, duration_s, hold_s, overrides, env, say):
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from echo_guidance.recording.launcher import LaunchError, ProfileRun
    from echo_guidance.up.supervise import StopSignals

    run_dir = Path(run_dir)
    record = RunRecord(run_dir=run_dir)
    started = time.monotonic()
    launch = ProfileRun(profile, run_dir / 'logs', values=values, overrides=overrides, env=env)
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    control_bag = monitor = None
    failure = None
    try:
        try:
            launch.start()
        except LaunchError as error:
            raise DemoSetupError(str(error)) from None
        say(
            f'started {len(launch.processes)} nodes (logs in {run_dir / "logs"}): '
            + ', '.join(f'{p.name} (pid {p.pid})' for p in launch.processes)
        )
        record.control_bag = run_dir / CONTROL_BAG_NAME
        control_bag = ControlBagWriter(record.control_bag)
        monitor = DemoMonitor(control_bag, context)

        def check():
            try:
                launch.check_running()
            except LaunchError as error:
                raise DemoSetupError(f'a node died during the run: {error}') from None

        ok, message = monitor.call(monitor.start_client, 60.0, check)
        if not ok:
            raise DemoSetupError(f'the recorder did not start a bag: {message}')
        record.demonstration_bag = Path(message)
        say(f'recording to {record.demonstration_bag}')
        say(
            'waiting for the simulated pedal to press the deadman (scripted: 8 s after the pedal node '
            'starts, again at 21 s) and for the arm to reach the plane ...'
        )
        deadline = started + duration_s
        seen = 0
        while True:
            check()
            if not record.display_url:
                try:
                    found = DISPLAY_URL.search(launch['display'].output())
                except KeyError:
                    found = None
                if found:
                    record.display_url = found.group('url')
                    say(f"sonographer's page: {record.display_url}")
            states = monitor.snapshot()
            for state in states[seen:]:
                previous = states[seen - 1].state if seen else None
                if state.state != previous:
                    why = ' '.join(t for t in (state.verdict, state.reason, state.detail) if t)
                    say(
                        f'[{time.monotonic() - started:5.1f} s] controller {previous or "-"} -> {state.state}'
                        + (f' ({why})' if why else '')
                    )
                seen += 1
            if plane_reached_held(states, hold_s):
                record.stop_reason = f'plane_reached held for {hold_s:g} s'
                break
            if time.monotonic() >= deadline:
                record.stop_reason = f'time limit ({duration_s:g} s) reached'
                break
            time.sleep(0.1)
        say(f'stopping: {record.stop_reason}')
        monitor.stop_recording()
        ok, message = monitor.call(monitor.stop_client, 20.0, check)
        if not ok:
            raise DemoSetupError(f'the recorder did not close its bag: {message}')
    except DemoSetupError as error:
        failure = error
    except KeyboardInterrupt as stop:
        name = getattr(stop, 'name', 'SIGINT')
        say(f'{name} received: stopping the graph (arm control first)')
        failure = DemoInterrupted(f'stopped by {name}', record, getattr(stop, 'exit_status', 130))
    finally:
        with StopSignals.holding():  # a signal now must not cut the stop short
            if monitor is not None:
                monitor.stop_recording()
                record.states = monitor.snapshot()
                record.model_id = monitor.model_id
                record.guidance_messages = monitor.guidance_messages
                record.guidance_valid = monitor.guidance_valid
            record.exit_statuses = launch.stop()
            if monitor is not None:
                monitor.close()
            if control_bag is not None:
                control_bag.close()
            rclpy.shutdown(context=context)
            record.cut_off_bags = launch.cut_off_bags()
            record.wall_s = time.monotonic() - started
    if failure is not None:
        raise failure
    return record
