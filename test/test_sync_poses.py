"""Pose synchronisation at frame times: interpolation accuracy, stale and missing poses flagged."""

import numpy as np
import pytest

from echo_guidance import geometry as g
from echo_guidance.sync import NO_SAMPLE, PoseBuffer, PoseSampleError, describe_gaps, synchronise


def trajectory(t):
    """Return an analytic probe motion as actions: translation in mm, rotation in degrees, smooth in time."""
    t = np.asarray(t, dtype=float)
    return np.stack([20 * np.sin(t), 15 * np.cos(0.7 * t), 3 * t, 25 * np.sin(0.5 * t), 10 * np.sin(t),
                     40 * np.sin(0.3 * t)], axis=-1)


@pytest.fixture
def stream():
    stamps = np.arange(3000) * 0.001
    return stamps, g.action_to_matrix(trajectory(stamps))


def filled(stamps, poses, **kwargs):
    buf = PoseBuffer(**kwargs)
    for t, T in zip(stamps, poses):
        buf.add(t, T)
    return buf


def test_interpolated_pose_is_accurate_between_1khz_samples(stream):
    stamps, poses = stream
    buf = filled(stamps, poses, max_age_s=5.0)
    frames = np.arange(0.1, 2.9, 1 / 30) + 0.00037
    errors_mm, errors_deg = [], []
    for t in frames:
        result = buf.pose_at(t)
        assert result.valid and result.reason == ''
        assert 0 <= result.gap_before_s <= 0.001 and 0 <= result.gap_after_s <= 0.001
        truth = g.action_to_matrix(trajectory(t))
        errors_mm.append(g.translation_error_mm(result.T_mm, truth))
        errors_deg.append(g.geodesic_rotation_error_deg(result.T_mm, truth))
    # Interpolating a smooth motion over 1 ms: far below the recorder's 0.1 mm / 0.05 deg budget.
    assert max(errors_mm) < 1e-3
    assert max(errors_deg) < 1e-3
    # and it beats taking the nearest sample by orders of magnitude
    nearest = poses[np.round(frames * 1000).astype(int)]
    truth = g.action_to_matrix(trajectory(frames))
    assert np.max(g.translation_error_mm(nearest, truth)) > 100 * max(errors_mm)


def test_interpolation_is_exact_for_constant_velocity_motion():
    # Constant linear and angular velocity about a fixed axis: linear + SLERP is exact.
    stamps = np.arange(0, 0.1, 0.002)
    zero = 0 * stamps
    actions = np.column_stack([50 * stamps, -20 * stamps, 3 + zero, zero, zero, 300 * stamps])
    out, valid, _, _ = synchronise([0.0131, 0.0517], stamps, g.action_to_matrix(actions))
    assert valid.all()
    np.testing.assert_allclose(g.matrix_to_action(out), [[0.655, -0.262, 3, 0, 0, 3.93],
                                                         [2.585, -1.034, 3, 0, 0, 15.51]], atol=1e-9)


def test_exact_sample_hit_returns_the_sample(stream):
    stamps, poses = stream
    out, valid, before, after = synchronise(stamps[100:103], stamps, poses)
    assert valid.all()
    np.testing.assert_array_equal(out, poses[100:103])
    np.testing.assert_array_equal(before, 0.0)
    np.testing.assert_array_equal(after, 0.0)
    result = filled(stamps[:200], poses[:200]).pose_at(stamps[150])
    assert result.valid and result.gap_before_s == 0 and result.gap_after_s == 0
    np.testing.assert_array_equal(result.T_mm, poses[150])
    # the very first and last samples are exact hits too
    assert synchronise([stamps[0], stamps[-1]], stamps, poses)[1].all()


