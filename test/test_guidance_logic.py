"""Plain-Python guidance logic: preprocessing, fusion, confidence, plane reached, engine, arrows, backends."""

import math

import numpy as np
import pytest
from guidance_helpers import trained_tiny_models, write_graph_model  # noqa: F401 (fixture)

from echo_guidance.geometry import action_to_matrix, invert_transform, relative_action
from echo_guidance.guidance import (
    BackendError,
    DeviceUnavailableError,
    FrameFormatError,
    FusionConfig,
    GuidanceEngine,
    ModelFileError,
    ReachedConfig,
    frame_from_image_fields,
    load_backend,
    prepare_frame,
)
from echo_guidance.guidance.fusion import PlaneReachedJudge, TemporalFusion, weighted_median, wrap_degrees
from echo_guidance.guidance.presentation import draw_overlay, guidance_graphics, rotation_views
from echo_guidance.planes import UnknownPlaneError

# --- frames ------------------------------------------------------------------------------------


def test_image_fields_become_a_frame_and_row_padding_is_dropped():
    rows = np.arange(3 * 6, dtype=np.uint8).reshape(3, 6)  # 4 pixels + 2 padding bytes per row
    frame = frame_from_image_fields('mono8', 3, 4, 6, rows.tobytes())
    assert frame.shape == (3, 4) and np.array_equal(frame, rows[:, :4])


@pytest.mark.parametrize(
    'fields, message',
    [
        (('rgb8', 2, 2, 6, bytes(12)), "encoding 'rgb8' is not supported"),
        (('mono16', 2, 2, 4, bytes(8)), 'mono8'),
        (('mono8', 2, 2, 2, bytes(3)), 'holds 3 bytes, expected height x step = 2 x 2 = 4'),
        (('mono8', 2, 4, 2, bytes(4)), 'step 2 is shorter than a row of 4'),
        (('mono8', 0, 4, 4, b''), 'empty'),
    ],
)
def test_bad_image_fields_are_refused_with_the_reason(fields, message):
    with pytest.raises(FrameFormatError, match=message):
        frame_from_image_fields(*fields)


def test_prepare_frame_is_the_training_resize_and_checks_the_expected_size():
    from echo_guidance.data.dataset import resize_frame

    rng = np.random.default_rng(0)
    for shape in [(480, 640), (40, 50), (128, 128)]:
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        assert np.array_equal(prepare_frame(frame, 128), resize_frame(frame, 128))
    with pytest.raises(
        FrameFormatError, match='frame is 640x480 pixels but the guidance is configured for 320x240'
    ):
        prepare_frame(rng.integers(0, 256, (480, 640), dtype=np.uint8), 128, expected_size=(320, 240))
    with pytest.raises(FrameFormatError, match='uint8'):
        prepare_frame(np.zeros((64, 64), np.float32), 64)


# --- fusion ------------------------------------------------------------------------------------


def _walk(n, rng=None):
    """Probe poses moving and turning around a fixed target; returns (target, poses, true actions)."""
    target = action_to_matrix([400.0, 20.0, 150.0, 170.0, 10.0, -100.0])
    t = np.arange(n) / 30.0
    offsets = np.column_stack(
        [25 * np.cos(t), 12 * np.sin(2 * t), 3 + 0 * t, 20 * np.sin(t), 8 + 0 * t, -30 * t]
    )
    poses = target[None] @ invert_transform(action_to_matrix(offsets))
    return target, poses, relative_action(poses, np.broadcast_to(target, poses.shape))


def test_perfect_past_predictions_moved_by_the_probe_motion_agree_exactly():
    _, poses, truth = _walk(60)
    fusion = TemporalFusion(FusionConfig(motion_scale_mm=0, motion_scale_deg=0))
    for k, (pose, action) in enumerate(zip(poses, truth)):
        estimate = fusion.update(k / 30.0, pose, action)
        # Every past prediction, carried into the current frame, is the current truth.
        assert np.allclose(estimate.action, action, atol=1e-6)
    assert estimate.frames_fused == 31  # the current frame and the 30 past ones kept (max_frames)
    assert np.all(estimate.spread < 1e-6) and estimate.confidence == pytest.approx(1.0)


