"""A kinematic simulated arm: the probe follows its setpoint with first-order lag and hardware limits.

Pure Python, for the closed-loop evaluation (driven step by step in simulated time) and for tests
and simulation profiles (driven by a thread in real time). No dynamics, no contact: the external
wrench is whatever the test injects (zero by default), errors too.

* :class:`KinematicArm`: the model. ``advance(dt)`` moves the probe toward the target by
  ``1 - exp(-dt / time_constant_s)`` of the remaining offset, never faster than the hardware speed
  limits (so a bad command cannot teleport it).
* :class:`KinematicArmBackend`: a :class:`~echo_guidance.arm.interface.CommandBackend` around it;
  with ``rate_hz`` it advances itself in a thread on the given clock.
"""

import math
import threading
import time

import numpy as np

from echo_guidance.arm.interface import ArmState, CommandBackend
from echo_guidance.control.envelope import is_rigid, matrix_to_rotvec_deg, rotvec_to_matrix


class KinematicArm:
    """A probe pose that tracks a target pose.

    Args:
        start_pose_mm: initial probe pose (4×4 mm, base).
        time_constant_s: first-order tracking time constant.
        max_speed_mm_s, max_angular_speed_deg_s: hardware limits of the simulated arm.
    """

    def __init__(
        self, start_pose_mm, time_constant_s=0.03, max_speed_mm_s=250.0, max_angular_speed_deg_s=180.0
    ):
        """Put the probe at ``start_pose_mm``, at rest."""
        if not is_rigid(start_pose_mm):
            raise ValueError('the kinematic arm needs a finite rigid 4x4 start pose (mm)')
        if not time_constant_s > 0 or not max_speed_mm_s > 0 or not max_angular_speed_deg_s > 0:
            raise ValueError('time_constant_s and the speed limits of the kinematic arm must be positive')
        self.pose_mm = np.array(start_pose_mm, dtype=float)
        self.target_mm = self.pose_mm.copy()
        self.time_constant_s = float(time_constant_s)
        self.max_speed_mm_s = float(max_speed_mm_s)
        self.max_angular_speed_deg_s = float(max_angular_speed_deg_s)
        self.time_s = 0.0
        self.wrench = np.zeros(6)
        self.errors = []
        self.path_length_mm = 0.0
        self.path_rotation_deg = 0.0
        self.commands = 0
        self.stops = 0

    def set_target(self, target_mm):
        """Track ``target_mm`` from now on (refused while the arm has errors, like a reflex)."""
        if not is_rigid(target_mm):
            raise ValueError('kinematic arm target must be a finite rigid 4x4 transform (mm)')
        if self.errors:
            raise RuntimeError(f'kinematic arm has errors: {self.errors}')
        self.target_mm = np.array(target_mm, dtype=float)
        self.commands += 1

    def stop(self):
        """Stop where the probe is (an ideal stop: no braking distance)."""
        self.target_mm = self.pose_mm.copy()
        self.stops += 1

    def advance(self, dt):
        """Move the probe for ``dt`` seconds toward the target."""
        if dt <= 0:
            return
        fraction = 1.0 - math.exp(-dt / self.time_constant_s)
        offset = self.target_mm[:3, 3] - self.pose_mm[:3, 3]
        step = offset * fraction
        norm = float(np.linalg.norm(step))
        if norm > self.max_speed_mm_s * dt:
            step *= self.max_speed_mm_s * dt / norm
        rotvec = matrix_to_rotvec_deg(self.target_mm[:3, :3] @ self.pose_mm[:3, :3].T) * fraction
        angle = float(np.linalg.norm(rotvec))
        if angle > self.max_angular_speed_deg_s * dt:
            rotvec *= self.max_angular_speed_deg_s * dt / angle
        pose = self.pose_mm.copy()
        pose[:3, 3] += step
        pose[:3, :3] = rotvec_to_matrix(rotvec) @ pose[:3, :3]
        # Re-orthonormalise so that many small rotations do not drift off SO(3).
        u, _, vt = np.linalg.svd(pose[:3, :3])
        pose[:3, :3] = u @ vt
        self.pose_mm = pose
        self.path_length_mm += float(np.linalg.norm(step))
        self.path_rotation_deg += float(np.linalg.norm(rotvec))
        self.time_s += dt


class KinematicArmBackend(CommandBackend):
    """The :class:`KinematicArm` behind the command-backend interface.

    Args:
        arm: the :class:`KinematicArm`.
        clock: the controller's clock; state stamps are taken from it.
        rate_hz: advance the arm in a thread at this rate in real time (None: the caller calls
            :meth:`advance`, e.g. the closed-loop evaluation in simulated time).
    """

    name = 'kinematic'

    def __init__(self, arm, clock=time.monotonic, rate_hz=None):
        """Wrap ``arm``."""
        self.arm = arm
        self.clock = clock
        self.rate_hz = rate_hz
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._last_advance = None
        self.wrench_available = True

    def start(self):
        """Start the thread that advances the arm in real time (when ``rate_hz`` is set)."""
        if self.rate_hz and self._thread is None:
            self._last_advance = self.clock()
            self._thread = threading.Thread(target=self._run, name='kinematic-arm', daemon=True)
            self._thread.start()

    def _run(self):
        period = 1.0 / self.rate_hz
        while not self._stop.wait(period):
            self.advance_to(self.clock())

    def advance_to(self, now_s):
        """Advance the arm to time ``now_s`` on the clock."""
        with self._lock:
            if self._last_advance is None:
                self._last_advance = now_s
            dt = now_s - self._last_advance
            if dt > 0:
                self.arm.advance(min(dt, 0.1))
                self._last_advance = now_s

    def advance(self, dt):
        """Advance the arm by ``dt`` seconds (caller-driven simulated time)."""
        with self._lock:
            self.arm.advance(dt)

    def state(self):
        """The arm's pose, wrench and errors stamped now."""
        with self._lock:
            now = self.clock()
            wrench = self.arm.wrench.copy() if self.wrench_available else None
            return ArmState(
                stamp_s=now,
                pose_mm=self.arm.pose_mm.copy(),
                wrench=wrench,
                wrench_stamp_s=now if wrench is not None else None,
                errors=tuple(self.arm.errors),
            )

    def send(self, command):
        """Track the command's target pose."""
        with self._lock:
            self.arm.set_target(command.target_pose_mm)

    def hold(self):
        """Stop where the probe is."""
        with self._lock:
            self.arm.stop()

    def stop(self):
        """Stop where the probe is."""
        with self._lock:
            self.arm.stop()

    def recover(self):
        """Clear injected errors."""
        with self._lock:
            self.arm.errors.clear()
        return True

    def close(self):
        """Stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def describe(self):
        """One line for logs."""
        rate = f' advancing at {self.rate_hz:g} Hz' if self.rate_hz else ''
        return f'kinematic simulated arm (time constant {self.arm.time_constant_s * 1000:.0f} ms{rate})'
