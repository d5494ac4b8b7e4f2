"""Coarse-to-fine guidance and the stop judgement in the guidance engine (no ROS)."""

import math

import numpy as np
import pytest

from echo_guidance.guidance.engine import GuidanceEngine
from echo_guidance.guidance.fusion import FusionConfig, PlaneReachedJudge, ReachedConfig
from echo_guidance.guidance.stages import StageConfig, StageSwitch


class FakeBackend:
    """A backend answering a scripted action (and distance) for every frame, recording its calls."""

    def __init__(self, name, action, distance=None, size=32):
        self.model_id = name
        self.input_size = size
        self.planes = ('PLAX', 'PSAX-AV', 'PSAX-MV')
        self.action = np.asarray(action, dtype=float)
        self.distance = distance
        self.calls = 0
        self.outputs = ('action',) if distance is None else ('action', 'distance')

    def predict_all(self, image, plane_index):
        assert image.shape == (self.input_size, self.input_size)
        self.calls += 1
        out = {'action': self.action.copy()}
        if self.distance is not None:
            out['distance'] = float(self.distance)
        return out


def _frame():
    return np.full((64, 64), 80, np.uint8)


def test_the_stage_switch_hands_over_with_hysteresis():
    switch = StageSwitch(
        StageConfig(enter_mm=8, enter_deg=8, exit_mm=14, exit_deg=14, enter_frames=2, exit_frames=2)
    )
    near, between, far = [5, 0, 0, 0, 0, 0], [10, 0, 0, 0, 0, 0], [0, 0, 0, 0, 20, 0]
    assert switch.update(near) == 'coarse'  # one near frame is not enough
    assert switch.update(far) == 'coarse'
    assert [switch.update(near), switch.update(near)] == ['coarse', 'fine']
    assert switch.update(between) == 'fine'  # between the thresholds: stays
    assert [switch.update(far), switch.update(between), switch.update(far)] == ['fine', 'fine', 'fine']
    assert switch.update(far) == 'coarse'
    switch.update(near), switch.update(near)
    assert switch.stage == 'fine' and switch.update(None, valid=False) == 'coarse'
    assert StageSwitch(has_fine=False).update(near) == 'coarse'
    with pytest.raises(ValueError, match='must not be below'):
        StageConfig(enter_mm=10, exit_mm=5)
    with pytest.raises(ValueError, match='enter_frames'):
        StageConfig(enter_frames=0)


def test_the_engine_answers_with_the_fine_model_near_the_plane_and_the_coarse_one_far():
    coarse = FakeBackend('coarse', [3, 0, 0, 0, 0, 0])
    fine = FakeBackend('fine', [1, 0, 0, 0, 0, 0], distance=0.2, size=48)
    engine = GuidanceEngine(coarse, 'PLAX', fine_backend=fine, stages=StageConfig(enter_frames=2))
    pose = np.eye(4)
    stages = [engine.step(_frame(), pose, 0.1 * k).stage for k in range(5)]
    assert stages == ['coarse', 'coarse', 'fine', 'fine', 'fine']
    assert coarse.calls == 2 and fine.calls == 3
    result = engine.step(_frame(), pose, 0.6)
    assert result.model_id == 'coarse + fine' and np.allclose(result.raw_action, [1, 0, 0, 0, 0, 0])
    # The fine model says the plane is far: back to the coarse model once its fused answer says so
    # for exit_frames frames (the fused answer follows within a few frames).
    fine.action = coarse.action = np.array([30.0, 0, 0, 0, 0, 0])
    stages = [engine.step(_frame(), pose, 0.7 + 0.1 * k).stage for k in range(10)]
    assert stages[:4] == ['fine'] * 4 and stages[-3:] == ['coarse'] * 3
    # A new target plane starts coarse again.
    fine.action = np.zeros(6)
    engine.step(_frame(), pose, 2.0), engine.step(_frame(), pose, 2.1)
    engine.set_plane('PSAX-AV')
    assert engine.stage == 'coarse'


