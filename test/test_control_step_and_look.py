"""The planner's step-and-look mode: looks at still frames only, steps part way, stops on what it sees."""

import numpy as np
import pytest

from echo_guidance.arm.interface import ArmInterface
from echo_guidance.arm.kinematic import KinematicArm, KinematicArmBackend
from echo_guidance.control import (
    ArmController,
    ControlInputs,
    ControlState,
    GuidanceSample,
    LimitsError,
    PlannerConfig,
    SafetyLimits,
)
from echo_guidance.control.planner import scaled_action_matrix
from echo_guidance.geometry import action_to_matrix, relative_action

START = action_to_matrix(np.array([500.0, 0.0, 200.0, 180.0, 0.0, 90.0]))
TARGET = START @ action_to_matrix([20.0, -10.0, 5.0, 10.0, -15.0, 20.0])
STEP = PlannerConfig(step_and_look=True, look_frames=3, step_fraction=0.7, reach_looks=2)


def run(planner_config, guide, cycles=2000, frame_every=5, latency_cycles=4):
    """Drive the controller and the kinematic arm; ``guide(pose, moving)`` answers each frame.

    A frame's guidance (stamped with the frame's time) arrives ``latency_cycles`` later, as live.
    """
    limits = SafetyLimits()
    clock = [0.0]
    backend = KinematicArmBackend(KinematicArm(START), clock=lambda: clock[0])
    controller = ArmController(limits, planner_config, ArmInterface(backend, clock=lambda: clock[0]))
    guidance, frames, report, pending = None, [], None, []
    previous = backend.state().pose_mm
    for k in range(cycles):
        state = backend.state()
        if k % frame_every == 0:
            # moving: more than 0.2 mm in the last cycle (10 mm/s), i.e. during a step, not settling
            moving = float(np.linalg.norm(state.pose_mm[:3, 3] - previous[:3, 3])) > 0.2
            answer = GuidanceSample(clock[0], True, np.asarray(guide(state.pose_mm, moving), float), 0.9)
            pending.append((k + latency_cycles, answer))
            frames.append((clock[0], moving))
        while pending and pending[0][0] <= k:
            guidance = pending.pop(0)[1]
        previous = state.pose_mm
        report = controller.cycle(
            ControlInputs(
                now_s=clock[0],
                pose_mm=state.pose_mm,
                pose_stamp_s=state.stamp_s,
                wrench=state.wrench,
                wrench_stamp_s=state.wrench_stamp_s,
                deadman_held=k > 0,
                deadman_stamp_s=clock[0],
                frame_stamp_s=clock[0],
                guidance=guidance,
            )
        )
        if report.state is ControlState.PLANE_REACHED:
            break
        backend.advance(limits.period_s)
        clock[0] += limits.period_s
    return report, backend.arm, controller.planner, frames


def error(pose):
    delta = relative_action(pose, TARGET)
    return float(np.linalg.norm(delta[:3])), float(np.max(np.abs(delta[3:])))


def test_scaled_action_scales_translation_and_rotation_along_the_geodesic():
    action = np.array([10.0, -4.0, 2.0, 0.0, 0.0, 30.0])
    np.testing.assert_allclose(scaled_action_matrix(action, 1.0), action_to_matrix(action), atol=1e-9)
    half = relative_action(np.eye(4), scaled_action_matrix(action, 0.5))
    np.testing.assert_allclose(half, [5.0, -2.0, 1.0, 0.0, 0.0, 15.0], atol=1e-9)


def test_step_and_look_settings_are_checked():
    with pytest.raises(LimitsError, match='planner.step_fraction = 1.5'):
        PlannerConfig.from_mapping({'step_fraction': 1.5}, key_prefix='planner.')
    with pytest.raises(LimitsError, match='planner.look_frames must be a whole number'):
        PlannerConfig.from_mapping({'look_frames': 2.5}, key_prefix='planner.')
    with pytest.raises(LimitsError, match='planner.step_and_look must be true or false'):
        PlannerConfig.from_mapping({'step_and_look': 'yes'}, key_prefix='planner.')


