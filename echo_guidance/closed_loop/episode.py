"""One closed-loop run: a policy guides the controlled, simulated arm from a start pose to a plane.

Simulated time advances one control period per cycle. Frames are rendered at the arm's true probe
pose every ``1 / frame_rate_hz`` (with the heart beating), each frame's guidance becomes visible to
the controller ``guidance_latency_s`` later, stamped with the frame's time, just as on the live
system. The deadman is pressed (after a released message, a fresh press) and held; e-stop, wrench
and node liveness stay nominal, so only the guidance decides the outcome.
"""

import collections
import dataclasses
import math

import numpy as np

from echo_guidance.arm.interface import ArmInterface, pose_error
from echo_guidance.arm.kinematic import KinematicArm, KinematicArmBackend
from echo_guidance.control import ArmController, ControlInputs, ControlState


@dataclasses.dataclass(frozen=True)
class ClosedLoopConfig:
    """Settings of the closed-loop runs (times in s, lengths in mm, angles in degrees)."""

    time_limit_s: float = 30.0
    frame_rate_hz: float = 10.0
    guidance_latency_s: float = 0.05
    arm_time_constant_s: float = 0.03
    max_start_offset_mm: float = 30.0
    max_start_offset_deg: float = 30.0
    max_start_depth_mm: float = 5.0
    success_mm: float = 5.0
    success_deg: float = 5.0
    image_size: int = 128

    def __post_init__(self):
        """Check the values; raise ValueError naming the bad one."""
        for name in ('time_limit_s', 'frame_rate_hz', 'arm_time_constant_s', 'success_mm', 'success_deg'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f'closed-loop {name} must be a positive number, got {value!r}')
        for name in (
            'guidance_latency_s',
            'max_start_offset_mm',
            'max_start_offset_deg',
            'max_start_depth_mm',
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f'closed-loop {name} must be a number >= 0, got {value!r}')
        if self.max_start_offset_deg > 90:
            raise ValueError(
                f'closed-loop max_start_offset_deg must be <= 90, got {self.max_start_offset_deg}'
            )
        if not (isinstance(self.image_size, int) and 16 <= self.image_size <= 1024):
            raise ValueError(
                f'closed-loop image_size must be an integer in 16..1024, got {self.image_size!r}'
            )


@dataclasses.dataclass(frozen=True)
class EpisodeResult:
    """What one run did."""

    policy: str
    patient_seed: int
    plane: str
    start_index: int
    success: bool
    declared_reached: bool
    end_state: str
    end_reason: str
    time_to_plane_s: float
    cycles_to_plane: int
    first_within_tolerance_s: float
    path_length_mm: float
    path_rotation_deg: float
    start_error_mm: float
    start_error_deg: float
    final_error_mm: float
    final_error_deg: float
    frames: int
    hold_cycles: int
    reasons: dict

    def as_dict(self):
        """Plain-Python form for JSON / CSV."""
        return dataclasses.asdict(self)


TRACE_FIELDS = (
    ['t_s', 'state', 'reason']
    + [f'true_{k}' for k in ('x', 'y', 'z', 'roll', 'pitch', 'yaw')]
    + [f'pred_{k}' for k in ('x', 'y', 'z', 'roll', 'pitch', 'yaw')]
    + ['confidence', 'plane_reached_flag', 'distance', 'true_distance', 'stage', 'status']
    + ['error_mm', 'error_deg', 'pred_mm', 'pred_deg', 'frame_mean']
    + ['estimate_error_mm', 'estimate_error_deg', 'estimate_distance_mm', 'estimate_distance_deg']
    + ['planner']
)
"""Columns of a trace row (one per frame): ``true_*`` is the ground-truth action at the frame's pose,
``pred_*`` the policy's answer; ``distance`` the stop judgement's distance to the plane (NaN without
one) and ``true_distance`` the truth in the same units (success window); ``stage`` the answering
model, ``status`` the guidance's status; ``error_*`` the probe's true error, ``pred_mm``/``pred_deg`` the size
of the answer (norm, geodesic); ``frame_mean`` the frame's mean grey level (0 = blank: no echo,
e.g. the probe off the skin); ``estimate_error_*`` the planner's target estimate against the true
target, ``estimate_distance_*`` the probe to that estimate; ``planner`` any planner-specific note."""


def _trace_row(now, pose_mm, target_mm, frame, answer, controller, report):
    from echo_guidance.geometry import action_to_matrix, plane_distance, relative_action

    true = np.asarray(relative_action(pose_mm, target_mm), dtype=float)
    pred = np.asarray(answer.action, dtype=float)
    error = pose_error(pose_mm, target_mm)
    finite = bool(np.all(np.isfinite(pred)))
    pred_size = pose_error(np.eye(4), action_to_matrix(pred)) if finite else (math.nan, math.nan)
    estimate = controller.planner.target_mm
    if estimate is not None:
        estimate_error = pose_error(estimate, target_mm)
        estimate_distance = pose_error(pose_mm, estimate)
    else:
        estimate_error = estimate_distance = (math.nan, math.nan)
    row = {
        't_s': round(now, 4),
        'state': report.state.value if report else 'idle',
        'reason': report.decision.reason if report else '',
    }
    names = ('x', 'y', 'z', 'roll', 'pitch', 'yaw')
    row.update({f'true_{k}': float(v) for k, v in zip(names, true)})
    row.update({f'pred_{k}': float(v) for k, v in zip(names, pred)})
    row.update(
        confidence=float(answer.confidence),
        plane_reached_flag=bool(answer.plane_reached),
        distance=float(answer.distance),
        true_distance=float(plane_distance(true)),
        stage=answer.stage,
        status=answer.status,
        error_mm=error[0],
        error_deg=error[1],
        pred_mm=float(pred_size[0]),
        pred_deg=float(pred_size[1]),
        frame_mean=float(np.mean(frame)),
        estimate_error_mm=estimate_error[0],
        estimate_error_deg=estimate_error[1],
        estimate_distance_mm=estimate_distance[0],
        estimate_distance_deg=estimate_distance[1],
        planner=getattr(controller.planner, 'trace_note', ''),
    )
    return row


