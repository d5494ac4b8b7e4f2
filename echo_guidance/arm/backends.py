"""Arm backends: where flange poses come from.

* :class:`FrankaRos2Adapter`: franka_ros2's convenience topics (``current_pose``,
  ``external_wrench_in_base_frame``; best-effort QoS). The arm-state node owns the subscriptions
  and hands each message's numbers to the adapter, which turns them into :class:`ArmSample`.
* :class:`FrankyArmBackend`: libfranka directly through ``franky`` (franky-control). It serves FR3
  and the Panda arms that franka_ros2 no longer supports, and the MuJoCo simulator ``franky-sim``
  that speaks the same network protocol on loopback. A thread reads the robot state (~1 kHz),
  maps the robot's clock onto the ROS clock and hands out samples.
* :class:`ScriptedArmBackend`: samples a :class:`~echo_guidance.arm.trajectory.SinusoidTrajectory`
  on an exact time grid (1 kHz by default); deterministic ground truth for tests and benchmarks.

Backends with a thread call ``on_sample(ArmSample)`` from it and ``on_error(str)`` when they fail;
they never publish anything themselves.
"""

import abc
import collections
import ipaddress
import math
import socket
import threading
import time

import numpy as np
from scipy.spatial.transform import Rotation

from echo_guidance.arm.state import ArmSample, ArmSampleRejected
from echo_guidance.arm.trajectory import action_matrix

FRANKA_ROS2_POSE_TOPIC = '/franka_robot_state_broadcaster/current_pose'
STAMP_SOURCES = ('robot_clock', 'receive_time')
FRANKA_ROS2_WRENCH_TOPIC = '/franka_robot_state_broadcaster/external_wrench_in_base_frame'


def pose_matrix_mm(position_m, quaternion_xyzw):
    """4×4 transform (mm) from a position in metres and a quaternion (x, y, z, w).

    Raises:
        ArmSampleRejected: NaN/inf values ('nan') or a quaternion whose norm is not 1 within 1e-3
            ('not_rigid').
    """
    position = np.asarray(position_m, dtype=float)
    quaternion = np.asarray(quaternion_xyzw, dtype=float)
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quaternion))):
        raise ArmSampleRejected(
            'nan', f'pose has NaN/inf values: position {position.tolist()}, quaternion {quaternion.tolist()}'
        )
    norm = float(np.linalg.norm(quaternion))
    if abs(norm - 1.0) > 1e-3:
        raise ArmSampleRejected(
            'not_rigid', f'pose quaternion has norm {norm:.6f}, expected a unit quaternion'
        )
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(quaternion / norm).as_matrix()
    T[:3, 3] = position * 1000.0
    return T


class FrankaRos2Adapter:
    """Turn franka_ros2 convenience-topic messages (as plain numbers) into arm samples.

    Args:
        wrench_max_age_s: a wrench older than this relative to a pose is not attached to it.
    """

    def __init__(self, wrench_max_age_s=0.05):
        """Start without a wrench."""
        self.wrench_max_age_s = float(wrench_max_age_s)
        self._wrench = None
        self._wrench_stamp_s = None

    def on_wrench(self, stamp_s, force, torque):
        """Remember the latest external wrench (base frame, N and N·m)."""
        self._wrench = np.concatenate([np.asarray(force, dtype=float), np.asarray(torque, dtype=float)])
        self._wrench_stamp_s = float(stamp_s)

    def on_pose(self, stamp_s, position_m, quaternion_xyzw, receive_time_s):
        """Return the ArmSample of one ``current_pose`` message (flange = O_T_EE).

        A zero header stamp (an unstamped publisher) falls back to the receive time.

        Raises:
            ArmSampleRejected: NaN or malformed pose.
        """
        stamp = float(stamp_s) if stamp_s > 0 else float(receive_time_s)
        T = pose_matrix_mm(position_m, quaternion_xyzw)
        wrench = None
        if self._wrench is not None and abs(stamp - self._wrench_stamp_s) <= self.wrench_max_age_s:
            wrench = self._wrench
        return ArmSample(stamp_s=stamp, T_base_flange_mm=T, wrench=wrench)


