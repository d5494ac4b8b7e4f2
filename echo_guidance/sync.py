"""The probe pose at a frame's acquisition time, from the stream of arm pose samples.

A frame is paired with a pose only when pose samples lie within the tolerance on BOTH sides of its
stamp (a gap equal to the tolerance still counts); the pose is then interpolated between them
(linear translation, SLERP rotation, see echo_guidance.geometry.interpolate_pose). A frame exactly on
a sample takes that sample. Otherwise the frame is flagged invalid, never paired with a stale pose
(docs/conventions.md, "Time and synchronisation").

Two entry points that must agree (a test checks): PoseBuffer for live streams (the recorder node)
and ``synchronise`` for whole arrays (the simulator and the dataset builder).

Gaps are reported in seconds; -1 means there is no sample at all on that side.
"""

from dataclasses import dataclass

import numpy as np

from echo_guidance.geometry import GeometryError, _interpolate_unchecked, check_transform

DEFAULT_TOLERANCE_S = 0.005
"""Largest allowed gap between a frame stamp and the pose sample on each side (5 ms, 5 samples at 1 kHz)."""

NO_SAMPLE = -1.0
"""The gap reported when there is no pose sample at all on one side of a frame."""


class PoseSampleError(ValueError):
    """A pose sample that cannot enter the buffer (NaN, non-rigid, or not newer than the last one)."""


@dataclass(frozen=True)
class SyncResult:
    """The pose at one frame time.

    Attributes:
        T_mm: the interpolated 4x4 pose in mm (float64), or None unless valid.
        valid: True when samples lie within the tolerance on both sides.
        gap_before_s: frame stamp minus the stamp of the last sample at or before it (-1: none).
        gap_after_s: stamp of the first sample at or after the frame minus the frame stamp (-1: none).
        reason: why the frame is invalid, or '' when valid.
    """

    T_mm: object
    valid: bool
    gap_before_s: float
    gap_after_s: float
    reason: str = ''


def _check_tolerance(tolerance_s):
    tolerance_s = float(tolerance_s)
    if not (np.isfinite(tolerance_s) and tolerance_s > 0):
        raise ValueError(f'tolerance_s must be a positive number of seconds, got {tolerance_s!r}')
    return tolerance_s


def describe_gaps(gap_before_s, gap_after_s, tolerance_s):
    """Why a frame with these gaps is invalid ('' when it is valid), as the SyncResult reason."""
    parts = []
    if gap_before_s < 0:
        parts.append('no pose sample before the frame')
    elif gap_before_s > tolerance_s:
        parts.append(f'no pose sample before the frame within {tolerance_s:g} s '
                     f'(last one {gap_before_s:.4f} s before it)')
    if gap_after_s < 0:
        parts.append('no pose sample after the frame')
    elif gap_after_s > tolerance_s:
        parts.append(f'no pose sample after the frame within {tolerance_s:g} s '
                     f'(next one {gap_after_s:.4f} s after it)')
    return '; '.join(parts)