def test_fusion_of_noisy_predictions_is_closer_to_the_truth_and_steadier():
    rng = np.random.default_rng(1)
    _, poses, truth = _walk(150)
    noise = rng.normal(0.0, [2, 2, 2, 3, 3, 3], truth.shape)
    fusion = TemporalFusion(FusionConfig(motion_scale_mm=0, motion_scale_deg=0))
    fused = np.array(
        [fusion.update(k / 30.0, p, a + e).action for k, (p, a, e) in enumerate(zip(poses, truth, noise))]
    )
    single_err = np.abs(noise[30:])
    fused_err = np.abs(wrap_degrees(fused - truth))[30:]
    assert fused_err.mean(axis=0).max() < 0.6 * single_err.mean(axis=0).min()
    jitter_single = np.abs(np.diff(noise[30:], axis=0)).mean()
    jitter_fused = np.abs(np.diff(fused[30:] - truth[30:], axis=0)).mean()
    assert jitter_fused < 0.3 * jitter_single


def test_motion_weighting_fuses_a_still_probe_fully_and_a_fast_one_hardly():
    rng = np.random.default_rng(2)
    on = FusionConfig(motion_scale_mm=1.0, motion_scale_deg=1.0)
    off = FusionConfig(motion_scale_mm=0.0, motion_scale_deg=0.0)
    # Still probe (0.05 mm / 0.03 deg sensor noise): both fuse all frames alike.
    still = action_to_matrix(
        np.concatenate([rng.normal(0, 0.05, (30, 3)), rng.normal(0, 0.03, (30, 3))], axis=1)
    )
    predictions = np.array([5.0, -3.0, 2.0, 4.0, -6.0, 8.0]) + rng.normal(0, 1.0, (30, 6))
    results = {}
    for name, config in (('on', on), ('off', off)):
        fusion = TemporalFusion(config)
        results[name] = [fusion.update(k / 30.0, p, a) for k, (p, a) in enumerate(zip(still, predictions))][
            -1
        ]
    assert np.allclose(results['on'].action, results['off'].action, atol=0.3)
    assert results['on'].confidence > 0.5
    # Probe sliding 10 mm per frame: old predictions barely count, the guidance is this frame's.
    _, poses, truth = _walk(30)
    moving = poses @ action_to_matrix(np.column_stack([10.0 * np.arange(30), np.zeros((30, 5))]))
    noisy = relative_action(moving, np.broadcast_to(poses[0], moving.shape)) + rng.normal(0, 2.0, (30, 6))
    for name, config in (('on', on), ('off', off)):
        fusion = TemporalFusion(config)
        results[name] = [fusion.update(k / 30.0, p, a).action for k, (p, a) in enumerate(zip(moving, noisy))]
    assert np.allclose(results['on'][-1], noisy[-1], atol=1e-3)
    assert not np.allclose(results['off'][-1], noisy[-1], atol=0.5)


def test_angles_near_180_degrees_are_fused_across_the_wrap():
    fusion = TemporalFusion(FusionConfig())
    pose = np.eye(4)
    for k, yaw in enumerate([179.0, -179.0, 179.5, -179.5, 179.0]):
        estimate = fusion.update(k / 30.0, pose, [0, 0, 0, 0, 0, yaw])
    assert abs(abs(estimate.action[5]) - 180.0) < 1.0, estimate.action
    assert estimate.spread[5] < 2.0


def test_without_a_pose_guidance_is_the_single_frame_and_time_going_back_resets():
    fusion = TemporalFusion(FusionConfig())
    for k in range(5):
        estimate = fusion.update(k / 30.0, None, [k, 0, 0, 0, 0, 0])
    assert estimate.action[0] == 4 and estimate.frames_fused == 1 and not estimate.motion_compensated
    assert len(fusion) == 5
    fusion.update(0.0, None, [0, 0, 0, 0, 0, 0])
    assert len(fusion) == 1


