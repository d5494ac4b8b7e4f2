"""A deterministic, analytic probe trajectory T(t) for simulation and benchmarks.

The scripted arm backend publishes samples of this trajectory and the record benchmark compares
each recorded, synchronised pose with the same function evaluated at the frame's stamp, so the
ground truth is exact rather than another measurement.

The flange moves as ``T_base_flange(t) = T_centre · U(a(t))`` with every component of the 6-D
action a(t) (mm, degrees; see CONVENTIONS.md) a sinusoid ``amplitude · sin(2π·f·(t - epoch) + phase)``.
The probe pose follows through the calibration: ``T_base_probe(t) = T_base_flange(t) · T_flange_probe``.
"""

import dataclasses
import math

import numpy as np


def action_matrix(action):
    """U(a): the 4×4 transform (mm) of a 6-D action (x, y, z mm; roll, pitch, yaw degrees).

    R = Rz(yaw)·Ry(pitch)·Rx(roll), written out rather than built with SciPy because the scripted
    arm evaluates it 1000 times a second.
    """
    x, y, z, roll, pitch, yaw = (float(v) for v in action)
    cr, sr = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    cp, sp = math.cos(math.radians(pitch)), math.sin(math.radians(pitch))
    cy, sy = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr, x],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr, y],
            [-sp, cp * sr, cp * cr, z],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def _vector6(values, name):
    array = np.asarray(values, dtype=float).reshape(-1)
    if array.shape != (6,) or not np.all(np.isfinite(array)):
        raise ValueError(
            f'{name} must be 6 finite numbers (x, y, z mm, roll, pitch, yaw deg), got {values!r}'
        )
    return array


@dataclasses.dataclass(frozen=True)
class SinusoidTrajectory:
    """Flange motion around a centre pose, each action component an independent sinusoid.

    Attributes:
        centre: the flange pose at rest, as a 6-D action of base → flange (mm, degrees).
        amplitude: per-component amplitude (mm, degrees).
        frequency_hz: per-component frequency (Hz); keep them low (hand-like motion, < 1 Hz).
        phase_rad: per-component phase (radians).
        epoch_s: the trajectory's time origin on the ROS clock (seconds).
    """

    centre: tuple = (450.0, 0.0, 300.0, 180.0, 0.0, 0.0)
    amplitude: tuple = (30.0, 25.0, 15.0, 10.0, 8.0, 20.0)
    frequency_hz: tuple = (0.11, 0.17, 0.23, 0.13, 0.19, 0.07)
    phase_rad: tuple = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)
    epoch_s: float = 0.0

    def __post_init__(self):
        """Check every vector has six finite entries and the frequencies are not negative."""
        for name in ('centre', 'amplitude', 'frequency_hz', 'phase_rad'):
            object.__setattr__(self, name, tuple(_vector6(getattr(self, name), name).tolist()))
        if min(self.frequency_hz) < 0:
            raise ValueError(f'frequency_hz must not be negative, got {self.frequency_hz}')
        if not math.isfinite(self.epoch_s):
            raise ValueError(f'epoch_s must be finite, got {self.epoch_s}')
        object.__setattr__(self, '_centre_matrix', action_matrix(self.centre))
        object.__setattr__(self, '_omega', 2.0 * math.pi * np.asarray(self.frequency_hz))

    @classmethod
    def from_config(cls, config, epoch_s=None):
        """Build from a mapping with keys centre, amplitude, frequency_hz, phase_rad (any subset)."""
        unknown = set(config) - {'centre', 'amplitude', 'frequency_hz', 'phase_rad', 'epoch_s'}
        if unknown:
            raise ValueError(
                f'unknown trajectory keys {sorted(unknown)}; expected centre, amplitude, '
                f'frequency_hz, phase_rad, epoch_s'
            )
        kwargs = {key: tuple(value) for key, value in config.items() if key != 'epoch_s'}
        if epoch_s is None:
            epoch_s = float(config.get('epoch_s', 0.0))
        return cls(epoch_s=float(epoch_s), **kwargs)

    def action_at(self, t_s):
        """The 6-D action a(t) of the flange relative to the centre pose."""
        return np.asarray(self.amplitude) * np.sin(
            self._omega * (t_s - self.epoch_s) + np.asarray(self.phase_rad)
        )

    def flange_pose(self, t_s):
        """T_base_flange(t), 4×4, millimetres."""
        return self._centre_matrix @ action_matrix(self.action_at(t_s))

    def probe_pose(self, t_s, calibration):
        """T_base_probe(t) = T_base_flange(t) · T_flange_probe, 4×4, millimetres."""
        return calibration.probe_pose(self.flange_pose(t_s))