class PoseBuffer:
    """A bounded, time-ordered buffer of (stamp, 4x4 mm) pose samples with interpolation at frame times.

    Samples must arrive in strictly increasing stamp order (a 1 kHz arm stream does). An equal or
    older stamp, a NaN/inf stamp or pose, or a non-rigid pose raises PoseSampleError (a ValueError)
    and leaves the buffer unchanged; ``rejected`` counts these, so a caller may also just catch and go
    on. Samples more than ``max_age_s`` older than the newest are dropped, and at most ``capacity``
    samples are held (by default room for ``max_age_s`` at 2 kHz). Storage is a pair of preallocated
    NumPy ring arrays: adding a sample allocates nothing, and ``pose_at`` is a binary search
    (O(log n)) plus one interpolation.
    """

    def __init__(self, max_age_s=5.0, tolerance_s=DEFAULT_TOLERANCE_S, capacity=None):
        """Keep samples for ``max_age_s`` seconds; pair frames within ``tolerance_s`` on both sides."""
        max_age_s = float(max_age_s)
        if not (np.isfinite(max_age_s) and max_age_s > 0):
            raise ValueError(f'max_age_s must be a positive number of seconds, got {max_age_s!r}')
        self.max_age_s = max_age_s
        self.tolerance_s = _check_tolerance(tolerance_s)
        if capacity is None:
            capacity = int(self.max_age_s * 2000) + 16
        if int(capacity) < 2:
            raise ValueError(f'capacity must be at least 2 samples, got {capacity!r}')
        self._capacity = int(capacity)
        self._stamps = np.empty(self._capacity)
        self._poses = np.empty((self._capacity, 4, 4))
        self._start = 0
        self._size = 0
        self.rejected = 0
        """Samples refused by add() so far."""
        self.discarded = 0
        """Samples dropped because they became older than max_age_s or the buffer was full."""

    def __len__(self):
        """Return the number of samples held."""
        return self._size

    def _slot(self, logical_index):
        return (self._start + logical_index) % self._capacity

    @property
    def newest_stamp(self):
        """Stamp (s) of the newest sample, or None when empty."""
        return float(self._stamps[self._slot(self._size - 1)]) if self._size else None

    @property
    def oldest_stamp(self):
        """Stamp (s) of the oldest sample held, or None when empty."""
        return float(self._stamps[self._start]) if self._size else None

    def add(self, stamp_s, T_mm, checked=False):
        """Add one sample; raise PoseSampleError for NaN, non-rigid or out-of-order samples.

        ``checked=True`` skips the rigidity check of ``T_mm`` (a 4x4 float array the caller already
        knows to be rigid and finite, e.g. built by ``geometry.pose_msg_to_matrix`` from a checked
        unit quaternion); the stamp and order are still checked.
        """
        try:
            self._add(stamp_s, T_mm, checked)
        except PoseSampleError:
            self.rejected += 1
            raise

    def _add(self, stamp_s, T_mm, checked=False):
        try:
            stamp_s = float(stamp_s)
        except (TypeError, ValueError):
            raise PoseSampleError(f'pose stamp must be a number of seconds, got {stamp_s!r}') from None
        if not np.isfinite(stamp_s):
            raise PoseSampleError(f'pose stamp is not finite: {stamp_s}')
        if checked:
            T = np.asarray(T_mm, dtype=np.float64)
        else:
            try:
                T = check_transform(T_mm, 'pose sample')
            except GeometryError as exc:
                raise PoseSampleError(str(exc)) from None
        if T.shape != (4, 4):
            raise PoseSampleError(f'add() takes one 4x4 pose, got shape {T.shape}')
        newest = self.newest_stamp
        if newest is not None and stamp_s <= newest:
            raise PoseSampleError(f'pose sample at {stamp_s:.6f} s is not newer than the last one '
                                  f'({newest:.6f} s): samples must arrive in strictly increasing time order')
        if self._size == self._capacity:
            self._start = self._slot(1)
            self._size -= 1
            self.discarded += 1
        end = self._slot(self._size)
        self._stamps[end] = stamp_s
        self._poses[end] = T
        self._size += 1
        oldest_kept_s = stamp_s - self.max_age_s
        while self._stamps[self._start] < oldest_kept_s:  # the newest sample always stays
            self._start = self._slot(1)
            self._size -= 1
            self.discarded += 1

    def _bisect(self, t, side):
        """Logical index where ``t`` would be inserted (np.searchsorted semantics) in the ring."""
        # The ring holds at most two sorted runs, [start, capacity) and [0, end); slicing is a view (no copy).
        first_len = min(self._size, self._capacity - self._start)
        first = self._stamps[self._start:self._start + first_len]
        if first_len == self._size or t < first[-1] or (side == 'left' and t == first[-1]):
            return int(np.searchsorted(first, t, side=side))
        return first_len + int(np.searchsorted(self._stamps[:self._size - first_len], t, side=side))

    def pose_at(self, stamp_s):
        """Interpolated pose at ``stamp_s`` as a SyncResult (invalid, with a reason, when not bracketed)."""
        t = float(stamp_s)
        if not np.isfinite(t):
            return SyncResult(None, False, NO_SAMPLE, NO_SAMPLE, f'frame stamp is not finite: {t}')
        if self._size == 0:
            return SyncResult(None, False, NO_SAMPLE, NO_SAMPLE, 'no pose sample received yet')
        after = self._bisect(t, 'left')  # first sample at or after t
        before = self._bisect(t, 'right') - 1  # last sample at or before t
        gap_before = t - float(self._stamps[self._slot(before)]) if before >= 0 else NO_SAMPLE
        gap_after = float(self._stamps[self._slot(after)]) - t if after < self._size else NO_SAMPLE
        valid = 0 <= gap_before <= self.tolerance_s and 0 <= gap_after <= self.tolerance_s
        if not valid:
            reason = describe_gaps(gap_before, gap_after, self.tolerance_s)
            if before < 0 and self.discarded:
                reason += (f' (pose history kept only back to {self.oldest_stamp:.6f} s; '
                           f'max_age_s = {self.max_age_s:g})')
            return SyncResult(None, False, gap_before, gap_after, reason)
        if before == after:
            return SyncResult(self._poses[self._slot(before)].copy(), True, gap_before, gap_after)
        i0, i1 = self._slot(before), self._slot(after)
        t0, t1 = float(self._stamps[i0]), float(self._stamps[i1])
        T = _interpolate_unchecked(np.float64((t - t0) / (t1 - t0)), self._poses[i0], self._poses[i1])
        return SyncResult(T, True, gap_before, gap_after)

    def has_sample_after(self, stamp_s):
        """Return True when a sample at or after ``stamp_s`` has arrived (the frame can be synced now)."""
        newest = self.newest_stamp
        return newest is not None and newest >= stamp_s


