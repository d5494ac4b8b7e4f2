"""One control cycle: inputs → safety envelope → state machine → arm.

:class:`ArmController` owns a :class:`~echo_guidance.control.envelope.SafetyEnvelope`, a
:class:`~echo_guidance.control.planner.StepPlanner` and a
:class:`~echo_guidance.control.state_machine.ControlStateMachine`. Each :meth:`ArmController.cycle`
asks the envelope for a decision (motion only when the state machine is armed or moving), advances
the state machine and applies the decision to the arm: a motion command, a hold or a stop. Any
exception while deciding or commanding stops the arm and latches a fault.

:class:`PoseHistory` keeps recent probe poses so a guidance message can be paired with the pose at
its frame's acquisition time.
"""

import bisect
import collections
import dataclasses
import math

import numpy as np

from echo_guidance.control.envelope import Decision, SafetyEnvelope, Verdict, is_rigid
from echo_guidance.control.planner import StepPlanner
from echo_guidance.control.state_machine import ControlState, ControlStateMachine
from echo_guidance.geometry import interpolate_pose


class PoseHistory:
    """Recent (stamp, pose) samples; the pose at a past time by interpolation.

    Args:
        span_s: how much history to keep, seconds.
        max_gap_s: two samples further apart than this are not interpolated between.
    """

    def __init__(self, span_s=2.0, max_gap_s=0.1):
        """Start empty."""
        self.span_s = float(span_s)
        self.max_gap_s = float(max_gap_s)
        self._stamps = collections.deque()
        self._poses = collections.deque()

    def add(self, stamp_s, pose_mm):
        """Add a sample (older or repeated stamps are ignored)."""
        if self._stamps and stamp_s <= self._stamps[-1]:
            return
        self._stamps.append(float(stamp_s))
        self._poses.append(np.array(pose_mm, dtype=float))
        while self._stamps and self._stamps[0] < stamp_s - self.span_s:
            self._stamps.popleft()
            self._poses.popleft()

    def clear(self):
        """Forget every sample."""
        self._stamps.clear()
        self._poses.clear()

    def at(self, t_s):
        """The pose at ``t_s`` (interpolated), or None when no samples bracket it closely enough.

        A time just after the newest sample (within ``max_gap_s``) gets the newest pose.
        """
        stamps = self._stamps
        if not stamps or t_s < stamps[0]:
            return None
        if t_s >= stamps[-1]:
            return self._poses[-1].copy() if t_s - stamps[-1] <= self.max_gap_s else None
        i = bisect.bisect_right(stamps, t_s)
        t0, t1 = stamps[i - 1], stamps[i]
        if t1 - t0 > self.max_gap_s:
            return None
        if t_s == t0:
            return self._poses[i - 1].copy()
        return np.asarray(interpolate_pose(t_s, t0, self._poses[i - 1], t1, self._poses[i]), dtype=float)


@dataclasses.dataclass(frozen=True)
class CycleReport:
    """What one cycle decided and did."""

    cycle: int
    now_s: float
    state: ControlState
    decision: Decision
    applied: str
    """'move', 'hold', 'stop', 'none' (already at rest) or 'failed: ...'."""


