"""Pose synchronisation at frame times: interpolation accuracy, stale and missing poses flagged."""

import numpy as np
import pytest

from echo_guidance import geometry as g
from echo_guidance.sync import PoseBuffer, PoseSampleError, synchronise


def trajectory(t):
    """An analytic probe motion: translation in mm, rotation in degrees, smooth in time."""
    t = np.asarray(t, dtype=float)
    return np.stack([20 * np.sin(t), 15 * np.cos(0.7 * t), 3 * t, 25 * np.sin(0.5 * t), 10 * np.sin(t),
                     40 * np.sin(0.3 * t)], axis=-1)


@pytest.fixture
def stream():
    stamps = np.arange(0.0, 3.0, 0.001)
    return stamps, g.action_to_matrix(trajectory(stamps))


def test_interpolated_pose_is_accurate_between_1khz_samples(stream):
    stamps, poses = stream
    buf = PoseBuffer(max_age_s=5.0)
    for t, T in zip(stamps, poses):
        buf.add(t, T)
    frames = np.arange(0.1, 2.9, 1 / 30) + 0.00037
    errors_mm, errors_deg = [], []
    for t in frames:
        result = buf.pose_at(t)
        assert result.valid, result.reason
        assert 0 <= result.gap_before_s <= 0.001 and 0 <= result.gap_after_s <= 0.001
        truth = g.action_to_matrix(trajectory(t))
        errors_mm.append(g.translation_error_mm(result.T_mm, truth))
        errors_deg.append(g.geodesic_rotation_error_deg(result.T_mm, truth))
    # Interpolating a smooth motion over 1 ms: far below the recorder's 0.1 mm / 0.05 deg budget.
    assert max(errors_mm) < 1e-3
    assert max(errors_deg) < 1e-3


def test_exact_sample_hit_returns_the_sample(stream):
    stamps, poses = stream
    out, valid, before, after = synchronise(stamps[100:103], stamps, poses)
    assert valid.all()
    np.testing.assert_allclose(out, poses[100:103])
    np.testing.assert_array_equal(before, 0.0)


def test_missing_pose_on_either_side_is_flagged(stream):
    stamps, poses = stream
    buf = PoseBuffer()
    for t, T in zip(stamps[:1000], poses[:1000]):
        buf.add(t, T)
    after_end = buf.pose_at(1.5)
    assert not after_end.valid and after_end.T_mm is None
    assert 'no pose sample after the frame' in after_end.reason
    before_start = buf.pose_at(-0.01)
    assert not before_start.valid and 'no pose sample before the frame' in before_start.reason


def test_stale_pose_around_a_gap_is_not_paired(stream):
    stamps, poses = stream
    keep = (stamps < 1.0) | (stamps > 1.02)  # a 20 ms gap in the arm stream
    frames = [0.995, 1.01, 1.025]
    out, valid, before, after = synchronise(frames, stamps[keep], poses[keep], tolerance_s=0.005)
    assert valid.tolist() == [True, False, True]
    assert np.isnan(out[1]).all()
    assert before[1] == pytest.approx(0.011, abs=1e-9) and after[1] == pytest.approx(0.011, abs=1e-9)
    buf = PoseBuffer(tolerance_s=0.005)
    for t, T in zip(stamps[keep], poses[keep]):
        buf.add(t, T)
    result = buf.pose_at(1.01)
    assert not result.valid
    assert 'tolerance' in result.reason


def test_tolerance_boundary(stream):
    stamps, poses = stream
    sparse = stamps[::10]  # 100 Hz
    _, valid, _, _ = synchronise([1.0045, 1.0035], sparse, poses[::10], tolerance_s=0.006)
    assert valid.tolist() == [True, False]  # 1.0035 is 6.5 ms before the next sample


def test_buffer_and_array_versions_agree(stream):
    stamps, poses = stream
    rng = np.random.default_rng(3)
    keep = rng.uniform(size=len(stamps)) > 0.3
    keep[1500:1530] = False
    buf = PoseBuffer(max_age_s=10.0)
    for t, T in zip(stamps[keep], poses[keep]):
        buf.add(t, T)
    frames = rng.uniform(-0.1, 3.1, 300)
    out, valid, before, after = synchronise(frames, stamps[keep], poses[keep])
    for i, t in enumerate(frames):
        r = buf.pose_at(t)
        assert r.valid == valid[i]
        assert r.gap_before_s == pytest.approx(before[i]) and r.gap_after_s == pytest.approx(after[i])
        if r.valid:
            np.testing.assert_allclose(r.T_mm, out[i], atol=1e-9)


def test_buffer_drops_old_samples_and_is_bounded(stream):
    stamps, poses = stream
    buf = PoseBuffer(max_age_s=0.5)
    for t, T in zip(stamps, poses):
        buf.add(t, T)
    assert len(buf) <= 502
    assert not buf.pose_at(1.0).valid
    assert buf.has_sample_after(2.999) and not buf.has_sample_after(3.5)


def test_bad_samples_are_rejected(stream):
    stamps, poses = stream
    buf = PoseBuffer()
    buf.add(1.0, poses[0])
    with pytest.raises(PoseSampleError, match='not newer'):
        buf.add(1.0, poses[1])
    with pytest.raises(PoseSampleError, match='NaN'):
        buf.add(2.0, np.full((4, 4), np.nan))
    with pytest.raises(PoseSampleError, match='orthonormal'):
        buf.add(2.0, np.diag([2.0, 1, 1, 1]))
    with pytest.raises(PoseSampleError, match='not finite'):
        buf.add(float('nan'), poses[0])
    assert len(buf) == 1
    with pytest.raises(ValueError, match='tolerance_s'):
        PoseBuffer(tolerance_s=0)
    with pytest.raises(PoseSampleError, match='strictly increasing'):
        synchronise([0.5], [1.0, 0.0], poses[:2])