def sample_start(patient, plane, rng, config):
    """A random start near ``plane`` within the config's start range, on the skin.

    :func:`echo_guidance.sim.sampler.sample_pose_near_plane` with x and y offsets in
    ±max_start_offset_mm, depth ±max_start_depth_mm, roll/pitch/yaw ±max_start_offset_deg (the
    training-data sampler draws its poses with the same function).
    """
    from echo_guidance.sim.sampler import sample_pose_near_plane

    return sample_pose_near_plane(
        patient,
        plane,
        rng,
        config.max_start_offset_mm,
        config.max_start_offset_deg,
        config.max_start_depth_mm,
    )


def run_episode(
    patient,
    renderer,
    plane,
    start_pose_mm,
    policy,
    limits,
    planner_config,
    config,
    policy_name='',
    start_index=0,
    trace=None,
    visited=None,
):
    """Run one closed-loop episode; return an :class:`EpisodeResult`.

    Args:
        patient: the :class:`~echo_guidance.sim.Patient`.
        renderer: a :class:`~echo_guidance.sim.ProbeRenderer` of that patient.
        plane: the target plane.
        start_pose_mm: start probe pose (4×4 mm, base).
        policy: ``policy(frame, probe_pose_mm, stamp_s) -> GuidanceSample``.
        limits, planner_config: the controller's SafetyLimits and PlannerConfig.
        config: :class:`ClosedLoopConfig`.
        trace: optional list; one dict per frame is appended (see :data:`TRACE_FIELDS`): the true
            remaining action at the frame's pose, the policy's answer, the planner's target
            estimate against the true target, and the controller's state, for diagnosis.
        visited: optional list; ``(probe pose (4×4 mm), time s)`` of every frame is appended (the
            states the policy visits, for DAgger).
    """
    target = patient.standard_plane_pose(plane)
    clock = [0.0]
    arm = KinematicArm(start_pose_mm, time_constant_s=config.arm_time_constant_s)
    backend = KinematicArmBackend(arm, clock=lambda: clock[0])
    interface = ArmInterface(backend, clock=lambda: clock[0])
    controller = ArmController(limits, planner_config, interface)
    controller.set_target_plane(plane)
    dt = limits.period_s
    frame_period = 1.0 / config.frame_rate_hz
    next_frame = 0.0
    pending = collections.deque()  # (available at, GuidanceSample)
    guidance = None
    frame_stamp = None
    frames = 0
    hold_cycles = 0
    reached_at, reached_cycle, within_at = math.nan, -1, math.nan
    cycle = 0
    report = None
    start_error = pose_error(start_pose_mm, target)
    while clock[0] <= config.time_limit_s:
        now = clock[0]
        state = backend.state()
        if now + 1e-9 >= next_frame:
            frame = renderer.render(state.pose_mm, now)
            frames += 1
            if visited is not None:
                visited.append((np.array(state.pose_mm, dtype=float), now))
            frame_stamp = now
            answer = policy(frame, state.pose_mm, now)
            pending.append((now + config.guidance_latency_s, answer))
            next_frame += frame_period
            if trace is not None:
                trace.append(_trace_row(now, state.pose_mm, target, frame, answer, controller, report))
        while pending and pending[0][0] <= now + 1e-9:
            guidance = pending.popleft()[1]
        inputs = ControlInputs.from_arm_state(
            now,
            state,
            deadman_held=cycle > 0,
            deadman_stamp_s=now,  # released once, then a fresh press held
            frame_stamp_s=frame_stamp if frame_stamp is not None and frame_stamp <= now else None,
            guidance=guidance,
        )
        report = controller.cycle(inputs)
        cycle += 1
        if report.decision.verdict.value == 'hold' and report.state in (
            ControlState.ARMED,
            ControlState.MOVING,
        ):
            hold_cycles += 1
        error = pose_error(arm.pose_mm, target)
        if math.isnan(within_at) and error[0] <= config.success_mm and error[1] <= config.success_deg:
            within_at = now
        if report.state is ControlState.PLANE_REACHED:
            reached_at, reached_cycle = now, cycle
            break
        if report.state in (ControlState.FAULT, ControlState.STOPPED):
            break
        backend.advance(dt)
        clock[0] = now + dt
    final = pose_error(arm.pose_mm, target)
    return EpisodeResult(
        policy=policy_name,
        patient_seed=int(patient.seed),
        plane=plane,
        start_index=int(start_index),
        success=bool(final[0] <= config.success_mm and final[1] <= config.success_deg),
        declared_reached=not math.isnan(reached_at),
        end_state=report.state.value if report else 'none',
        end_reason=report.decision.reason if report else 'none',
        time_to_plane_s=float(reached_at),
        cycles_to_plane=int(reached_cycle),
        first_within_tolerance_s=float(within_at),
        path_length_mm=float(arm.path_length_mm),
        path_rotation_deg=float(arm.path_rotation_deg),
        start_error_mm=start_error[0],
        start_error_deg=start_error[1],
        final_error_mm=final[0],
        final_error_deg=final[1],
        frames=frames,
        hold_cycles=hold_cycles,
        reasons=dict(controller.reason_counts),
    )