class ArmController:
    """Run the envelope, planner and state machine against one arm.

    Args:
        limits: :class:`~echo_guidance.control.limits.SafetyLimits`.
        planner_config: :class:`~echo_guidance.control.limits.PlannerConfig`.
        arm: an object with ``execute(command)``, ``hold()`` and ``stop()`` (an
            :class:`~echo_guidance.arm.interface.ArmInterface`), or None to only decide.
        pose_history_s: how long poses are kept for pairing guidance with its frame's pose.
    """

    def __init__(self, limits, planner_config, arm=None, pose_history_s=2.0):
        """Start idle."""
        self.limits = limits
        self.envelope = SafetyEnvelope(limits)
        self.planner = StepPlanner(planner_config, limits)
        self.state_machine = ControlStateMachine()
        self.arm = arm
        self.poses = PoseHistory(span_s=max(pose_history_s, limits.guidance_max_age_s + 0.5))
        self.cycles = 0
        self.last_report = None
        self._at_rest = False
        self.reason_counts = collections.Counter()
        self.target_plane = None

    @property
    def state(self):
        """The current :class:`ControlState`."""
        return self.state_machine.state

    def set_target_plane(self, plane):
        """A new target plane: forget the old target estimate."""
        if plane != self.target_plane:
            self.target_plane = plane
            self.planner.reset()
            self.state_machine.target_changed()

    def record_pose(self, stamp_s, pose_mm):
        """Remember a probe pose sample (for pairing guidance with its frame time); bad poses are dropped."""
        if math.isfinite(stamp_s) and is_rigid(pose_mm):
            self.poses.add(stamp_s, pose_mm)

    def _propose(self, pose, base, velocity, angular_velocity):
        return self.planner.propose(pose, base, velocity, angular_velocity, self.envelope.workspace)

    def _propose_search(self, pose, base, velocity, angular_velocity):
        return self.planner.propose_search(pose, base, velocity, angular_velocity, self.envelope.workspace)

    def cycle(self, inputs):
        """Run one control cycle on ``inputs``; return a :class:`CycleReport`."""
        self.cycles += 1
        if (
            inputs.pose_stamp_s is not None
            and math.isfinite(inputs.pose_stamp_s)
            and inputs.pose_stamp_s <= inputs.now_s + self.limits.max_future_stamp_s
            and inputs.pose_mm is not None
            and is_rigid(inputs.pose_mm)
        ):
            self.poses.add(inputs.pose_stamp_s, inputs.pose_mm)
        sm = self.state_machine
        was_enabled = sm.motion_enabled
        try:
            guidance = inputs.guidance
            if guidance is not None and guidance.target_plane and guidance.target_plane != self.target_plane:
                self.set_target_plane(guidance.target_plane)
                was_enabled = sm.motion_enabled
            self.planner.now_s = inputs.now_s
            found = self.envelope.check(inputs) if was_enabled else None
            if was_enabled and found is None:
                self.planner.guidance_confident()
                pose_at_frame = self.poses.at(guidance.stamp_s)
                if pose_at_frame is not None:
                    self.planner.observe(guidance, pose_at_frame)
            elif was_enabled and found[1] == 'low_confidence':
                self.planner.guidance_lost(inputs.now_s)
            decision = self.envelope.decide(
                inputs,
                self._propose,
                motion_enabled=was_enabled,
                hold_reason=sm.hold_reason,
                search=self._propose_search if self.planner.searching else None,
            )
        except Exception as error:  # noqa: BLE001 - fail closed
            decision = Decision(Verdict.STOP, 'internal_error', f'{type(error).__name__}: {error}')
        released = (
            inputs.deadman_held is False
            and inputs.deadman_stamp_s is not None
            and math.isfinite(inputs.deadman_stamp_s)
            and 0 <= inputs.now_s - inputs.deadman_stamp_s <= self.limits.deadman_timeout_s
        )
        before = sm.state
        state = sm.update(decision, released, bool(inputs.estop))
        if state is ControlState.ARMED and before is not ControlState.ARMED:
            if self.envelope.workspace is None and inputs.pose_mm is not None:
                self.envelope.set_start_pose(inputs.pose_mm)
            if before is ControlState.IDLE:
                self.planner.reset()
        if decision.verdict is Verdict.MOVE and state is not ControlState.MOVING:
            # The state machine refused the move (cannot happen with a consistent envelope): stop.
            decision = Decision(Verdict.STOP, 'internal_error', f'move decided in state {state.value}')
        applied = self._apply(decision)
        if applied.startswith('failed'):
            failure = Decision(Verdict.STOP, 'arm_error', applied)
            sm.update(failure, False, bool(inputs.estop))
            decision = failure
        self.reason_counts[decision.reason] += 1
        self.last_report = CycleReport(self.cycles, inputs.now_s, sm.state, decision, applied)
        return self.last_report

    def _apply(self, decision):
        if self.arm is None:
            return 'none'
        try:
            if decision.verdict is Verdict.MOVE:
                self.arm.execute(decision.command)
                self._at_rest = False
                return 'move'
            if self._at_rest and self._rest_kind == decision.verdict:
                return 'none'
            if decision.verdict is Verdict.HOLD:
                self.arm.hold()
            else:
                self.arm.stop()
            self._at_rest, self._rest_kind = True, decision.verdict
            return decision.verdict.value
        except Exception as error:  # noqa: BLE001 - a failing arm call must stop the arm
            self._at_rest = False
            try:
                self.arm.stop()
            except Exception:  # noqa: BLE001 - nothing more can be done here; the fault is latched
                pass
            return f'failed: {type(error).__name__}: {error}'

    _rest_kind = None

    def shutdown(self):
        """Stop the arm (node shutdown, end of an episode)."""
        if self.arm is not None:
            try:
                self.arm.stop()
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
