"""Coarse-to-fine guidance: which model answers a frame, by a documented rule with hysteresis.

A *coarse* model, trained on poses anywhere a scan may start, brings the probe near the plane; a
*fine* model, trained densely on the final approach, is more precise there but knows nothing far
away. :class:`StageSwitch` decides which one answers:

- start (and after a reset or a new target plane) with the coarse model;
- hand over to the fine model after ``enter_frames`` consecutive valid frames whose coarse (fused)
  action is within ``enter_mm`` and ``enter_deg`` (translation norm, geodesic rotation);
- hand back to the coarse model after ``exit_frames`` consecutive frames whose fine action is beyond
  ``exit_mm`` or ``exit_deg`` (the fine model was never trained there), or at once on an invalid frame.

The exit thresholds lie above the enter ones, so the handover does not chatter at the boundary.
"""

import dataclasses
import math

import numpy as np

from echo_guidance.guidance.fusion import rotation_angle_deg

STAGES = ('coarse', 'fine')


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """Thresholds of the coarse → fine handover (mm, degrees, frames); see the module docstring."""

    enter_mm: float = 8.0
    enter_deg: float = 8.0
    exit_mm: float = 14.0
    exit_deg: float = 14.0
    enter_frames: int = 2
    exit_frames: int = 3

    def __post_init__(self):
        """Check the values; raise ValueError naming the bad one."""
        for name in ('enter_mm', 'enter_deg', 'exit_mm', 'exit_deg'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f'stages {name} must be a positive number, got {value!r}')
        if self.exit_mm < self.enter_mm or self.exit_deg < self.enter_deg:
            raise ValueError(
                f'stages exit thresholds ({self.exit_mm} mm, {self.exit_deg} deg) must not be below the '
                f'enter thresholds ({self.enter_mm} mm, {self.enter_deg} deg)'
            )
        for name in ('enter_frames', 'exit_frames'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'stages {name} must be an integer >= 1, got {value!r}')


class StageSwitch:
    """The handover rule of the module docstring, one frame at a time."""

    def __init__(self, config=None, has_fine=True):
        """Start coarse; without a fine model the stage stays coarse."""
        self.config = config or StageConfig()
        self.has_fine = bool(has_fine)
        self.reset()

    def reset(self):
        """Back to the coarse model."""
        self.stage = 'coarse'
        self._streak = 0

    def update(self, action, valid=True):
        """Feed the answering model's (fused) action for one frame; return the stage for the next frame.

        Returns the stage name; the caller resets the fusion of the stage it switches to.
        """
        cfg = self.config
        if not valid:
            self._streak = 0
            if self.stage == 'fine':
                self.stage = 'coarse'
            return self.stage
        if not self.has_fine:
            return self.stage
        translation = float(np.linalg.norm(np.asarray(action, dtype=float)[:3]))
        rotation = rotation_angle_deg(action)
        if self.stage == 'coarse':
            near = translation <= cfg.enter_mm and rotation <= cfg.enter_deg
            self._streak = self._streak + 1 if near else 0
            if self._streak >= cfg.enter_frames:
                self.stage, self._streak = 'fine', 0
        else:
            far = translation > cfg.exit_mm or rotation > cfg.exit_deg
            self._streak = self._streak + 1 if far else 0
            if self._streak >= cfg.exit_frames:
                self.stage, self._streak = 'coarse', 0
        return self.stage