def test_missing_pose_on_either_side_is_flagged(stream):
    stamps, poses = stream
    buf = filled(stamps[:1000], poses[:1000])
    after_end = buf.pose_at(1.5)
    assert not after_end.valid and after_end.T_mm is None
    assert after_end.gap_after_s == NO_SAMPLE and after_end.gap_before_s == pytest.approx(0.501)
    assert after_end.reason.endswith('; no pose sample after the frame')
    before_start = buf.pose_at(-0.01)
    assert not before_start.valid and before_start.reason.startswith('no pose sample before the frame;')
    assert PoseBuffer().pose_at(1.0).reason == 'no pose sample received yet'
    _, valid, before, after = synchronise([-0.01, 1.5], stamps[:1000], poses[:1000])
    assert not valid.any() and before[0] == NO_SAMPLE and after[1] == NO_SAMPLE
    out, valid, before, after = synchronise([0.5], [], np.zeros((0, 4, 4)))
    assert not valid[0] and np.isnan(out).all() and before[0] == after[0] == NO_SAMPLE


def test_stale_pose_around_a_gap_is_not_paired(stream):
    stamps, poses = stream
    keep = (stamps < 1.0) | (stamps > 1.02)  # a 20 ms gap in the arm stream
    frames = [0.995, 1.01, 1.025]
    out, valid, before, after = synchronise(frames, stamps[keep], poses[keep], tolerance_s=0.005)
    assert valid.tolist() == [True, False, True]
    assert np.isnan(out[1]).all()
    assert before[1] == pytest.approx(0.011, abs=1e-9) and after[1] == pytest.approx(0.011, abs=1e-9)
    result = filled(stamps[keep], poses[keep], tolerance_s=0.005).pose_at(1.01)
    assert not result.valid and result.T_mm is None
    assert result.reason == ('no pose sample before the frame within 0.005 s (last one 0.0110 s before it); '
                             'no pose sample after the frame within 0.005 s (next one 0.0110 s after it)')
    assert describe_gaps(before[1], after[1], 0.005) == result.reason


def test_stale_on_one_side_only(stream):
    stamps, poses = stream
    keep = (stamps < 1.0) | (stamps > 1.02)
    result = filled(stamps[keep], poses[keep], tolerance_s=0.005).pose_at(1.018)  # 2 ms before the next
    assert not result.valid
    assert result.reason == 'no pose sample before the frame within 0.005 s (last one 0.0190 s before it)'


def test_tolerance_boundary_is_inclusive():
    # Binary fractions so that the gaps are exact: samples every 1/64 s, tolerance 1/128 s.
    stamps = np.arange(10) / 64
    poses = g.action_to_matrix(trajectory(stamps))
    tol = 1 / 128
    frames = [3 / 64 + tol,  # exactly in the middle: both gaps equal the tolerance -> valid
              3 / 64 + tol + 2 ** -20]  # just over it on the "before" side -> invalid
    _, valid, before, after = synchronise(frames, stamps, poses, tolerance_s=tol)
    assert before[0] == tol and after[0] == tol
    assert valid.tolist() == [True, False]
    _, valid, _, _ = synchronise(frames, stamps, poses, tolerance_s=tol - 2 ** -20)
    assert valid.tolist() == [False, False]
    assert filled(stamps, poses, tolerance_s=tol).pose_at(frames[0]).valid
    assert not filled(stamps, poses, tolerance_s=tol).pose_at(frames[1]).valid
    assert not filled(stamps, poses, tolerance_s=tol - 2 ** -20).pose_at(frames[0]).valid


def test_tolerance_boundary_at_100hz(stream):
    stamps, poses = stream
    _, valid, _, _ = synchronise([1.0045, 1.0035], stamps[::10], poses[::10], tolerance_s=0.006)
    assert valid.tolist() == [True, False]  # 1.0035 is 6.5 ms before the next sample


@pytest.mark.parametrize('capacity', [None, 700])
def test_buffer_and_array_versions_agree(stream, capacity):
    # capacity 700 makes the ring wrap around many times, so lookups cross its seam.
    stamps, poses = stream
    rng = np.random.default_rng(3)
    keep = rng.uniform(size=len(stamps)) > 0.3
    keep[1500:1530] = False
    buf = filled(stamps[keep], poses[keep], max_age_s=10.0, capacity=capacity)
    held = slice(-len(buf), None)
    oldest_held = stamps[keep][-len(buf)]
    frames = np.concatenate([rng.uniform(-0.1, 3.1, 400), stamps[keep][-50:], oldest_held + [-1e-4, 0]])
    out, valid, before, after = synchronise(frames, stamps[keep][held], poses[keep][held])
    assert valid.sum() > 50
    for i, t in enumerate(frames):
        r = buf.pose_at(t)
        assert r.valid == valid[i]
        assert r.gap_before_s == before[i] and r.gap_after_s == after[i]
        if r.valid:
            np.testing.assert_array_equal(r.T_mm, out[i])
        else:
            assert np.isnan(out[i]).all()
            assert r.reason.startswith(describe_gaps(before[i], after[i], buf.tolerance_s))


