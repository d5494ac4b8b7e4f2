"""The arm interface the rest of the suite calls: current pose, move to a pose, hold, stop, errors.

In the spirit of franka_ros_interface (``endpoint_pose()``, ``move_to_...(test=abort_fn)``,
``what_errors()``), but every motion goes through the safety envelope:

* :meth:`ArmInterface.execute` sends one :class:`~echo_guidance.control.envelope.MotionCommand`
  (only :class:`~echo_guidance.control.envelope.SafetyEnvelope` creates those) and refuses a command
  older than its control period;
* :meth:`ArmInterface.move_to` moves to a pose by running its own envelope at the control rate
  (deadman = the caller's ``enabled()``), stopping the moment ``enabled()`` turns false, a limit is
  hit or the time runs out.

Backends (:class:`CommandBackend`) do the talking: the kinematic simulated arm
(:mod:`echo_guidance.arm.kinematic`), libfranka through franky and ros2_control / franka_ros2 over
standard messages (:mod:`echo_guidance.arm.command_backends`). Poses are probe poses in ``base``,
4×4, millimetres; backends that talk flange poses convert with the flange → probe calibration.
"""

import abc
import dataclasses
import time

import numpy as np

from echo_guidance.control.envelope import ControlInputs, MotionCommand, SafetyEnvelope, Verdict, is_rigid
from echo_guidance.control.limits import PlannerConfig
from echo_guidance.control.planner import StepPlanner


class ArmUnavailableError(RuntimeError):
    """The arm has not reported a state (not connected yet, or its backend failed)."""


class CommandRefusedError(RuntimeError):
    """The arm interface refused a command (not from the envelope, stale, or the arm has errors)."""


@dataclasses.dataclass(frozen=True)
class ArmState:
    """The arm as a backend last saw it.

    Attributes:
        stamp_s: measurement time on the controller's clock.
        pose_mm: probe pose in base, 4×4, millimetres.
        wrench: external wrench (fx, fy, fz N, tx, ty, tz N·m) in base, or None.
        wrench_stamp_s: its time, or None.
        errors: the arm's active errors (empty when fine).
    """

    stamp_s: float
    pose_mm: np.ndarray
    wrench: np.ndarray | None = None
    wrench_stamp_s: float | None = None
    errors: tuple = ()


class CommandBackend(abc.ABC):
    """Talks to one kind of arm. Only :class:`ArmInterface` calls these methods."""

    name = 'abstract'

    def start(self):  # noqa: B027 - optional hook
        """Connect / start threads (default: nothing)."""

    @abc.abstractmethod
    def state(self):
        """Return the latest :class:`ArmState`, or None before the first one."""

    @abc.abstractmethod
    def send(self, command):
        """Send one envelope-issued :class:`MotionCommand` (already checked by the interface)."""

    @abc.abstractmethod
    def hold(self):
        """Bring the arm to rest where it is and keep it there."""

    @abc.abstractmethod
    def stop(self):
        """Stop every motion now."""

    def recover(self):
        """Try to clear the arm's errors (e.g. after a reflex); return True on success."""
        return False

    def close(self):  # noqa: B027 - optional hook
        """Stop threads, disconnect (default: nothing)."""

    def describe(self):
        """One line for logs."""
        return self.name


@dataclasses.dataclass(frozen=True)
class MoveResult:
    """How :meth:`ArmInterface.move_to` ended."""

    reached: bool
    reason: str
    detail: str
    cycles: int
    final_pose_mm: np.ndarray | None