def synchronise(frame_stamps_s, pose_stamps_s, poses_mm, tolerance_s=DEFAULT_TOLERANCE_S):
    """Poses at many frame times at once, with the same rule and results as PoseBuffer.pose_at.

    Args:
        frame_stamps_s: (N,) frame acquisition times, seconds, in any order.
        pose_stamps_s: (M,) strictly increasing pose sample times, seconds.
        poses_mm: (M, 4, 4) rigid pose samples in millimetres.
        tolerance_s: largest allowed gap to the sample on each side (inclusive).

    Returns:
        (poses (N, 4, 4) float64 with NaN where invalid, valid (N,) bool, gap_before (N,), gap_after (N,));
        a gap is -1 where there is no sample on that side. A frame exactly on a sample takes that sample.
        ``describe_gaps`` turns a frame's gaps into the reason PoseBuffer would give.

    Raises:
        GeometryError: non-rigid or non-finite poses, or stamps and poses of different lengths.
        PoseSampleError: pose stamps not strictly increasing, or not finite.
        ValueError: a non-positive tolerance or non-finite frame stamps.
    """
    tolerance_s = _check_tolerance(tolerance_s)
    t = np.asarray(frame_stamps_s, dtype=np.float64)
    if t.ndim > 1:
        raise ValueError(f'frame_stamps_s must be one-dimensional, got shape {t.shape}')
    t = t.reshape(-1)
    if not np.all(np.isfinite(t)):
        raise ValueError(f'frame_stamps_s contains {int(np.sum(~np.isfinite(t)))} NaN or infinite value(s)')
    ps = np.asarray(pose_stamps_s, dtype=np.float64)
    if ps.ndim > 1:
        raise ValueError(f'pose_stamps_s must be one-dimensional, got shape {ps.shape}')
    ps = ps.reshape(-1)
    if not np.all(np.isfinite(ps)):
        bad = int(np.sum(~np.isfinite(ps)))
        raise PoseSampleError(f'pose_stamps_s contains {bad} NaN or infinite value(s)')
    poses = check_transform(np.reshape(poses_mm, (-1, 4, 4)) if np.size(poses_mm) == 0 else poses_mm,
                            'pose samples')
    if poses.shape != (len(ps), 4, 4):
        raise GeometryError(f'{len(ps)} pose stamps need poses of shape ({len(ps)}, 4, 4), got {poses.shape}')
    steps = np.diff(ps)
    if np.any(steps <= 0):
        first = int(np.argmax(steps <= 0))
        raise PoseSampleError(f'pose stamps must be strictly increasing: sample {first + 1} '
                              f'({ps[first + 1]:.6f} s) is not after sample {first} ({ps[first]:.6f} s)')
    n = len(t)
    out = np.full((n, 4, 4), np.nan)
    gap_before = np.full(n, NO_SAMPLE)
    gap_after = np.full(n, NO_SAMPLE)
    if len(ps) == 0 or n == 0:
        return out, np.zeros(n, dtype=bool), gap_before, gap_after
    after_idx = np.searchsorted(ps, t, side='left')  # first sample at or after t
    before_idx = np.searchsorted(ps, t, side='right') - 1  # last sample at or before t
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
        alpha = (t[between] - ps[i0]) / (ps[i1] - ps[i0])
        out[between] = _interpolate_unchecked(alpha, poses[i0], poses[i1])
    return out, valid, gap_before, gap_after


__all__ = ['DEFAULT_TOLERANCE_S', 'NO_SAMPLE', 'PoseBuffer', 'PoseSampleError', 'SyncResult', 'describe_gaps',
           'synchronise']