def test_step_and_look_reaches_the_target_with_true_guidance():
    report, arm, planner, _ = run(STEP, lambda pose, moving: relative_action(pose, TARGET))
    assert report.state is ControlState.PLANE_REACHED, report
    mm, deg = error(arm.pose_mm)
    assert mm < 3.0 and deg < 3.0
    assert planner.looks >= 3  # at least one step, then two looks at the plane (reach_looks=2)


def test_frames_taken_while_moving_are_never_used():
    """Guidance that is wild whenever the probe steps would fling a continuous planner; looks ignore it."""

    def guide(pose, moving):
        if moving:
            return [40.0, 40.0, -20.0, 30.0, -30.0, 30.0]
        return relative_action(pose, TARGET)

    report, arm, planner, frames = run(STEP, guide, latency_cycles=12)  # 0.24 s, as a slow live link
    assert any(moving for _, moving in frames), 'the test must send frames during motion'
    assert report.state is ControlState.PLANE_REACHED, report
    assert len(planner.look_log) >= 3
    for look_pose, seen, count in planner.look_log:
        assert count == STEP.look_frames
        np.testing.assert_allclose(seen, relative_action(look_pose, TARGET), atol=0.5)
    mm, deg = error(arm.pose_mm)
    assert mm < 3.0 and deg < 3.0


def test_an_under_predicting_model_still_converges_and_reached_follows_the_current_guidance():
    """A model that sees only half of the remaining motion: each look makes the next step from nearer."""
    config = PlannerConfig(
        step_and_look=True, look_frames=2, step_fraction=1.0, reach_looks=1, reach_guidance_mm=1.0,
        reach_guidance_deg=1.0,
    )
    report, arm, planner, _ = run(config, lambda pose, moving: 0.5 * relative_action(pose, TARGET), 4000)
    assert report.state is ControlState.PLANE_REACHED, report
    mm, deg = error(arm.pose_mm)
    assert mm < 2.5 and deg < 2.5
    seen = planner.last_look_action
    assert np.linalg.norm(seen[:3]) <= 1.0


def test_reached_after_reach_looks_looks_at_the_plane_without_moving():
    report, arm, planner, _ = run(STEP, lambda pose, moving: [0.5, 0.0, 0.0, 0.0, 1.0, 0.0], cycles=300)
    assert report.state is ControlState.PLANE_REACHED and planner.looks == STEP.reach_looks
    assert arm.path_length_mm == 0.0


def test_a_look_that_sees_the_target_far_away_moves_instead_of_stopping():
    report, arm, planner, _ = run(STEP, lambda pose, moving: [8.0, 0.0, 0.0, 0.0, 0.0, 0.0], cycles=150)
    assert report.state is not ControlState.PLANE_REACHED and arm.path_length_mm > 5.0


@pytest.mark.parametrize('step_and_look', [False, True])
def test_guidance_that_keeps_pointing_onward_ends_at_the_workspace_edge_never_reached(step_and_look):
    """Frames without echo give one constant answer wherever the probe is: the estimate runs ahead.

    The goal is clamped to the workspace; arriving at the clamped goal is not reaching the plane.
    """
    config = PlannerConfig(step_and_look=step_and_look)
    report, arm, _, _ = run(config, lambda pose, moving: [0.0, 5.0, 0.0, 0.0, 0.0, 0.0], cycles=1500)
    assert report.state is not ControlState.PLANE_REACHED, report
    moved = arm.pose_mm[:3, 3] - START[:3, 3]
    limit = SafetyLimits().workspace_half_extent_mm
    assert np.max(np.abs(moved) - np.array(limit)) <= 1e-6
    assert np.max(np.abs(moved)) > limit[0] - 2.0  # it did run to the edge
