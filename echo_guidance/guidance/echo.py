"""Is there echo in the frame at all? A frame without echo cannot guide.

When the probe loses acoustic contact (lifted off the skin) or sits over the lung, the frame shows
no tissue: only the scanner's noise floor. A model still answers such a frame, with an action that
means nothing, often the same one frame after frame (so the spread-based confidence stays high).
:func:`echo_fraction` measures the share of pixels brighter than ``level`` grey levels; below
``min_fraction`` the guidance engine does not run the model: it publishes the frame with confidence
0 and the status ``no echo ...``, so the arm holds (or, with the planner's search on, searches:
pressing the probe onto the skin first). Measured on the simulator (docs/guidance.md): frames with
tissue have 1.3–23 % of their pixels above 40 (median 10 %), frames without any echo 1.2–1.3 %.
"""

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class EchoConfig:
    """The no-echo test: ``min_fraction`` of the frame's pixels brighter than ``level`` (0 = off)."""

    level: int = 40
    min_fraction: float = 0.025

    def __post_init__(self):
        """Check the values; raise ValueError naming the bad one."""
        if isinstance(self.level, bool) or not isinstance(self.level, int) or not 0 <= self.level <= 254:
            raise ValueError(f'echo level must be an integer grey level 0..254, got {self.level!r}')
        if not (isinstance(self.min_fraction, (int, float)) and math.isfinite(self.min_fraction)):
            raise ValueError(f'echo min_fraction must be a number, got {self.min_fraction!r}')
        if not 0.0 <= self.min_fraction < 1.0:
            raise ValueError(f'echo min_fraction must be in [0, 1), got {self.min_fraction}')


def echo_fraction(frame, level=40):
    """Share of the pixels of a uint8 grey frame brighter than ``level``."""
    frame = np.asarray(frame)
    return float(np.count_nonzero(frame > level)) / max(1, frame.size)


def has_echo(frame, config):
    """Whether the frame holds enough echo to guide from (always True with min_fraction 0)."""
    return config.min_fraction <= 0 or echo_fraction(frame, config.level) >= config.min_fraction