def test_the_stop_judgement_must_agree_before_plane_reached():
    config = ReachedConfig(enter_frames=2, max_distance=0.6, exit_distance=1.0, min_confidence=0.0)
    pose = np.eye(4)
    # The regressor says "zero" but the distance head says the probe is 1.5 windows away: not reached.
    judge = PlaneReachedJudge(config)
    flags = [judge.update(np.zeros(6), 1.0, distance=1.5, pose_mm=pose, stamp_s=0.1 * k) for k in range(5)]
    assert not any(flags) and judge.distance == pytest.approx(1.5)
    # Both agree: reached after enter_frames; the median of the still frames drives it.
    judge = PlaneReachedJudge(config)
    flags = [judge.update(np.zeros(6), 1.0, distance=0.3, pose_mm=pose, stamp_s=0.1 * k) for k in range(3)]
    assert flags == [False, True, True]
    # Frames taken elsewhere do not count: the probe moved 5 mm, so only the new frame's 1.4 is used.
    moved = np.eye(4)
    moved[0, 3] = 5.0
    flags = [
        judge.update(np.zeros(6), 1.0, distance=1.4, pose_mm=moved, stamp_s=0.4 + 0.1 * k) for k in range(3)
    ]
    assert judge.distance == pytest.approx(1.4) and flags[-1] is False
    # Without a distance (a model without the head) the action alone decides, as before.
    judge = PlaneReachedJudge(config)
    flags = [judge.update(np.zeros(6), 1.0) for _ in range(2)]
    assert flags == [False, True] and math.isnan(judge.distance)
    with pytest.raises(ValueError, match='exit_distance'):
        ReachedConfig(max_distance=1.0, exit_distance=0.5)


def test_the_engine_publishes_the_stop_distance_and_refuses_non_finite_ones():
    backend = FakeBackend('one', np.zeros(6), distance=0.25)
    engine = GuidanceEngine(backend, 'PLAX', fusion=FusionConfig(min_frames=1.0))
    result = engine.step(_frame(), np.eye(4), 0.0)
    assert result.valid and result.distance == pytest.approx(0.25) and result.stage == 'coarse'
    assert result.as_dict()['distance'] == pytest.approx(0.25)
    backend.distance = float('nan')
    result = engine.step(_frame(), np.eye(4), 0.1)
    assert not result.valid and 'not finite' in result.status


def test_a_frame_without_echo_gets_confidence_zero_and_no_model_call():
    from echo_guidance.guidance.echo import EchoConfig, echo_fraction, has_echo
    from echo_guidance.sim import Patient, ProbeConfig, ProbeRenderer

    patient = Patient.from_seed(3)
    renderer = ProbeRenderer(patient, ProbeConfig(width=64, height=64))
    target = patient.standard_plane_pose('PSAX-AV')
    lifted = target.copy()
    lifted[:3, 3] -= 4.0 * target[:3, 2]  # 4 mm off the skin: the probe has no acoustic contact
    on_skin, off_skin = renderer.render(target), renderer.render(lifted)
    config = EchoConfig()
    assert has_echo(on_skin, config) and not has_echo(off_skin, config)
    assert echo_fraction(off_skin) < config.min_fraction <= echo_fraction(on_skin)
    backend = FakeBackend('one', [1, 2, 3, 0, 0, 0])
    engine = GuidanceEngine(backend, 'PSAX-AV')
    result = engine.step(off_skin, np.eye(4), 0.0)
    assert result.valid and result.confidence == 0.0 and not result.plane_reached
    assert result.status.startswith('no echo in the frame') and backend.calls == 0
    assert engine.step(on_skin, np.eye(4), 0.1).status == '' and backend.calls == 1
    assert EchoConfig(min_fraction=0.0) and has_echo(off_skin, EchoConfig(min_fraction=0.0))
    with pytest.raises(ValueError, match='min_fraction'):
        EchoConfig(min_fraction=1.5)
