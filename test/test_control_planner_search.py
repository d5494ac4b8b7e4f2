"""The planner after a search: guidance that returns is followed again, whatever came before."""

import numpy as np
import pytest

from echo_guidance.control.envelope import GuidanceSample
from echo_guidance.control.limits import PlannerConfig, SafetyLimits
from echo_guidance.control.planner import StepPlanner
from echo_guidance.geometry import action_to_matrix


def _guidance(stamp_s, action):
    return GuidanceSample(stamp_s, True, np.asarray(action, float), 0.9)


def test_guidance_after_a_search_sets_a_new_target_even_after_a_frozen_look_around():
    config = PlannerConfig()
    assert config.look_around and config.search  # the defaults this case is about
    planner = StepPlanner(config, SafetyLimits())
    pose = np.eye(4)
    # A look-around that has finished leaves its fused estimate frozen.
    planner.target_mm, planner.estimates = action_to_matrix([1.0, 0, 0, 0, 0, 0]), config.min_estimates
    planner._frozen, planner.around_rounds = True, 1
    assert not planner.observe(_guidance(1.0, [9.0, 0, 0, 0, 0, 0]), pose)  # frozen: ignored
    # The guidance is lost long enough for a search, then comes back.
    planner.guidance_lost(2.0)
    planner.guidance_lost(2.0 + config.search_after_s)
    assert planner.searching
    planner.guidance_confident()
    assert not planner.searching and planner.target_mm is None and planner.around_rounds == 0
    new = [0.0, 12.0, 0.0, 0.0, 0.0, 5.0]
    for k in range(config.min_estimates):
        assert planner.observe(_guidance(10.0 + k, new), pose), 'guidance after the search must count'
    np.testing.assert_allclose(planner.target_mm, action_to_matrix(new), atol=1e-9)
    proposal = planner.propose(pose, pose, np.zeros(3), np.zeros(3))
    assert proposal is not None and not proposal.reached and proposal.linear_velocity_mm_s[1] > 0


def _run_search(config, limits, seconds):
    """Follow the planner's search proposals with an ideal arm; return (distinct goals visited, time s)."""
    from echo_guidance.control.envelope import rotvec_to_matrix

    planner = StepPlanner(config, limits)
    planner.guidance_lost(0.0)
    planner.guidance_lost(config.search_after_s)
    assert planner.searching
    pose, goals, dt = np.eye(4), [], limits.period_s
    for cycle in range(int(seconds / dt)):
        planner.now_s = cycle * dt
        proposal = planner.propose_search(pose, pose, np.zeros(3), np.zeros(3))
        if proposal.goal_pose_mm is None:  # the pattern is done: the planner holds
            return goals, planner.now_s
        if not goals or not np.allclose(goals[-1], proposal.goal_pose_mm):
            goals.append(proposal.goal_pose_mm)
        pose = pose.copy()
        pose[:3, 3] += proposal.linear_velocity_mm_s * dt
        pose[:3, :3] = rotvec_to_matrix(proposal.angular_velocity_deg_s * dt) @ pose[:3, :3]
    raise AssertionError(f'the search did not end within {seconds} s')


def test_the_search_presses_then_visits_two_rings_and_holds():
    config, limits = PlannerConfig(), SafetyLimits()
    assert (config.search_mm, config.search_deg, config.search_rounds) == (12.0, 0.0, 2)
    goals, seconds = _run_search(config, limits, 120.0)
    assert len(goals) == 1 + 2 * 8
    offsets = np.array([g[:3, 3] for g in goals])
    np.testing.assert_allclose(offsets[:, 2], config.search_press_mm, atol=1e-9)  # all pressed
    radii = np.linalg.norm(offsets[:, :2], axis=1)
    np.testing.assert_allclose(radii, [0.0] + [12.0] * 8 + [24.0] * 8, atol=1e-9)
    angles = np.degrees(np.arctan2(offsets[1:, 1], offsets[1:, 0])) % 360.0
    np.testing.assert_allclose(angles[:8], np.arange(8) * 45.0, atol=1e-6)
    np.testing.assert_allclose(angles[8:], np.arange(8) * 45.0 + 22.5, atol=1e-6)  # half a step on
    for goal in goals:
        np.testing.assert_allclose(goal[:3, :3], np.eye(3), atol=1e-9)  # search_deg 0: no tilt
    # Around the ring, not back through the centre: the whole search fits in the 30 s of an episode
    # (17 dwells of 0.6 s and about 160 mm of travel at the speed limit).
    assert seconds < 30.0, seconds


def test_a_tilted_search_leans_each_ring_pose_back_toward_the_centre():
    config, limits = PlannerConfig(search_deg=10.0, search_rounds=1), SafetyLimits()
    goals, _ = _run_search(config, limits, 120.0)
    assert len(goals) == 1 + 8
    for goal in goals[1:]:
        beam, outward = goal[:3, 2], goal[:3, 3] / np.linalg.norm(goal[:3, 3][:2])
        assert np.degrees(np.arccos(np.clip(beam[2], -1, 1))) == pytest.approx(10.0, abs=0.5)
        assert float(beam[:2] @ outward[:2]) < 0  # the beam tip points back toward the centre