def test_weighted_median_and_config_validation():
    values = np.array([[1.0], [2.0], [10.0]])
    assert weighted_median(values, np.array([1.0, 1.0, 1.0]))[0] == 2.0
    assert weighted_median(values, np.array([1.0, 1.0, 5.0]))[0] == 10.0
    with pytest.raises(ValueError, match='fusion method'):
        FusionConfig(method='mode')
    with pytest.raises(ValueError, match='window_s'):
        FusionConfig(window_s=0.0)
    with pytest.raises(ValueError, match='exit thresholds'):
        ReachedConfig(enter_mm=5.0, exit_mm=4.0)


def test_plane_reached_has_hysteresis():
    judge = PlaneReachedJudge(
        ReachedConfig(
            enter_mm=5, enter_deg=5, exit_mm=7, exit_deg=7, enter_frames=3, exit_frames=2, min_confidence=0.5
        )
    )
    near, between, far = [3, 0, 0, 0, 0, 0], [6, 0, 0, 0, 0, 0], [9, 0, 0, 0, 0, 0]
    assert [judge.update(near, 0.9) for _ in range(3)] == [False, False, True]
    assert judge.update(between, 0.9) is True  # between the thresholds: stays reached
    assert judge.update(far, 0.9) is True  # one frame out is not enough
    assert judge.update(far, 0.9) is False
    assert [judge.update(near, 0.1) for _ in range(4)] == [False] * 4  # too little confidence
    assert judge.update([0, 0, 0, 0, 0, 6], 0.9) is False  # 6 deg is beyond the 5 deg to enter
    for _ in range(3):
        judge.update(near, 0.9)
    assert judge.reached and judge.update(near, 0.9, valid=False) is False


# --- engine ------------------------------------------------------------------------------------


def test_engine_publishes_no_guidance_for_nan_bad_frames_and_bad_poses(tmp_path):
    backend = load_backend(
        write_graph_model(tmp_path / 'nan.onnx', 'nan_when_dark', action=[1, 2, 3, 4, 5, 6])
    )
    assert 'non-finite' in backend.warm_up_warning
    from echo_guidance.guidance.echo import EchoConfig

    # The no-echo test off: this model's NaN answers come from dark frames.
    engine = GuidanceEngine(backend, 'PSAX-AV', expected_size=(80, 60), echo=EchoConfig(min_fraction=0.0))
    bright = np.full((60, 80), 200, np.uint8)
    ok = engine.step(bright, np.eye(4), 1.0)
    assert ok.valid and ok.plane == 'PSAX-AV' and ok.status == ''
    assert np.allclose(ok.raw_action, np.array([1, 2, 3, 4, 5, 6]) + math.sqrt(72), atol=1e-4)
    dark = engine.step(np.full((60, 80), 10, np.uint8), np.eye(4), 1.1)
    assert not dark.valid and dark.status.startswith('model output is not finite (NaN or inf)')
    assert np.all(dark.action == 0) and dark.confidence == 0 and not dark.plane_reached
    wrong_size = engine.step(np.full((64, 64), 200, np.uint8), np.eye(4), 1.2)
    assert not wrong_size.valid and 'configured for 80x60 frames' in wrong_size.status
    bad_pose = engine.step(bright, np.full((4, 4), np.nan), 1.3)
    assert bad_pose.valid and not bad_pose.pose_used and 'probe pose ignored' in bad_pose.pose_status
    assert not engine.step(bright, None, float('nan')).valid


def test_engine_plane_selection_is_validated_and_resets_the_history(tmp_path):
    engine = GuidanceEngine(load_backend(write_graph_model(tmp_path / 'c.onnx')), 'PLAX')
    for k in range(5):
        engine.step(np.full((64, 64), 100, np.uint8), np.eye(4), k / 30.0)
    assert len(engine.fusion) == 5
    with pytest.raises(UnknownPlaneError, match="unknown target plane 'A4C'"):
        engine.set_plane('A4C')
    assert engine.plane == 'PLAX' and len(engine.fusion) == 5
    engine.set_plane('PSAX-MV')
    assert engine.plane == 'PSAX-MV' and len(engine.fusion) == 0


