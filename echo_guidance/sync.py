"""The probe pose at a frame's acquisition time, from the stream of arm pose samples.

A frame is paired with a pose only when pose samples lie within the tolerance on BOTH sides of its
stamp; the pose is then interpolated between them (linear translation, SLERP rotation, see
echo_guidance.geometry.interpolate_pose). Otherwise the frame is flagged invalid, never paired with
a stale pose (docs/conventions.md, "Time and synchronisation").

Two entry points that must agree (a test checks): PoseBuffer for live streams (the recorder node)
and ``synchronise`` for whole arrays (the simulator and the dataset builder).
"""

from dataclasses import dataclass

import numpy as np

from echo_guidance.geometry import GeometryError, check_transform, interpolate_pose

DEFAULT_TOLERANCE_S = 0.005
"""Largest allowed gap between a frame stamp and the pose sample on each side (5 ms, 5 samples at 1 kHz)."""


class PoseSampleError(ValueError):
    """A pose sample that cannot enter the buffer (NaN, non-rigid, or not newer than the last one)."""


@dataclass(frozen=True)
class SyncResult:
    """The pose at one frame time: T_mm is None unless valid."""

    T_mm: object
    valid: bool
    gap_before_s: float
    gap_after_s: float
    reason: str = ''


def _describe(valid_before, valid_after, gap_before, gap_after, tolerance_s):
    if valid_before and valid_after:
        return ''
    parts = []
    if not valid_before:
        parts.append('no pose sample before the frame' if gap_before < 0 else
                     f'last pose sample {gap_before:.4f} s before the frame (tolerance {tolerance_s:g} s)')
    if not valid_after:
        parts.append('no pose sample after the frame' if gap_after < 0 else
                     f'next pose sample {gap_after:.4f} s after the frame (tolerance {tolerance_s:g} s)')
    return '; '.join(parts)


class PoseBuffer:
    """A bounded, time-ordered buffer of (stamp, 4x4 mm) pose samples with interpolation at frame times.

    Samples must arrive in strictly increasing stamp order (a 1 kHz arm stream does); an equal or
    older stamp raises PoseSampleError so the caller can count it, instead of corrupting the order.
    Samples older than ``max_age_s`` behind the newest are dropped. Storage is a pair of NumPy ring
    arrays, so lookups are a binary search and adding a sample allocates nothing.
    """

    def __init__(self, max_age_s=5.0, tolerance_s=DEFAULT_TOLERANCE_S, capacity=None):
        """Keep samples for ``max_age_s`` seconds; pair frames within ``tolerance_s`` on both sides."""
        if not max_age_s > 0:
            raise ValueError(f'max_age_s must be positive, got {max_age_s!r}')
        if not tolerance_s > 0:
            raise ValueError(f'tolerance_s must be positive, got {tolerance_s!r}')
        self.max_age_s = float(max_age_s)
        self.tolerance_s = float(tolerance_s)
        # Room for max_age_s at up to 2 kHz; older samples are overwritten first.
        self._capacity = int(capacity or max(16, int(self.max_age_s * 2000) + 16))
        self._stamps = np.empty(self._capacity)
        self._poses = np.empty((self._capacity, 4, 4))
        self._start = 0
        self._size = 0

    def __len__(self):
        """Number of samples held."""
        return self._size

    @property
    def newest_stamp(self):
        """Stamp (s) of the newest sample, or None when empty."""
        if self._size == 0:
            return None
        return float(self._stamps[(self._start + self._size - 1) % self._capacity])

    def add(self, stamp_s, T_mm):
        """Add one sample; raise PoseSampleError for NaN, non-rigid or out-of-order samples."""
        stamp_s = float(stamp_s)
        if not np.isfinite(stamp_s):
            raise PoseSampleError(f'pose stamp is not finite: {stamp_s}')
        try:
            T = check_transform(T_mm, 'pose sample')
        except GeometryError as exc:
            raise PoseSampleError(str(exc)) from None
        if T.shape != (4, 4):
            raise PoseSampleError(f'add() takes one 4x4 pose, got shape {T.shape}')
        newest = self.newest_stamp
        if newest is not None and stamp_s <= newest:
            raise PoseSampleError(f'pose sample at {stamp_s:.6f} s is not newer than the last one '
                                  f'({newest:.6f} s): samples must arrive in time order')
        if self._size == self._capacity:
            self._start = (self._start + 1) % self._capacity
            self._size -= 1
        end = (self._start + self._size) % self._capacity
        self._stamps[end] = stamp_s
        self._poses[end] = T
        self._size += 1
        self._drop_older_than(stamp_s - self.max_age_s)

    def _drop_older_than(self, oldest_kept_s):
        while self._size and self._stamps[self._start] < oldest_kept_s:
            self._start = (self._start + 1) % self._capacity
            self._size -= 1

    def pose_at(self, stamp_s):
        """Interpolated pose at ``stamp_s`` as a SyncResult (invalid, with a reason, when not bracketed)."""
        t = float(stamp_s)
        ring = (self._start + np.arange(self._size)) % self._capacity
        stamps = self._stamps[ring]
        # Only the samples around t matter: hand those (at most three) to the array version.
        i = int(np.searchsorted(stamps, t, side='left'))
        window = ring[max(i - 1, 0):i + 2]
        return _sync_one(t, self._stamps[window], self._poses[window], self.tolerance_s)

    def has_sample_after(self, stamp_s):
        """True when a sample at or after ``stamp_s`` has arrived (the frame can be synchronised now)."""
        newest = self.newest_stamp
        return newest is not None and newest >= stamp_s


