"""The probe pose at a frame's stamp from raw pose samples, converting only the two samples around it.

The guidance node receives ``/arm/probe_pose`` at up to 1 kHz but needs a pose only at ~30 frame
stamps a second. Converting and validating every sample (as :class:`echo_guidance.sync.PoseBuffer`
does for the recorder) costs a large share of a core in Python, so the node stores the raw numbers and
this module converts just the bracketing pair. The rule is the project's (docs/conventions.md,
echo_guidance.sync): samples within the tolerance on both sides, linear translation and SLERP rotation
in between, a frame exactly on a sample takes it. One addition for live guidance: a frame newer
than every sample received so far takes the newest sample when that one is within the tolerance
(the pose stream's next sample has not arrived yet); this is reported in the result.
"""

import bisect

import numpy as np

from echo_guidance.geometry import GeometryError, interpolate_pose, quaternion_to_rotation
from echo_guidance.sync import NO_SAMPLE, describe_gaps


def sample_to_matrix(sample):
    """4x4 pose (mm) of a raw sample (stamp_s, x, y, z m, qx, qy, qz, qw); GeometryError when unusable."""
    values = np.asarray(sample[1:], dtype=float)
    if values.shape != (7,) or not np.all(np.isfinite(values)):
        raise GeometryError(f'pose sample at {sample[0]:.6f} s has non-finite values')
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation(values[3:])
    T[:3, 3] = values[:3] * 1000.0
    return T


def pose_at_stamp(samples, stamp_s, tolerance_s):
    """Return (pose 4x4 mm or None, reason, samples rejected) at ``stamp_s`` from raw samples.

    Args:
        samples: (stamp_s, x, y, z, qx, qy, qz, qw) tuples, positions in metres, in arrival order.
        stamp_s: the frame's acquisition time (s).
        tolerance_s: largest gap to the sample on each side.
    """
    if not samples:
        return None, 'no pose sample received yet', 0
    stamps = [s[0] for s in samples]
    if any(b < a for a, b in zip(stamps, stamps[1:])):
        samples = sorted(samples, key=lambda s: s[0])
        stamps = [s[0] for s in samples]
    after = bisect.bisect_left(stamps, stamp_s)
    before = bisect.bisect_right(stamps, stamp_s) - 1
    gap_before = stamp_s - stamps[before] if before >= 0 else NO_SAMPLE
    gap_after = stamps[after] - stamp_s if after < len(stamps) else NO_SAMPLE
    hold = gap_after == NO_SAMPLE and 0.0 <= gap_before <= tolerance_s
    valid = 0.0 <= gap_before <= tolerance_s and 0.0 <= gap_after <= tolerance_s
    if not (valid or hold):
        return None, describe_gaps(gap_before, gap_after, tolerance_s), 0
    try:
        T0 = sample_to_matrix(samples[before])
        if hold or gap_before == 0.0:
            return T0, '', 0
        T1 = sample_to_matrix(samples[after])
    except GeometryError as err:
        return None, f'pose sample rejected: {err}', 1
    return interpolate_pose(stamp_s, stamps[before], T0, stamps[after], T1), '', 0