def test_trained_model_runs_the_same_through_onnxruntime_and_torch(trained_tiny_models):  # noqa: F811
    onnx_backend = load_backend(trained_tiny_models['baseline'], 'onnxruntime-cpu')
    torch_backend = load_backend(trained_tiny_models['baseline_pt'], 'torch-cpu')
    assert onnx_backend.input_size == torch_backend.input_size == 64
    assert onnx_backend.model_id.endswith('/onnxruntime-cpu') and '@' in onnx_backend.model_id
    frame = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    for plane in range(3):
        assert np.allclose(onnx_backend.predict(frame, plane), torch_backend.predict(frame, plane), atol=1e-3)
    engine = GuidanceEngine(onnx_backend, 'PSAX-MV')
    result = engine.step(
        np.random.default_rng(1).integers(0, 256, (480, 640), dtype=np.uint8), np.eye(4), 0.0
    )
    assert result.valid and result.action.shape == (6,) and result.model_id == onnx_backend.model_id


# --- backends ----------------------------------------------------------------------------------


def test_missing_wrong_and_foreign_model_files_are_named(tmp_path, trained_tiny_models):  # noqa: F811
    with pytest.raises(ModelFileError, match='does not exist'):
        load_backend(tmp_path / 'absent.onnx')
    with pytest.raises(ModelFileError, match='no model file given'):
        load_backend('')
    with pytest.raises(ModelFileError, match='export the checkpoint first'):
        load_backend(trained_tiny_models['baseline_pt'], 'onnxruntime-cpu')
    with pytest.raises(ModelFileError, match='torch backends load the checkpoint'):
        load_backend(trained_tiny_models['baseline'], 'torch-cpu')
    with pytest.raises(ModelFileError, match='is not an echo-guidance export'):
        load_backend(write_graph_model(tmp_path / 'plain.onnx', metadata=False))
    garbage = tmp_path / 'garbage.onnx'
    garbage.write_bytes(b'not a model')
    with pytest.raises(ModelFileError, match='cannot load ONNX model'):
        load_backend(garbage)
    with pytest.raises(BackendError, match='unknown backend'):
        load_backend(garbage, 'tensorrt')


def test_cuda_backends_say_clearly_that_cuda_is_absent(tmp_path, trained_tiny_models):  # noqa: F811
    import onnxruntime
    import torch

    if torch.cuda.is_available() or 'CUDAExecutionProvider' in onnxruntime.get_available_providers():
        pytest.skip('this machine has CUDA: the error path cannot be exercised')
    with pytest.raises(DeviceUnavailableError, match='torch-cuda: no CUDA device is available'):
        load_backend(trained_tiny_models['baseline_pt'], 'torch-cuda')
    with pytest.raises(DeviceUnavailableError, match='onnxruntime-cuda needs ONNX Runtime with CUDA'):
        load_backend(trained_tiny_models['baseline'], 'onnxruntime-cuda')


def test_int8_copy_keeps_metadata_and_reports_its_error(tmp_path, trained_tiny_models):  # noqa: F811
    from echo_guidance.guidance.quantize import QuantizationError, frames_from_dataset, quantize_model

    calibration = frames_from_dataset(trained_tiny_models['dataset'], 64, 16, 'train')
    check = frames_from_dataset(trained_tiny_models['dataset'], 64, 16, 'val', seed=1)
    out = tmp_path / 'tiny_int8.onnx'
    record = quantize_model(trained_tiny_models['dreamer'], out, calibration, check)
    backend = load_backend(out)
    assert backend.quantization['vs_float']['frames'] == 16
    assert backend.quantization['calibration_frames'] == 16 and len(record['vs_float']['mean_abs']) == 6
    assert backend.input_size == 64 and backend.planes == ('PLAX', 'PSAX-AV', 'PSAX-MV')
    # The int8 graph computes nearly the same actions (the tiny model's outputs are a few mm / deg).
    assert max(record['vs_float']['mean_abs']) < 1.0
    with pytest.raises(QuantizationError, match='already quantized'):
        quantize_model(out, tmp_path / 'twice.onnx', calibration, check)


