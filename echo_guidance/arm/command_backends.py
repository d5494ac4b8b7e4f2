"""Command backends for real arms: libfranka through franky, and ros2_control / franka_ros2 topics.

* :class:`FrankyCommandBackend`: owns the libfranka connection (an arm accepts one client; the
  arm-control node then also publishes the probe pose). A thread reads the robot state (~1 kHz);
  each envelope command becomes an absolute ``CartesianMotion`` of the flange, started
  asynchronously so that the next command preempts it. franky's own Cartesian velocity and
  acceleration limits are set to the envelope's (defence in depth). Works against ``franky-sim``.
* :class:`Ros2CartesianBackend`: for ros2_control / franka_ros2. The node feeds it the probe pose
  and wrench from topics; commands go out as ``geometry_msgs/PoseStamped`` targets (flange or probe
  pose, metres) through a publish callback, for a Cartesian pose controller that interpolates them.
  Hold and stop publish the measured pose as the target.

Both convert probe ↔ flange poses with the flange → probe calibration.
"""

import threading
import time

import numpy as np
from scipy.spatial.transform import Rotation

from echo_guidance.arm.backends import RobotClockMapper, is_loopback_host
from echo_guidance.arm.interface import ArmState, CommandBackend
from echo_guidance.geometry import action_to_matrix

COMMAND_FRAMES = ('flange', 'probe')


class FrankyCommandBackend(CommandBackend):
    """Command a Franka arm (FR3, Panda) or franky-sim through franky-control.

    Args:
        hostname: FCI address (the loopback address franky-sim prints in simulation).
        calibration: :class:`~echo_guidance.arm.calibration.FlangeToProbeCalibration`.
        limits: :class:`~echo_guidance.control.limits.SafetyLimits` (franky's Cartesian limits follow it).
        clock: the controller's clock, seconds (states are stamped with it).
        realtime: enforce a realtime kernel (True on a real arm's control PC).
        stamp_source: 'robot_clock' (real arm) or 'receive_time' (franky-sim, whose clock lags when busy).
        connect_timeout_s: give up connecting after this long.
        force_threshold_n: libfranka's collision threshold (the arm's own reflex, above the envelope's limit).
        sim_approach: relative flange moves (6-D actions, mm and degrees) played once after connecting,
            before any state is reported, to bring a simulated arm from its home pose to the patient.
            Only allowed against a simulator on loopback.
    """

    name = 'franky'

    def __init__(
        self,
        hostname,
        calibration,
        limits,
        clock=time.monotonic,
        realtime=False,
        stamp_source='receive_time',
        connect_timeout_s=10.0,
        force_threshold_n=40.0,
        sim_approach=None,
    ):
        """Check the options; nothing connects before :meth:`start`."""
        if not hostname:
            raise ValueError('the franky backend needs the FCI hostname, got an empty string')
        if stamp_source not in ('robot_clock', 'receive_time'):
            raise ValueError(f"stamp_source must be 'robot_clock' or 'receive_time', got {stamp_source!r}")
        self.hostname = hostname
        self.calibration = calibration
        self.limits = limits
        self.clock = clock
        self.realtime = bool(realtime)
        self.stamp_source = stamp_source
        self.connect_timeout_s = float(connect_timeout_s)
        self.force_threshold_n = float(force_threshold_n)
        self.sim_approach = [np.asarray(m, dtype=float) for m in (sim_approach or [])]
        if any(m.shape != (6,) or not np.all(np.isfinite(m)) for m in self.sim_approach):
            raise ValueError('sim_approach must be a list of 6-D moves (x, y, z mm, roll, pitch, yaw deg)')
        if self.sim_approach and not is_loopback_host(hostname):
            raise ValueError(
                f'sim_approach is only allowed against a simulator on loopback, not {hostname!r}'
            )
        self.robot = None
        self._state = None
        self._errors = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._clock_mapper = RobotClockMapper()
        self.connected = threading.Event()

    def start(self):
        """Connect and start the state thread (connection errors become arm errors)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name='franky-command', daemon=True)
            self._thread.start()

    def _connect(self):
        import franky

        config = franky.RealtimeConfig.Enforce if self.realtime else franky.RealtimeConfig.Ignore
        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            try:
                robot = franky.Robot(self.hostname, realtime_config=config)
                break
            except Exception as error:  # franky raises several exception types
                if time.monotonic() > deadline or self._stop.is_set():
                    raise ConnectionError(
                        f'cannot connect to the Franka arm at {self.hostname!r} within '
                        f'{self.connect_timeout_s:.1f} s: {error}'
                    ) from error
                time.sleep(0.2)
        for move in self.sim_approach:
            T = action_to_matrix(move)
            affine = franky.Affine(T[:3, 3] / 1000.0, Rotation.from_matrix(T[:3, :3]).as_quat())
            robot.move(
                franky.CartesianMotion(affine, franky.ReferenceType.Relative, relative_dynamics_factor=0.1)
            )
        lim = self.limits
        robot.relative_dynamics_factor = 1.0
        robot.translation_velocity_limit.set(lim.max_linear_speed_mm_s / 1000.0)
        robot.rotation_velocity_limit.set(np.radians(lim.max_angular_speed_deg_s))
        robot.translation_acceleration_limit.set(lim.max_linear_acceleration_mm_s2 / 1000.0)
        robot.rotation_acceleration_limit.set(np.radians(lim.max_angular_acceleration_deg_s2))
        if not is_loopback_host(self.hostname):
            threshold = [self.force_threshold_n] * 6
            robot.set_collision_behavior([20.0] * 7, threshold)
        return robot

    def _run(self):
        try:
            self.robot = self._connect()
        except Exception as error:  # noqa: BLE001 - reported as an arm error, the envelope stops
            with self._lock:
                self._errors = [f'connection failed: {error}']
            return
        self.connected.set()
        last_ms = None
        while not self._stop.is_set():
            try:
                state = self.robot.state
            except Exception as error:  # noqa: BLE001
                with self._lock:
                    self._errors = [f'state read failed: {type(error).__name__}: {error}']
                time.sleep(0.01)
                continue
            robot_ms = state.time.to_msec()
            if robot_ms == last_ms:
                time.sleep(0.0002)
                continue
            last_ms = robot_ms
            now = self.clock()
            stamp = (
                self._clock_mapper.to_ros_time(robot_ms / 1000.0, now)
                if self.stamp_source == 'robot_clock'
                else now
            )
            T_flange = np.array(state.O_T_EE.matrix, dtype=float)
            T_flange[:3, 3] *= 1000.0
            wrench = np.asarray(state.O_F_ext_hat_K, dtype=float).reshape(-1)
            errors = []
            try:
                if self.robot.has_errors:
                    errors.append(f'robot errors: {state.current_errors}')
            except Exception:  # noqa: BLE001 - some states lack the field in simulation
                pass
            with self._lock:
                motion_errors = [e for e in self._errors if e.startswith('motion')]
                self._errors = errors + motion_errors
                self._state = ArmState(
                    stamp_s=stamp,
                    pose_mm=self.calibration.probe_pose(T_flange),
                    wrench=wrench,
                    wrench_stamp_s=stamp,
                    errors=tuple(self._errors),
                )

    def state(self):
        """The latest state, or None before the first one (or after a failed connection)."""
        with self._lock:
            if self._state is None and self._errors:
                return None
            return self._state

    def connection_error(self):
        """The connection error, if connecting failed."""
        with self._lock:
            return next((e for e in self._errors if e.startswith('connection')), '')

    def send(self, command):
        """Start an absolute Cartesian motion of the flange to the command's target."""
        import franky

        if self.robot is None:
            raise RuntimeError('franky backend is not connected')
        T = self.calibration.flange_pose(command.target_pose_mm)
        affine = franky.Affine(T[:3, 3] / 1000.0, Rotation.from_matrix(T[:3, :3]).as_quat())
        try:
            self.robot.poll_motion()  # raises the previous motion's error, if any
        except Exception as error:
            with self._lock:
                self._errors.append(f'motion failed: {type(error).__name__}: {error}')
            raise
        self.robot.move(franky.CartesianMotion(affine, franky.ReferenceType.Absolute), asynchronous=True)

    def hold(self):
        """Stop the running motion (franky decelerates within its limits)."""
        self.stop()

    def stop(self):
        """Stop every motion."""
        if self.robot is not None:
            self.robot.stop()

    def recover(self):
        """Run libfranka's automatic error recovery."""
        if self.robot is None:
            return False
        ok = bool(self.robot.recover_from_errors())
        if ok:
            with self._lock:
                self._errors = []
        return ok

    def close(self):
        """Stop the motion and the state thread."""
        self._stop.set()
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        if self._thread is not None:
            self._thread.join(3.0)

    def describe(self):
        """One line for logs."""
        return f'franky/libfranka at {self.hostname}'


