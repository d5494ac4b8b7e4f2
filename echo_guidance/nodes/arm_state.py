"""Arm-state node: publish the probe pose in ``base`` (flange pose × calibration) at the arm's rate.

Backends (parameter ``backend``):

* ``franka_ros2``: subscribes to franka_ros2's best-effort convenience topics (``current_pose``,
  ``external_wrench_in_base_frame``);
* ``franky``: reads libfranka directly through franky-control (FR3, Panda, or ``franky-sim`` on
  loopback, which may also play a simulated motion);
* ``scripted``: plays the deterministic sinusoid trajectory on a 1 kHz grid (simulation, benchmarks).

Publishes ``/arm/probe_pose`` (geometry_msgs/PoseStamped, frame ``base``, metres; reliable,
keep-last 2000), ``/arm/probe_pose/decimated`` (the same messages, about ``decimated_pose_rate_hz``
of them a second, same QoS; see :class:`PoseDecimator`), ``/arm/wrench``
(geometry_msgs/WrenchStamped, base frame, best-effort) and ``/diagnostics`` (1 Hz). A NaN, non-rigid
or stale pose is never published; it is counted and the last reason is reported in diagnostics. The
flange → probe calibration comes from parameters (``config/arm_calibration.yaml``); the node refuses
to start without it.
"""

import math
import sys
import threading

from echo_guidance.arm.state import ArmSampleRejected

BACKENDS = ('franka_ros2', 'franky', 'scripted')
POSE_QOS_DEPTH = 2000
LEVEL_NAMES = ('OK', 'WARN', 'ERROR', 'STALE')
DECIMATED_POSE_TOPIC = '/arm/probe_pose/decimated'
"""Default topic of the decimated pose stream, for consumers that need the pose only at frame stamps."""
DECIMATED_POSE_RATE_HZ = 100.0
"""Default decimated rate: interpolating 10 ms apart errs well under 0.1 mm at hand-like probe speeds."""
DECIMATED_RATE_RANGE_HZ = (1.0, 1000.0)
STAMP_SLACK_NS = 1000
"""A stamp this close below a period boundary counts as on it: float seconds on a 1 ms grid round to a
few hundred ns off the grid, while no arm samples faster than every 100 µs."""


class PoseDecimator:
    """Choose the samples of the full-rate pose stream that also go to the decimated topic.

    A sample is kept when its stamp falls in a period of ``1 / rate_hz`` (counted from 0 on the ROS
    clock, in integer nanoseconds as the message carries it) that no kept sample fell in yet: the first
    sample at or after each multiple of the period. On a clean 1 kHz grid at 100 Hz that is every 10th
    sample, the ones on the 10 ms grid, so the decimated stamps stay on the arm's grid and its
    messages are identical to those of the full topic. A skipped or refused sample moves the pick to
    the next sample of that period instead of shifting every later pick, and an irregular stream
    (franky-sim, a best-effort franka_ros2 topic) still gives at most one sample per period.

    Args:
        rate_hz: decimated rate (Hz), in ``DECIMATED_RATE_RANGE_HZ``.

    Raises:
        ValueError: the rate is not a finite number in that range.
    """

    def __init__(self, rate_hz):
        """Check the rate and start with no period taken."""
        low, high = DECIMATED_RATE_RANGE_HZ
        if not (isinstance(rate_hz, (int, float)) and math.isfinite(rate_hz) and low <= rate_hz <= high):
            raise ValueError(
                f'decimated pose rate must be a number of Hz in [{low:g}, {high:g}], got {rate_hz!r}'
            )
        self.rate_hz = float(rate_hz)
        self.period_ns = int(round(1e9 / self.rate_hz))
        self._last_period = None

    def keep(self, stamp_ns):
        """Return True when the sample stamped ``stamp_ns`` (int ns) starts a new period."""
        period = (stamp_ns + STAMP_SLACK_NS) // self.period_ns
        if self._last_period is not None and period <= self._last_period:
            return False
        self._last_period = period
        return True


def check_decimated_topic(decimated_topic, pose_topic, rate_hz, stream_rate_hz=None, stream_name=''):
    """Refuse a decimated-pose set-up that would not thin the stream out; raise ValueError naming why.

    Args:
        decimated_topic: the decimated topic ('' = off: nothing to check).
        pose_topic: the full-rate topic; the two must differ.
        rate_hz: the decimated rate.
        stream_rate_hz: the full stream's nominal rate when known (scripted arm, arm_control's timer):
            the decimated rate must then be that rate divided by a whole number, so the picks are evenly
            spaced (every k-th sample).
        stream_name: the parameter holding ``stream_rate_hz``, for the message.
    """
    if not decimated_topic.strip():
        return
    if decimated_topic.strip() == pose_topic.strip():
        raise ValueError(
            f'decimated_pose_topic {decimated_topic!r} is pose_topic: give it its own name (or "" for none)'
        )
    if stream_rate_hz is None:
        return
    k = round(stream_rate_hz / rate_hz)
    if k < 1 or abs(k * rate_hz - stream_rate_hz) > 1e-6 * stream_rate_hz:
        examples = ', '.join(f'{stream_rate_hz / n:g}' for n in (1, 2, 5, 10) if stream_rate_hz / n >= 1)
        raise ValueError(
            f'decimated_pose_rate_hz = {rate_hz:g} Hz must be {stream_name} ({stream_rate_hz:g} Hz) divided '
            f'by a whole number, so that it keeps every k-th sample (e.g. {examples})'
        )