class ArmInterface:
    """The arm API: pose, wrench, errors, safe motion.

    Args:
        backend: a :class:`CommandBackend`.
        clock: the controller's clock (seconds); commands older than one period are refused.
    """

    def __init__(self, backend, clock=time.monotonic):
        """Wrap ``backend``."""
        self.backend = backend
        self.clock = clock
        self.commands_executed = 0
        self.commands_refused = 0

    # ---------------------------------------------------------------------------- reading

    def start(self):
        """Start the backend (connect); return self."""
        self.backend.start()
        return self

    def state(self):
        """Return the latest :class:`ArmState` or None."""
        return self.backend.state()

    def current_pose(self):
        """Return the current probe pose (4×4 mm, base).

        Raises:
            ArmUnavailableError: the arm has reported nothing yet.
        """
        state = self.backend.state()
        if state is None:
            raise ArmUnavailableError(f'{self.backend.describe()}: no arm state yet')
        return np.array(state.pose_mm, dtype=float)

    def current_wrench(self):
        """Return the external wrench (6,) or None when the arm has none."""
        state = self.backend.state()
        return None if state is None or state.wrench is None else np.array(state.wrench, dtype=float)

    def errors(self):
        """Return the arm's active errors as a list of strings (empty = none)."""
        state = self.backend.state()
        return [] if state is None else list(state.errors)

    def has_errors(self):
        """True when the arm reports errors."""
        return bool(self.errors())

    def recover(self):
        """Ask the backend to clear the arm's errors; return True on success."""
        return bool(self.backend.recover())

    # ---------------------------------------------------------------------------- motion

    def execute(self, command):
        """Send one envelope-issued motion command.

        Raises:
            CommandRefusedError: not a MotionCommand, older than its period, or the arm has errors.
        """
        if not isinstance(command, MotionCommand):
            self.commands_refused += 1
            raise CommandRefusedError(
                f'only MotionCommands from the safety envelope are executed, got {type(command).__name__}'
            )
        age = self.clock() - command.issued_s
        if age > command.period_s or age < -command.period_s:
            self.commands_refused += 1
            raise CommandRefusedError(
                f'command #{command.sequence} is {age:.3f} s old, more than its period '
                f'{command.period_s:.3f} s'
            )
        errors = self.errors()
        if errors:
            self.commands_refused += 1
            raise CommandRefusedError(f'the arm has errors: {"; ".join(errors)}')
        self.backend.send(command)
        self.commands_executed += 1

    def hold(self):
        """Bring the arm to rest and keep its pose."""
        self.backend.hold()

    def stop(self):
        """Stop all motion."""
        self.backend.stop()

    def close(self):
        """Stop the arm and close the backend."""
        try:
            self.backend.stop()
        finally:
            self.backend.close()

    def move_to(
        self,
        pose_mm,
        limits,
        enabled,
        timeout_s=60.0,
        tolerance_mm=1.0,
        tolerance_deg=1.0,
        sleep=time.sleep,
        advance=None,
    ):
        """Move the probe to ``pose_mm`` within ``limits``; stop as soon as ``enabled()`` is false.

        Runs its own :class:`~echo_guidance.control.envelope.SafetyEnvelope` centred on the current
        pose (no frame / guidance checks: the goal is fixed) at ``limits.control_rate_hz``.

        Args:
            pose_mm: goal probe pose (4×4 mm, base); must lie in the workspace around the current pose.
            limits: :class:`~echo_guidance.control.limits.SafetyLimits`.
            enabled: callable, True while motion is allowed (the deadman); checked every cycle.
            timeout_s: give up (and stop) after this long on ``self.clock``.
            tolerance_mm, tolerance_deg: how close counts as reached.
            sleep: how to wait one period (real time by default).
            advance: for simulated arms driven by the caller: ``advance(dt)`` instead of ``sleep``.

        Raises:
            ValueError: the goal is not a rigid transform or lies outside the workspace.
            ArmUnavailableError: no arm state.
        """
        if not is_rigid(pose_mm):
            raise ValueError('move_to needs a finite rigid 4x4 goal pose (mm)')
        goal = np.array(pose_mm, dtype=float)
        envelope = SafetyEnvelope(limits)
        envelope.set_start_pose(self.current_pose())
        if envelope.workspace.translation_excess_mm(goal[:3, 3]) > 0:
            raise ValueError(
                f'goal {goal[:3, 3].round(1).tolist()} mm is outside the workspace box '
                f'±{list(limits.workspace_half_extent_mm)} mm around the current pose'
            )
        if envelope.workspace.rotation_from_start_deg(goal[:3, :3]) > limits.max_rotation_from_start_deg:
            raise ValueError(
                f'goal orientation is more than {limits.max_rotation_from_start_deg:g} deg from the '
                'current one'
            )
        planner = StepPlanner(
            PlannerConfig(
                reach_translation_mm=tolerance_mm,
                reach_rotation_deg=tolerance_deg,
                reach_cycles=3,
                use_guidance_plane_reached=False,
                gain_per_s=3.0,
            ),
            limits,
        )
        planner.set_target(goal)
        start = self.clock()
        cycles = 0
        while True:
            cycles += 1
            now = self.clock()
            state = self.backend.state()
            if now - start > timeout_s:
                self.stop()
                return MoveResult(
                    False, 'timeout', f'not reached within {timeout_s:g} s', cycles, _pose_of(state)
                )
            allowed = bool(enabled())
            inputs = ControlInputs.from_arm_state(
                now,
                state,
                deadman_held=allowed,
                deadman_stamp_s=now,
                arm_errors=() if state is None else tuple(state.errors),
            )
            decision = envelope.decide(
                inputs,
                lambda pose, base, v, w: planner.propose(pose, base, v, w, envelope.workspace),
                require_perception=False,
            )
            if decision.verdict is Verdict.MOVE:
                try:
                    self.execute(decision.command)
                except Exception:
                    self.stop()
                    raise
            elif decision.reason == 'plane_reached':
                self.hold()
                return MoveResult(True, 'reached', decision.detail, cycles, _pose_of(state))
            else:
                self.stop()
                return MoveResult(False, decision.reason, decision.detail, cycles, _pose_of(state))
            if advance is not None:
                advance(limits.period_s)
            else:
                sleep(max(0.0, limits.period_s - (self.clock() - now)))


def _pose_of(state):
    return None if state is None else np.array(state.pose_mm, dtype=float)


def pose_error(T1, T2):
    """(translation mm, geodesic rotation deg) between two poses."""
    from echo_guidance.control.envelope import rotation_angle_deg

    return float(np.linalg.norm(T1[:3, 3] - T2[:3, 3])), rotation_angle_deg(T1[:3, :3], T2[:3, :3])