# --- what the sonographer sees -----------------------------------------------------------------


@pytest.mark.parametrize(
    'offset, check',
    [
        (
            [10, 0, 0, 0, 0, 0],
            lambda g: g['image'][0]['to'][0] > 0.6 and abs(g['image'][0]['to'][1] - 0.5) < 1e-6,
        ),
        ([-10, 0, 0, 0, 0, 0], lambda g: g['image'][0]['to'][0] < 0.4),
        ([0, 0, 8, 0, 0, 0], lambda g: g['image'][0]['to'][1] > 0.6),  # deeper: arrow down the image
        ([0, 6, 0, 0, 0, 0], lambda g: g['image'][0]['kind'] == 'dot'),  # +y: out of the screen
        ([0, -6, 0, 0, 0, 0], lambda g: g['image'][0]['kind'] == 'cross'),
        (
            [0, 0, 0, 0, 15, 0],
            lambda g: g['views']['rock'] == pytest.approx(15, abs=0.5) and g['image'][0]['end_deg'] < 90,
        ),  # beam swings toward image right
        ([0, 0, 0, 15, 0, 0], lambda g: g['views']['tilt'] == pytest.approx(-15, abs=0.5)),
        (
            [0, 0, 0, 0, 0, 20],
            lambda g: (
                g['views']['rotate'] == pytest.approx(20, abs=0.5) and 'clockwise' in g['instructions'][0]
            ),
        ),
        ([0.3, 0.2, 0.1, 0.4, 0.3, 0.2], lambda g: g['image'] == [] and g['instructions'] == []),
    ],
)
def test_arrows_for_known_simulated_poses(offset, check):
    """The probe is put at a known offset from a virtual patient's PLAX pose; the arrows show the way back."""
    from echo_guidance.display.demo import probe_pose_for_offset
    from echo_guidance.sim import Patient

    patient = Patient.from_seed(3)
    target = patient.standard_plane_pose('PLAX')
    probe = probe_pose_for_offset(target, offset)
    truth = relative_action(probe, target)
    assert np.allclose(truth, offset, atol=1e-9)
    # Moving by the shown translation (in the probe frame) brings the probe to the target's position.
    graphics = guidance_graphics(truth)
    assert check(graphics), graphics
    reached = probe @ action_to_matrix(truth)
    assert np.allclose(reached, target, atol=1e-9)


def test_rotation_views_match_the_conventions_for_single_axis_rotations():
    assert rotation_views([0, 0, 0, 0, 10, 0]) == pytest.approx((10, 0, 0), abs=1e-9)
    assert rotation_views([0, 0, 0, 10, 0, 0]) == pytest.approx((0, -10, 0), abs=1e-9)
    assert rotation_views([0, 0, 0, 0, 0, 10]) == pytest.approx((0, 0, 10), abs=1e-9)