def _six_numbers_or_empty(value):
    if len(value) not in (0, 6):
        raise ValueError(f'needs 6 numbers (x, y, z mm, roll, pitch, yaw deg) or none, got {len(value)}')


def _moves(value):
    if len(value) % 6:
        raise ValueError(f'needs 6 numbers per move, got {len(value)} numbers')


def parameter_specs():
    """The node's parameters (besides the calibration), as ParamSpecs."""
    from echo_guidance.arm.backends import FRANKA_ROS2_POSE_TOPIC, FRANKA_ROS2_WRENCH_TOPIC
    from echo_guidance.nodes._common import ParamSpec

    spec = ParamSpec
    return [
        spec('backend', 'scripted', 'where poses come from', choices=BACKENDS, read_only=True),
        spec(
            'max_age_s', 0.1, 'a pose older than this when it arrives is stale and not published', 1e-3, 10.0
        ),
        spec('timeout_s', 0.5, 'no valid pose for this long is reported as STALE', 1e-3, 60.0),
        spec('pose_topic', '/arm/probe_pose', 'output: probe pose in base', read_only=True),
        spec(
            'decimated_pose_topic',
            DECIMATED_POSE_TOPIC,
            'output: the pose_topic messages thinned to decimated_pose_rate_hz (for the guidance and '
            'capture nodes); "" = off',
            read_only=True,
        ),
        spec(
            'decimated_pose_rate_hz',
            DECIMATED_POSE_RATE_HZ,
            'rate of decimated_pose_topic: the first sample of every 1/rate period (every k-th of a '
            'regular stream)',
            *DECIMATED_RATE_RANGE_HZ,
            read_only=True,
        ),
        spec('wrench_topic', '/arm/wrench', 'output: external wrench in base', read_only=True),
        spec('diagnostics_period_s', 1.0, 'diagnostics period', 0.05, 60.0, read_only=True),
        spec(
            'franka_ros2.pose_topic',
            FRANKA_ROS2_POSE_TOPIC,
            'franka_ros2 current_pose topic (best-effort)',
            read_only=True,
        ),
        spec(
            'franka_ros2.wrench_topic',
            FRANKA_ROS2_WRENCH_TOPIC,
            'franka_ros2 external wrench topic',
            read_only=True,
        ),
        spec('franka_ros2.wrench_max_age_s', 0.05, 'attach a wrench only this recent to a pose', 0.0, 10.0),
        spec(
            'franky.hostname',
            '127.0.0.1',
            'FCI address of the arm (127.0.0.1 for franky-sim)',
            read_only=True,
        ),
        spec('franky.realtime', False, 'enforce a realtime kernel (real arm control PC)', read_only=True),
        spec(
            'franky.sim_motion',
            [0.0],
            'simulated moves, 6 numbers each (x, y, z mm, roll, pitch, yaw deg); '
            '[0.0] = none; franky-sim on loopback only',
            check=lambda v: v == [0.0] or _moves(v),
            read_only=True,
        ),
        spec(
            'franky.sim_approach',
            [0.0],
            'simulated moves played once before sim_motion (6 numbers each); [0.0] = none',
            check=lambda v: v == [0.0] or _moves(v),
            read_only=True,
        ),
        spec(
            'franky.stamp_source',
            'robot_clock',
            "robot_clock (real arm) or receive_time (franky-sim, whose clock may lag real time)",
            choices=('robot_clock', 'receive_time'),
            read_only=True,
        ),
        spec('franky.dynamics_factor', 0.05, 'speed of the simulated moves', 0.001, 1.0, read_only=True),
        spec('franky.connect_timeout_s', 10.0, 'connection timeout', 0.1, 600.0, read_only=True),
        spec('scripted.rate_hz', 1000.0, 'trajectory sample rate', 1.0, 5000.0, read_only=True),
        spec(
            'scripted.max_lag_s',
            0.05,
            'an overloaded trajectory thread skips samples more than this late (keep it below max_age_s)',
            0.001,
            10.0,
            read_only=True,
        ),
        spec(
            'scripted.epoch_s',
            0.0,
            'trajectory time origin on the ROS clock (0 = start, whole seconds)',
            0.0,
            1e11,
            read_only=True,
        ),
        *[
            spec(
                f'scripted.{key}',
                [0.0],
                f'trajectory {key}: 6 numbers ([0.0] = built-in default)',
                check=lambda v: v == [0.0] or _six_numbers_or_empty(v),
                read_only=True,
            )
            for key in ('centre', 'amplitude', 'frequency_hz', 'phase_rad')
        ],
    ]