class ThreadedArmBackend(abc.ABC):
    """A backend that produces samples from its own thread.

    Args:
        clock: function returning the current ROS time in seconds.
    """

    name = 'abstract'

    def __init__(self, clock):
        """Prepare the thread; nothing runs until :meth:`start`."""
        self.clock = clock
        self._stop = threading.Event()
        self._thread = None
        self.samples_produced = 0

    def start(self, on_sample, on_error):
        """Start producing: ``on_sample(ArmSample)`` per sample, ``on_error(message)`` on failure."""
        if self._thread is not None:
            raise RuntimeError(f'{self.name} backend already started')
        self._thread = threading.Thread(
            target=self._run_guarded, args=(on_sample, on_error), name=f'arm-{self.name}', daemon=True
        )
        self._thread.start()

    def _run_guarded(self, on_sample, on_error):
        try:
            self.run(on_sample)
        except Exception as error:  # noqa: BLE001 - any backend failure must reach diagnostics
            on_error(f'{type(error).__name__}: {error}')

    @abc.abstractmethod
    def run(self, on_sample):
        """Produce samples until :attr:`stopping` is set (runs in the backend thread)."""

    @property
    def stopping(self):
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    def request_stop(self):
        """Ask the thread to end without waiting (safe from any thread or callback)."""
        self._stop.set()

    def stop(self, timeout_s=2.0):
        """Ask the thread to end and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def describe(self):
        """One line for logs and session metadata."""
        return self.name


class ScriptedArmBackend(ThreadedArmBackend):
    """Play a deterministic trajectory, one sample per grid time ``epoch + k / rate_hz``.

    Each sample is handed out once the clock has reached its time, stamped with the grid time
    (like an arm that measures at 1 kHz and delivers a little later). If the thread falls more
    than ``max_lag_s`` behind (an overloaded machine), it skips ahead and counts the skipped
    samples in :attr:`samples_skipped` rather than delivering a burst of late poses.

    Args:
        trajectory: a SinusoidTrajectory (its epoch_s is the grid origin).
        clock: function returning the current ROS time in seconds.
        rate_hz: sample rate.
        max_lag_s: how far behind the thread may fall before it skips samples.
        sleep: the sleep function (real time by default).
    """

    name = 'scripted'

    def __init__(self, trajectory, clock, rate_hz=1000.0, max_lag_s=0.05, sleep=time.sleep):
        """Check the rate and lag limit."""
        super().__init__(clock)
        if not 0 < rate_hz <= 10000:
            raise ValueError(f'rate_hz must be in (0, 10000], got {rate_hz}')
        if not max_lag_s > 0:
            raise ValueError(f'max_lag_s must be positive, got {max_lag_s}')
        self.trajectory = trajectory
        self.rate_hz = float(rate_hz)
        self.max_lag_s = float(max_lag_s)
        self.samples_skipped = 0
        self._sleep = sleep

    def grid_time(self, index):
        """Time of sample ``index`` on the grid."""
        return self.trajectory.epoch_s + index / self.rate_hz

    def first_index_after(self, t_s):
        """Index of the first grid sample at or after ``t_s``."""
        return max(0, math.ceil((t_s - self.trajectory.epoch_s) * self.rate_hz - 1e-9))

    def run(self, on_sample):
        """Deliver grid samples in real time until stopped."""
        index = self.first_index_after(self.clock())
        while not self.stopping:
            due = self.grid_time(index)
            now = self.clock()
            if now < due:
                self._sleep(min(due - now, 0.01))
                continue
            if now - due > self.max_lag_s:
                skip_to = self.first_index_after(now)
                self.samples_skipped += skip_to - index
                index = skip_to
                continue
            # No wrench: nothing touches a scripted probe, and a zero stream would only cost bandwidth.
            on_sample(
                ArmSample(
                    stamp_s=due,
                    T_base_flange_mm=self.trajectory.flange_pose(due),
                    source_time_s=index / self.rate_hz,
                )
            )
            self.samples_produced += 1
            index += 1

    def describe(self):
        """Trajectory and rate, for logs."""
        return f'scripted sinusoid trajectory at {self.rate_hz:.0f} Hz, epoch {self.trajectory.epoch_s:.3f} s'


class RobotClockMapper:
    """Map the arm's own monotonic clock onto the ROS clock.

    The arm stamps each state with its own time (libfranka: milliseconds since start). The mapping
    is a line ``stamp = offset + rate · robot_time`` refitted every ``refit_every`` samples over the
    last ``window_s`` seconds: the rate by least squares of receive time against robot time, the
    offset as the lower envelope (the sample that arrived fastest carries the least transport
    delay). A real arm's clock runs at the ROS clock's rate (rate ≈ 1, the fit only absorbs drift);
    a simulator on a loaded machine may run slower than real time, which a fixed rate would turn
    into ever older stamps. Stamps never go backwards and never lie after their receive time.

    Args:
        window_s: length of the sliding window, seconds (of receive time).
        refit_every: refit the line after this many samples.
    """

    def __init__(self, window_s=2.0, refit_every=50):
        """Start with no estimate (rate 1 until the window spans enough time)."""
        self.window_s = float(window_s)
        self.refit_every = int(refit_every)
        self._robot = collections.deque()
        self._receive = collections.deque()
        self._since_fit = 0
        self.rate = 1.0
        self.offset = None
        self._last_stamp = -math.inf

    def _refit(self):
        robot = np.fromiter(self._robot, dtype=float)
        receive = np.fromiter(self._receive, dtype=float)
        span = robot[-1] - robot[0]
        if len(robot) >= 20 and span > 0.05:
            r0, w0 = robot.mean(), receive.mean()
            rate = float(np.dot(robot - r0, receive - w0) / np.dot(robot - r0, robot - r0))
            # A clock running backwards or absurdly fast is a fault, not a rate to follow.
            self.rate = rate if 0.05 < rate < 20.0 else 1.0
        self.offset = float(np.min(receive - self.rate * robot))

    def to_ros_time(self, robot_time_s, receive_time_s):
        """Return the ROS-clock stamp of a state measured at ``robot_time_s``, received at ``receive_time_s``.

        Both times are in seconds; the receive time is on the ROS clock.
        """
        self._robot.append(robot_time_s)
        self._receive.append(receive_time_s)
        while self._receive[0] < receive_time_s - self.window_s and len(self._receive) > 1:
            self._robot.popleft()
            self._receive.popleft()
        self._since_fit += 1
        if self.offset is None or self._since_fit >= self.refit_every:
            self._refit()
            self._since_fit = 0
        else:
            # Between refits a faster delivery still lowers the envelope at once.
            self.offset = min(self.offset, receive_time_s - self.rate * robot_time_s)
        stamp = min(self.offset + self.rate * robot_time_s, receive_time_s)
        stamp = max(stamp, self._last_stamp + 1e-6)
        self._last_stamp = stamp
        return stamp


def is_loopback_host(hostname):
    """True when ``hostname`` resolves to a loopback address (a simulator on this machine)."""
    try:
        return ipaddress.ip_address(socket.gethostbyname(hostname)).is_loopback
    except (OSError, ValueError):
        return False


class FrankyArmBackend(ThreadedArmBackend):
    """Read the arm state through libfranka (franky-control): FR3, Panda, or ``franky-sim``.

    Args:
        hostname: the robot's FCI address (``127.0.0.1`` for franky-sim).
        clock: function returning the current ROS time in seconds.
        realtime: enforce a realtime kernel (True on a real arm's control PC).
        sim_motion: relative moves (6-D actions in the flange frame, mm and degrees) to play in a
            loop, or None. Only allowed against a loopback simulator: the recorder never moves a real arm.
        sim_approach: relative moves played once before the loop (e.g. down to the chest), or None.
        stamp_source: 'robot_clock' (a real arm: the robot's own time mapped onto the ROS clock) or
            'receive_time' (a simulator whose clock does not keep pace with real time on a busy
            machine: the state is stamped when it is read).
        dynamics_factor: franky's relative dynamics factor for sim_motion (0, 1].
        connect_timeout_s: give up connecting after this long.
    """

    name = 'franky'

    def __init__(
        self,
        hostname,
        clock,
        realtime=False,
        sim_motion=None,
        sim_approach=None,
        dynamics_factor=0.05,
        connect_timeout_s=5.0,
        stamp_source='robot_clock',
    ):
        """Check the options; the connection is made in the backend thread."""
        super().__init__(clock)
        if not hostname:
            raise ValueError('franky backend needs the robot hostname (FCI address), got an empty string')
        sim_motion = self._check_moves(sim_motion, 'sim_motion')
        sim_approach = self._check_moves(sim_approach, 'sim_approach')
        if sim_motion or sim_approach:
            if not is_loopback_host(hostname):
                raise ValueError(
                    f'sim_motion is only allowed against a simulator on loopback, not {hostname!r}: '
                    'the arm-state backend never moves a real arm'
                )
        if stamp_source not in STAMP_SOURCES:
            raise ValueError(f'stamp_source must be one of {STAMP_SOURCES}, got {stamp_source!r}')
        if not 0 < dynamics_factor <= 1:
            raise ValueError(f'dynamics_factor must be in (0, 1], got {dynamics_factor}')
        self.hostname = hostname
        self.realtime = bool(realtime)
        self.sim_motion = sim_motion
        self.sim_approach = sim_approach
        self.stamp_source = stamp_source
        self.dynamics_factor = float(dynamics_factor)
        self.connect_timeout_s = float(connect_timeout_s)
        self.clock_mapper = RobotClockMapper()
        self.robot = None
        self.motion_error = ''

    @staticmethod
    def _check_moves(moves, name):
        if not moves:
            return []
        moves = [np.asarray(m, dtype=float) for m in moves]
        if any(m.shape != (6,) or not np.all(np.isfinite(m)) for m in moves):
            raise ValueError(f'{name} must be a list of 6-D actions (x, y, z mm, roll, pitch, yaw deg)')
        return moves

    def connect(self):
        """Connect to the robot, retrying until connect_timeout_s (a simulator may still be starting)."""
        import franky

        config = franky.RealtimeConfig.Enforce if self.realtime else franky.RealtimeConfig.Ignore
        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            try:
                return franky.Robot(self.hostname, realtime_config=config)
            except Exception as error:  # franky raises NetworkException, IncompatibleVersionException, ...
                if time.monotonic() > deadline or self.stopping:
                    raise ConnectionError(
                        f'cannot connect to the Franka arm at {self.hostname!r} within '
                        f'{self.connect_timeout_s:.1f} s: {error}'
                    ) from error
                time.sleep(0.2)

    def run(self, on_sample):
        """Poll the robot state, hand out each new state once, play sim_motion if configured."""
        self.robot = self.connect()
        motion_thread = None
        try:
            if self.sim_motion or self.sim_approach:
                motion_thread = threading.Thread(
                    target=self._play_motion, name='arm-franky-motion', daemon=True
                )
                motion_thread.start()
            self._read_states(on_sample)
        finally:
            self._release_robot(motion_thread)

    def _release_robot(self, motion_thread):
        """Stop any motion, wait for it, and destroy the Robot here, in the backend thread.

        franky runs a motion in a C++ thread; a Robot destroyed while that thread is still joinable (at
        interpreter exit, after a shutdown that did not wait for it) aborts the whole process with
        "terminate called without an active exception".
        """
        robot = self.robot
        if robot is None:
            return
        if motion_thread is not None:
            try:
                robot.stop()
            except Exception:  # noqa: BLE001 - best effort while shutting down
                pass
            motion_thread.join(2.0)
            deadline = time.monotonic() + 2.0
            try:
                while not robot.join_motion(timeout=0.05) and time.monotonic() < deadline:
                    pass
            except Exception:  # noqa: BLE001 - no motion, or the connection is gone
                pass
        if motion_thread is None or not motion_thread.is_alive():
            self.robot = None
            del robot

    def _read_states(self, on_sample):
        last_robot_ms = None
        while not self.stopping:
            state = self.robot.state  # blocks ~1 ms for the next state unless a motion is running
            robot_ms = state.time.to_msec()
            if robot_ms == last_robot_ms:
                # During a motion the state is the control loop's latest; wait for the next one.
                time.sleep(0.0002)
                continue
            last_robot_ms = robot_ms
            now = self.clock()
            if self.stamp_source == 'robot_clock':
                stamp = self.clock_mapper.to_ros_time(robot_ms / 1000.0, now)
            else:
                stamp = now
            T = np.array(state.O_T_EE.matrix, dtype=float)
            T[:3, 3] *= 1000.0
            wrench = np.asarray(state.O_F_ext_hat_K, dtype=float).reshape(-1)
            on_sample(
                ArmSample(stamp_s=stamp, T_base_flange_mm=T, wrench=wrench, source_time_s=robot_ms / 1000.0)
            )
            self.samples_produced += 1

    def _play_motion(self):
        import franky

        try:
            self.robot.relative_dynamics_factor = self.dynamics_factor
            index = 0
            while not self.stopping:
                if index < len(self.sim_approach):
                    action = self.sim_approach[index]
                elif self.sim_motion:
                    action = self.sim_motion[(index - len(self.sim_approach)) % len(self.sim_motion)]
                else:
                    return
                T = action_matrix(action)
                affine = franky.Affine(T[:3, 3] / 1000.0, Rotation.from_matrix(T[:3, :3]).as_quat())
                self.robot.move(
                    franky.CartesianMotion(affine, franky.ReferenceType.Relative), asynchronous=True
                )
                while not self.stopping and not self.robot.join_motion(timeout=0.05):
                    pass
                index += 1
        except Exception as error:  # noqa: BLE001 - a failed simulated move must not kill the state reader
            if not self.stopping:  # stopping preempts the running move on purpose
                self.motion_error = f'simulated motion stopped: {type(error).__name__}: {error}'

    def stop(self, timeout_s=3.0):
        """Stop the thread (and any simulated motion)."""
        super().stop(timeout_s)

    def describe(self):
        """Host and mode, for logs."""
        moves = len(self.sim_approach) + len(self.sim_motion)
        motion = f', playing {moves} simulated moves' if moves else ''
        return f'franky/libfranka at {self.hostname}{motion}'