def _sync_one(t, stamps, poses, tolerance_s):
    poses_out, valid, before, after = synchronise([t], stamps, poses, tolerance_s)
    reason = _describe(before[0] >= 0 and before[0] <= tolerance_s, after[0] >= 0 and after[0] <= tolerance_s,
                       before[0], after[0], tolerance_s)
    return SyncResult(poses_out[0] if valid[0] else None, bool(valid[0]), float(before[0]), float(after[0]),
                      reason)


def synchronise(frame_stamps_s, pose_stamps_s, poses_mm, tolerance_s=DEFAULT_TOLERANCE_S):
    """Poses at many frame times at once.

    Args:
        frame_stamps_s: (N,) frame acquisition times, seconds.
        pose_stamps_s: (M,) strictly increasing pose sample times, seconds.
        poses_mm: (M, 4, 4) pose samples in millimetres.
        tolerance_s: largest allowed gap to the sample on each side.

    Returns:
        (poses (N, 4, 4) with NaN where invalid, valid (N,) bool, gap_before (N,), gap_after (N,)); a
        gap is -1 where there is no sample on that side. A frame exactly on a sample takes that sample.
    """
    t = np.asarray(frame_stamps_s, dtype=np.float64).reshape(-1)
    ps = np.asarray(pose_stamps_s, dtype=np.float64).reshape(-1)
    n = len(t)
    out = np.full((n, 4, 4), np.nan)
    valid = np.zeros(n, dtype=bool)
    gap_before = np.full(n, -1.0)
    gap_after = np.full(n, -1.0)
    if len(ps) == 0 or n == 0:
        return out, valid, gap_before, gap_after
    poses = check_transform(poses_mm, 'pose samples')
    if poses.shape != (len(ps), 4, 4):
        raise GeometryError(f'{len(ps)} pose stamps but poses of shape {poses.shape}')
    if np.any(np.diff(ps) <= 0):
        raise PoseSampleError('pose stamps must be strictly increasing')
    # after = first sample at or after t; before = last sample at or before t.
    after_idx = np.searchsorted(ps, t, side='left')
    before_idx = np.searchsorted(ps, t, side='right') - 1
    has_before = before_idx >= 0
    has_after = after_idx < len(ps)
    gap_before[has_before] = t[has_before] - ps[before_idx[has_before]]
    gap_after[has_after] = ps[after_idx[has_after]] - t[has_after]
    valid = has_before & has_after & (gap_before <= tolerance_s) & (gap_after <= tolerance_s)
    exact = valid & (before_idx == after_idx)
    out[exact] = poses[before_idx[exact]]
    between = valid & ~exact
    if np.any(between):
        i0, i1 = before_idx[between], after_idx[between]
        out[between] = interpolate_pose(t[between], ps[i0], poses[i0], ps[i1], poses[i1])
    return out, valid, gap_before, gap_after
