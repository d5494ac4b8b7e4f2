"""Safe autonomous arm control: limits, the safety envelope, the step planner and the state machine.

Pure Python (NumPy/SciPy), no ROS: the arm-control node (``echo_guidance.nodes.arm_control``) and the
closed-loop evaluation (``echo_guidance.closed_loop``) drive the same code.

* :mod:`~echo_guidance.control.limits`: :class:`SafetyLimits` and :class:`PlannerConfig`, validated
  at start-up (a malformed value refuses to start with a message naming the key).
* :mod:`~echo_guidance.control.envelope`: :class:`SafetyEnvelope`, the one place that turns the
  current state (pose, deadman, e-stop, wrench, message ages, guidance, node liveness) into a
  bounded :class:`MotionCommand` or a hold/stop decision with its reason. Nothing else creates a
  motion command.
* :mod:`~echo_guidance.control.planner`: :class:`StepPlanner`, which filters the guidance into a
  target estimate and proposes a velocity toward it; the envelope bounds the proposal.
* :mod:`~echo_guidance.control.state_machine`: :class:`ControlStateMachine` (idle → armed →
  moving → plane reached (hold) → stopped, and fault).
* :mod:`~echo_guidance.control.controller`: :class:`ArmController`, one control cycle: inputs →
  envelope → state machine → arm.

docs/autonomous.md describes the limits, their defaults and the fault table.
"""

from echo_guidance.control.controller import ArmController, CycleReport, PoseHistory
from echo_guidance.control.envelope import (
    ControlInputs,
    Decision,
    GuidanceSample,
    MotionCommand,
    SafetyEnvelope,
    Verdict,
)
from echo_guidance.control.limits import LimitsError, PlannerConfig, SafetyLimits
from echo_guidance.control.planner import Proposal, StepPlanner
from echo_guidance.control.state_machine import ControlState, ControlStateMachine

__all__ = [
    'ArmController',
    'ControlInputs',
    'ControlState',
    'ControlStateMachine',
    'CycleReport',
    'Decision',
    'GuidanceSample',
    'LimitsError',
    'MotionCommand',
    'PlannerConfig',
    'PoseHistory',
    'Proposal',
    'SafetyEnvelope',
    'SafetyLimits',
    'StepPlanner',
    'Verdict',
]