class Ros2CartesianBackend(CommandBackend):
    """ros2_control / franka_ros2 over standard messages; the node does the ROS side.

    Args:
        publish: ``publish(T_mm, frame)`` sends a Cartesian target (4×4 mm; ``frame`` is
            'flange' or 'probe') as a PoseStamped.
        calibration: :class:`~echo_guidance.arm.calibration.FlangeToProbeCalibration`.
        command_frame: 'flange' (the ros2_control Cartesian pose interface moves the flange) or 'probe'.
    """

    name = 'ros2_control'

    def __init__(self, publish, calibration, command_frame='flange'):
        """Start without a state."""
        if command_frame not in COMMAND_FRAMES:
            raise ValueError(f'command_frame must be one of {COMMAND_FRAMES}, got {command_frame!r}')
        self.publish = publish
        self.calibration = calibration
        self.command_frame = command_frame
        self._lock = threading.Lock()
        self._pose = None
        self._pose_stamp = None
        self._wrench = None
        self._wrench_stamp = None
        self.errors = []
        self.sent = 0

    def on_pose(self, stamp_s, probe_pose_mm):
        """Remember the measured probe pose (from /arm/probe_pose)."""
        with self._lock:
            self._pose, self._pose_stamp = np.array(probe_pose_mm, dtype=float), float(stamp_s)

    def on_wrench(self, stamp_s, wrench):
        """Remember the external wrench (from /arm/wrench)."""
        with self._lock:
            self._wrench, self._wrench_stamp = np.asarray(wrench, dtype=float), float(stamp_s)

    def state(self):
        """The latest pose and wrench, or None before the first pose."""
        with self._lock:
            if self._pose is None:
                return None
            return ArmState(
                self._pose_stamp, self._pose.copy(), self._wrench, self._wrench_stamp, tuple(self.errors)
            )

    def _target(self, probe_pose_mm):
        if self.command_frame == 'flange':
            return self.calibration.flange_pose(probe_pose_mm)
        return np.array(probe_pose_mm, dtype=float)

    def send(self, command):
        """Publish the command's target."""
        self.publish(self._target(command.target_pose_mm), self.command_frame)
        self.sent += 1

    def hold(self):
        """Publish the measured pose as the target."""
        state = self.state()
        if state is not None:
            self.publish(self._target(state.pose_mm), self.command_frame)

    def stop(self):
        """Publish the measured pose as the target (the controller stops there)."""
        self.hold()

    def describe(self):
        """One line for logs."""
        return f'ros2_control Cartesian {self.command_frame} pose targets'