def main(args=None):
    """Run the arm-state node until shut down; return the exit status."""
    from geometry_msgs.msg import PoseStamped, WrenchStamped
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    from echo_guidance.arm.backends import FrankaRos2Adapter, FrankyArmBackend, ScriptedArmBackend
    from echo_guidance.arm.calibration import CalibrationError, calibration_from_node
    from echo_guidance.arm.state import ArmStateMonitor
    from echo_guidance.arm.trajectory import SinusoidTrajectory
    from echo_guidance.geometry import matrix_to_pose_msg
    from echo_guidance.nodes._common import (
        DiagnosticsPublisher,
        declare_parameters,
        run_node,
        seconds_to_time_msg,
    )

    class ArmStateNode(Node):
        """Publishes the probe pose from one arm backend."""

        def __init__(self):
            super().__init__('arm_state')
            self.context.on_shutdown(shutdown_requested.set)
            params = declare_parameters(self, parameter_specs())
            try:
                self.calibration = calibration_from_node(self)
            except CalibrationError as error:
                raise ValueError(str(error)) from error
            self.monitor = ArmStateMonitor(
                self.calibration, max_age_s=params['max_age_s'], timeout_s=params['timeout_s']
            )
            pose_qos = QoSProfile(
                depth=POSE_QOS_DEPTH,
                history=HistoryPolicy.KEEP_LAST,
                reliability=ReliabilityPolicy.RELIABLE,
            )
            self.pose_pub = self.create_publisher(PoseStamped, params['pose_topic'], pose_qos)
            self.decimated_pub, self.decimator = None, None
            decimated_topic = params['decimated_pose_topic'].strip()
            check_decimated_topic(
                decimated_topic,
                params['pose_topic'],
                params['decimated_pose_rate_hz'],
                params['scripted.rate_hz'] if params['backend'] == 'scripted' else None,
                'scripted.rate_hz',
            )
            if decimated_topic:
                self.decimator = PoseDecimator(params['decimated_pose_rate_hz'])
                self.decimated_pub = self.create_publisher(PoseStamped, decimated_topic, pose_qos)
            self.published_decimated = 0
            self.wrench_pub = self.create_publisher(
                WrenchStamped, params['wrench_topic'], qos_profile_sensor_data
            )
            self.published = 0
            self._rejection_logged_at = -math.inf
            self._lock = threading.Lock()
            self.backend = None
            backend = params['backend']
            if backend == 'franka_ros2':
                self.adapter = FrankaRos2Adapter(params['franka_ros2.wrench_max_age_s'])
                # franka_ros2's convenience topics are best-effort: a reliable subscriber gets nothing.
                best_effort = QoSProfile(
                    depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT
                )
                self.create_subscription(
                    PoseStamped, params['franka_ros2.pose_topic'], self._on_franka_pose, best_effort
                )
                self.create_subscription(
                    WrenchStamped, params['franka_ros2.wrench_topic'], self._on_franka_wrench, best_effort
                )
                self.description = (
                    f'franka_ros2 topics {params["franka_ros2.pose_topic"]}, '
                    f'{params["franka_ros2.wrench_topic"]}'
                )
            elif backend == 'franky':
                def moves(name):
                    flat = params[name]
                    return None if flat == [0.0] else [flat[i : i + 6] for i in range(0, len(flat), 6)]

                self.backend = FrankyArmBackend(
                    params['franky.hostname'],
                    self._now_s,
                    realtime=params['franky.realtime'],
                    sim_motion=moves('franky.sim_motion'),
                    sim_approach=moves('franky.sim_approach'),
                    dynamics_factor=params['franky.dynamics_factor'],
                    connect_timeout_s=params['franky.connect_timeout_s'],
                    stamp_source=params['franky.stamp_source'],
                )
            else:
                epoch = params['scripted.epoch_s'] or float(math.floor(self._now_s()))
                config = {
                    key: params[f'scripted.{key}']
                    for key in ('centre', 'amplitude', 'frequency_hz', 'phase_rad')
                    if params[f'scripted.{key}'] != [0.0]
                }
                self.backend = ScriptedArmBackend(
                    SinusoidTrajectory.from_config(config, epoch_s=epoch),
                    self._now_s,
                    rate_hz=params['scripted.rate_hz'],
                    max_lag_s=params['scripted.max_lag_s'],
                )
            if self.backend is not None:
                self.description = self.backend.describe()
                # rclpy shuts the context down on SIGINT before close() runs: stop publishing then.
                self.context.on_shutdown(self.backend.request_stop)
                self.backend.start(self._on_sample, self._on_backend_error)
            self.diagnostics = DiagnosticsPublisher(
                self,
                'echo_guidance: arm_state',
                self.description,
                self._diagnostics,
                params['diagnostics_period_s'],
            )
            decimated = (
                f' and {decimated_topic} at {self.decimator.rate_hz:g} Hz' if self.decimator else ''
            )
            self.get_logger().info(
                f'arm state from {self.description}; {self.calibration.describe()}; '
                f'publishing {params["pose_topic"]}{decimated}'
            )

        def _now_s(self):
            return self.get_clock().now().nanoseconds * 1e-9

        def _on_sample(self, sample):
            """Check, convert and publish one sample (called from a backend thread or a callback)."""
            now = self._now_s()
            with self._lock:
                try:
                    T_probe = self.monitor.accept(sample, now)
                except ArmSampleRejected as rejection:
                    if now - self._rejection_logged_at > 1.0:
                        self._rejection_logged_at = now
                        self.get_logger().warning(f'arm pose not published: {rejection}')
                    return
            msg = PoseStamped()
            msg.header.stamp = seconds_to_time_msg(sample.stamp_s)
            msg.header.frame_id = 'base'
            msg.pose = matrix_to_pose_msg(T_probe)
            self.pose_pub.publish(msg)
            self.published += 1
            stamp = msg.header.stamp
            if self.decimator is not None and self.decimator.keep(stamp.sec * 1_000_000_000 + stamp.nanosec):
                self.decimated_pub.publish(msg)
                self.published_decimated += 1
            if sample.wrench is not None:
                wrench = WrenchStamped()
                wrench.header = msg.header
                force, torque = wrench.wrench.force, wrench.wrench.torque
                force.x, force.y, force.z, torque.x, torque.y, torque.z = (float(v) for v in sample.wrench)
                self.wrench_pub.publish(wrench)

        def _on_backend_error(self, message):
            if not self.context.ok():
                return  # the node is shutting down; a publish racing the shutdown is no fault
            self.monitor.backend_error = message
            self.get_logger().error(f'arm backend failed: {message}')

        def _on_franka_pose(self, msg):
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            p, q = msg.pose.position, msg.pose.orientation
            try:
                sample = self.adapter.on_pose(stamp, (p.x, p.y, p.z), (q.x, q.y, q.z, q.w), self._now_s())
            except ArmSampleRejected as rejection:
                with self._lock:
                    self.monitor.rejected[rejection.reason] += 1
                    self.monitor.last_rejection = str(rejection)
                self.get_logger().warning(f'arm pose not published: {rejection}', throttle_duration_sec=1.0)
                return
            self._on_sample(sample)

        def _on_franka_wrench(self, msg):
            f, t = msg.wrench.force, msg.wrench.torque
            self.adapter.on_wrench(
                msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, (f.x, f.y, f.z), (t.x, t.y, t.z)
            )

        def _diagnostics(self):
            with self._lock:
                level, message, values = self.monitor.diagnostics(self._now_s())
            values['published'] = str(self.published)
            if self.decimator is not None:
                values['published_decimated'] = str(self.published_decimated)
            backend = self.backend
            if backend is not None:
                values['backend_samples'] = str(backend.samples_produced)
                skipped = getattr(backend, 'samples_skipped', 0)
                values['backend_samples_skipped'] = str(skipped)
                if skipped:
                    level = max(level, 1)
                    message += f'; {skipped} trajectory samples skipped (machine overloaded)'
                if getattr(backend, 'motion_error', ''):
                    values['motion_error'] = backend.motion_error
                if hasattr(backend, 'trajectory'):
                    values['trajectory_epoch_s'] = repr(backend.trajectory.epoch_s)
            return LEVEL_NAMES[level], message, values

        def close(self):
            """Stop the backend thread."""
            if self.backend is not None:
                self.backend.stop()

    shutdown_requested = threading.Event()
    try:
        return run_node(ArmStateNode, args=args)
    except RuntimeError as error:
        # rclpy can fail to take a message that arrives while SIGINT shuts the context down; the
        # node has closed cleanly by then (run_node's finally), so that is a normal exit.
        if shutdown_requested.is_set():
            print(f'arm_state: ignored an error raised during shutdown: {error}', file=sys.stderr)
            return 0
        raise


if __name__ == '__main__':
    sys.exit(main())
