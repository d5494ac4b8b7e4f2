"""The planner after a search: guidance that returns is followed again, whatever came before."""

import numpy as np

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
