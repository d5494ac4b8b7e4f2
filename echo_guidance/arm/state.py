"""One arm sample, the checks it must pass before it is published, and the health counters.

Whatever the backend, an arm sample is the flange pose in ``base`` at a time on the ROS clock,
optionally with the external wrench. :class:`ArmStateMonitor` turns accepted samples into probe
poses (flange pose × calibration) and refuses the ones that must never reach a consumer:

* a pose with NaN/inf entries, or whose rotation part is not a rotation (``nan``, ``not_rigid``);
* a stale pose: its stamp does not advance past the last published one (the arm repeated an old
  state) or it is older than ``max_age_s`` when it arrives (``stale``).

Refused samples are counted, and the last reason is kept, so the arm-state node can report them in
diagnostics. A silent arm (no accepted sample for ``timeout_s``) is reported too.
"""

import dataclasses

import numpy as np

# diagnostic_msgs/DiagnosticStatus levels, repeated here so this module does not import ROS.
OK, WARN, ERROR, STALE = 0, 1, 2, 3

RIGID_TOLERANCE = 1e-4
"""How far R·Rᵀ may be from identity (and det R from 1) for a pose to count as rigid."""
_IDENTITY3 = np.eye(3)


class ArmSampleRejected(ValueError):
    """An arm sample that must not be published; ``reason`` is a short code, the message says why."""

    def __init__(self, reason, message):
        """Keep the reason code ('nan', 'not_rigid', 'stale', 'shape') beside the message."""
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ArmSample:
    """One state of the arm.

    Attributes:
        stamp_s: time of the measurement on the ROS clock, seconds.
        T_base_flange_mm: flange pose in base, 4×4, millimetres.
        wrench: external wrench on the end effector in base, (fx, fy, fz, tx, ty, tz) in N and N·m,
            or None when the backend has none.
        source_time_s: the arm's own timestamp (e.g. libfranka's time since start), for diagnostics.
    """

    stamp_s: float
    T_base_flange_mm: np.ndarray
    wrench: np.ndarray | None = None
    source_time_s: float | None = None


def check_rigid_pose(T, what='flange pose'):
    """Raise ArmSampleRejected unless ``T`` is a finite 4×4 rigid transform."""
    T = np.asarray(T, dtype=float)
    if T.shape != (4, 4):
        raise ArmSampleRejected('shape', f'{what} must be a 4x4 matrix, got shape {T.shape}')
    if not np.isfinite(T).all():
        raise ArmSampleRejected('nan', f'{what} contains NaN or infinite values')
    R = T[:3, :3]
    orthogonality = float(np.abs(R @ R.T - _IDENTITY3).max())
    # The determinant written out: np.linalg.det and np.cross cost more than the rest at 1 kHz.
    (a, b, c), (d, e, f), (g, h, i) = R.tolist()
    determinant = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    if orthogonality > RIGID_TOLERANCE or abs(determinant - 1.0) > RIGID_TOLERANCE:
        raise ArmSampleRejected(
            'not_rigid',
            f'{what} is not a rigid transform (|R·Rᵀ - I| = {orthogonality:.2e}, det R = {determinant:.6f})',
        )
    if T[3, 0] != 0.0 or T[3, 1] != 0.0 or T[3, 2] != 0.0 or abs(T[3, 3] - 1.0) > RIGID_TOLERANCE:
        raise ArmSampleRejected('not_rigid', f'{what} has a last row {T[3].tolist()}, expected [0, 0, 0, 1]')
    return T


class ArmStateMonitor:
    """Check arm samples, convert them to probe poses and count what was refused.

    Args:
        calibration: a FlangeToProbeCalibration.
        max_age_s: a sample older than this when it arrives (now - stamp) is stale.
        timeout_s: no accepted sample for this long makes the arm count as silent.
    """

    def __init__(self, calibration, max_age_s=0.1, timeout_s=0.5):
        """Start with no samples seen."""
        if not max_age_s > 0 or not timeout_s > 0:
            raise ValueError(f'max_age_s and timeout_s must be positive, got {max_age_s}, {timeout_s}')
        self.calibration = calibration
        self.max_age_s = float(max_age_s)
        self.timeout_s = float(timeout_s)
        self.accepted = 0
        self.rejected = {'nan': 0, 'not_rigid': 0, 'stale': 0, 'shape': 0}
        self.last_rejection = ''
        self.last_stamp_s = None
        self.last_accept_wall_s = None
        self.backend_error = ''

    def accept(self, sample, now_s):
        """Return the probe pose (4×4 mm) of ``sample``, or raise ArmSampleRejected and count it.

        Args:
            sample: an ArmSample.
            now_s: the current ROS time in seconds, to judge staleness.
        """
        try:
            check_rigid_pose(sample.T_base_flange_mm)
            if not np.isfinite(sample.stamp_s):
                raise ArmSampleRejected('nan', f'arm sample stamp is not finite: {sample.stamp_s}')
            if self.last_stamp_s is not None and sample.stamp_s <= self.last_stamp_s:
                raise ArmSampleRejected(
                    'stale',
                    f'arm sample stamp {sample.stamp_s:.6f} s does not advance past the last '
                    f'published {self.last_stamp_s:.6f} s (repeated or out-of-order state)',
                )
            age = now_s - sample.stamp_s
            if age > self.max_age_s:
                raise ArmSampleRejected(
                    'stale',
                    f'arm sample is {age * 1e3:.1f} ms old when it arrives, more than the '
                    f'allowed {self.max_age_s * 1e3:.1f} ms',
                )
            if sample.wrench is not None:
                wrench = np.asarray(sample.wrench, dtype=float)
                if wrench.shape != (6,) or not np.all(np.isfinite(wrench)):
                    raise ArmSampleRejected(
                        'nan', f'arm wrench must be 6 finite numbers, got {wrench.tolist()}'
                    )
        except ArmSampleRejected as rejection:
            self.rejected[rejection.reason] += 1
            self.last_rejection = str(rejection)
            raise
        T_base_probe = self.calibration.probe_pose(sample.T_base_flange_mm)
        self.accepted += 1
        self.last_stamp_s = sample.stamp_s
        self.last_accept_wall_s = now_s
        return T_base_probe

    def silent_for(self, now_s):
        """Seconds since the last accepted sample (inf when none was ever accepted)."""
        if self.last_accept_wall_s is None:
            return float('inf')
        return now_s - self.last_accept_wall_s

    def diagnostics(self, now_s):
        """Return (level, message, values) summarising the arm's health for /diagnostics."""
        values = {'accepted': str(self.accepted)}
        values.update({f'rejected_{reason}': str(count) for reason, count in self.rejected.items()})
        values['last_rejection'] = self.last_rejection
        silent = self.silent_for(now_s)
        values['seconds_since_last_pose'] = f'{silent:.3f}' if np.isfinite(silent) else 'never'
        if self.backend_error:
            return ERROR, f'arm backend error: {self.backend_error}', values
        if silent > self.timeout_s:
            what = 'no pose received yet' if not np.isfinite(silent) else f'no valid pose for {silent:.2f} s'
            return STALE, f'{what} (timeout {self.timeout_s:.2f} s); ' + (self.last_rejection or ''), values
        if any(self.rejected.values()):
            return (
                WARN,
                f'publishing; {sum(self.rejected.values())} samples refused, last: {self.last_rejection}',
                values,
            )
        return OK, 'publishing', values