def test_buffer_drops_old_samples_and_is_bounded(stream):
    stamps, poses = stream
    buf = filled(stamps, poses, max_age_s=0.5)
    assert len(buf) == 501
    assert buf.oldest_stamp == pytest.approx(2.499) and buf.newest_stamp == pytest.approx(2.999)
    assert buf.discarded == len(stamps) - 501
    old = buf.pose_at(1.0)
    assert not old.valid and 'pose history kept only back to 2.499' in old.reason
    assert buf.pose_at(2.7).valid
    assert buf.has_sample_after(2.999) and not buf.has_sample_after(3.5)
    small = filled(stamps, poses, max_age_s=5.0, capacity=100)
    assert len(small) == 100 and small.oldest_stamp == pytest.approx(2.9)


def test_out_of_order_and_bad_samples_are_rejected_and_counted(stream):
    stamps, poses = stream
    buf = PoseBuffer()
    buf.add(1.0, poses[0])
    with pytest.raises(PoseSampleError, match='not newer than the last one'):
        buf.add(1.0, poses[1])
    with pytest.raises(PoseSampleError, match='not newer'):
        buf.add(0.5, poses[1])
    with pytest.raises(PoseSampleError, match='NaN'):
        buf.add(2.0, np.full((4, 4), np.nan))
    with pytest.raises(PoseSampleError, match='orthonormal'):
        buf.add(2.0, np.diag([2.0, 1, 1, 1]))
    with pytest.raises(PoseSampleError, match='determinant'):
        buf.add(2.0, np.diag([1.0, 1, -1, 1]))
    with pytest.raises(PoseSampleError, match='one 4x4 pose'):
        buf.add(2.0, poses[:2])
    with pytest.raises(PoseSampleError, match='not finite'):
        buf.add(float('nan'), poses[0])
    with pytest.raises(PoseSampleError, match='number of seconds'):
        buf.add('soon', poses[0])
    assert len(buf) == 1 and buf.rejected == 8
    assert isinstance(PoseSampleError('x'), ValueError)
    buf.add(1.001, poses[1])  # the buffer still works after refusals
    assert buf.pose_at(1.0005).valid
    assert not buf.pose_at(float('nan')).valid


def test_bad_arguments():
    poses = g.action_to_matrix(trajectory(np.arange(3) * 0.001))
    for bad in (0, -1, float('nan')):
        with pytest.raises(ValueError, match='tolerance_s must be a positive'):
            PoseBuffer(tolerance_s=bad)
        with pytest.raises(ValueError, match='tolerance_s must be a positive'):
            synchronise([0.0], [0.0], poses[:1], tolerance_s=bad)
    with pytest.raises(ValueError, match='max_age_s'):
        PoseBuffer(max_age_s=0)
    with pytest.raises(PoseSampleError, match=r'sample 1 \(0\.000000 s\) is not after sample 0'):
        synchronise([0.5], [1.0, 0.0], poses[:2])
    with pytest.raises(PoseSampleError, match='strictly increasing'):
        synchronise([0.5], [0.0, 0.0], poses[:2])
    with pytest.raises(g.GeometryError, match=r'3 pose stamps need poses of shape \(3, 4, 4\)'):
        synchronise([0.5], [0.0, 0.1, 0.2], poses[:2])
    with pytest.raises(g.GeometryError, match='not orthonormal'):
        synchronise([0.5], [0.0, 0.1], np.stack([np.eye(4), np.diag([1, 2, 1, 1.0])]))
    with pytest.raises(ValueError, match='frame_stamps_s contains 1 NaN'):
        synchronise([np.nan], [0.0], poses[:1])
    with pytest.raises(PoseSampleError, match='pose_stamps_s contains 1 NaN'):
        synchronise([0.0], [np.nan], poses[:1])