def test_overlay_draws_arrows_where_the_guidance_points(tmp_path):
    from echo_guidance.guidance.presentation import TRANSLATION_COLOUR

    engine = GuidanceEngine(load_backend(write_graph_model(tmp_path / 'c.onnx', action=[-12, 0, 0, 0, 0, 0])))
    first = engine.step(np.full((128, 128), 60, np.uint8), None, 0.0)
    assert first.confidence < 0.5  # one frame: no agreement yet, so no arrows (the page's rule)
    overlay = draw_overlay(np.full((128, 128), 60, np.uint8), first)
    assert not np.any(np.all(np.abs(overlay.astype(int) - TRANSLATION_COLOUR) < 10, axis=2))
    for k in range(1, 5):
        result = engine.step(np.full((128, 128), 60, np.uint8), None, k / 30)
    assert result.confidence > 0.9
    overlay = draw_overlay(np.full((128, 128), 60, np.uint8), result)
    assert overlay.shape == (384, 384, 3) and overlay.dtype == np.uint8
    green = np.all(np.abs(overlay.astype(int) - TRANSLATION_COLOUR) < 10, axis=2)
    rows, cols = np.nonzero(green)
    assert cols.size > 50 and cols.mean() < 192 - 20  # the arrow points to image left (-x)
    invalid = engine.no_guidance(0.1, 'frame refused: test')
    overlay = draw_overlay(np.full((128, 128), 60, np.uint8), invalid)
    assert not np.any(np.all(np.abs(overlay.astype(int) - TRANSLATION_COLOUR) < 10, axis=2))


# --- pose at a frame's stamp -------------------------------------------------------------------


def test_pose_lookup_interpolates_between_the_samples_around_the_frame_like_sync():
    from echo_guidance.geometry import rotation_to_quaternion
    from echo_guidance.guidance.pose_lookup import pose_at_stamp
    from echo_guidance.sync import PoseBuffer

    poses = action_to_matrix(np.column_stack([np.arange(5.0), np.zeros(5), np.zeros(5),
                                              np.zeros(5), np.zeros(5), 10.0 * np.arange(5)]))
    stamps = 100.0 + 0.001 * np.arange(5)
    samples = [(t, *(T[:3, 3] / 1000.0), *rotation_to_quaternion(T[:3, :3])) for t, T in zip(stamps, poses)]
    buffer = PoseBuffer(tolerance_s=0.002)
    for t, T in zip(stamps, poses):
        buffer.add(t, T)
    for t in (100.0015, 100.002, 100.0):
        pose, reason, _ = pose_at_stamp(samples, t, 0.002)
        assert reason == '' and np.allclose(pose, buffer.pose_at(t).T_mm, atol=1e-9)
    # Before the first sample: refused with sync's reason. Just after the last one: held (live frames).
    pose, reason, _ = pose_at_stamp(samples, 99.9, 0.002)
    assert pose is None and reason == buffer.pose_at(99.9).reason
    pose, reason, _ = pose_at_stamp(samples, 100.0055, 0.002)
    assert reason == '' and np.allclose(pose, poses[-1])
    pose, reason, _ = pose_at_stamp(samples, 100.1, 0.002)
    assert pose is None and 'within 0.002 s' in reason
    bad = samples[:2] + [(samples[2][0], np.nan, 0, 0, 0, 0, 0, 1)] + samples[3:]
    pose, reason, rejected = pose_at_stamp(bad, 100.0015, 0.002)
    assert pose is None and rejected == 1 and 'non-finite' in reason
    assert pose_at_stamp([], 1.0, 0.002)[1] == 'no pose sample received yet'


def test_the_node_parameters_fill_every_fusion_and_reached_field():
    import dataclasses

    from echo_guidance.guidance.fusion import FusionConfig, ReachedConfig
    from echo_guidance.nodes.guidance import PARAMETERS, fusion_config, reached_config

    params = {spec.name: spec.default for spec in PARAMETERS}
    for config_class, prefix in ((FusionConfig, 'fusion'), (ReachedConfig, 'reached')):
        names = {f.name for f in dataclasses.fields(config_class)}
        declared = {k.split('.', 1)[1] for k in params if k.startswith(prefix + '.')}
        assert names <= declared, f'{prefix} fields without a node parameter: {names - declared}'
    params.update({'fusion.window_s': 2.5, 'fusion.confidence_scale': [1.0, 2, 3, 4, 5, 6]})
    params.update({'reached.enter_mm': 2.0, 'reached.exit_frames': 9})
    fusion, reached = fusion_config(params), reached_config(params)
    assert fusion.window_s == 2.5 and fusion.confidence_scale == (1.0, 2, 3, 4, 5, 6)
    assert reached.enter_mm == 2.0 and reached.exit_frames == 9
