"""The cardiac cycle of the virtual patient: contraction and valve timing as functions of time.

One beat lasts ``60 / heart_rate_bpm`` seconds and starts at end-diastole (phase 0). Systole takes
the first 35 % of the beat; the ventricles relax in two steps (rapid filling, then the atrial kick).
``contraction`` is 0 at end-diastole and 1 at end-systole; the mitral valve opens in diastole and
the aortic valve in systole.
"""

import math

import numpy as np

SYSTOLE_END = 0.35
"""Phase (fraction of the beat) of end-systole."""


def _smoothstep(x):
    """Cosine ramp from 0 (x <= 0) to 1 (x >= 1)."""
    x = min(max(x, 0.0), 1.0)
    return 0.5 - 0.5 * math.cos(math.pi * x)


class CardiacCycle:
    """Timing of one heart: contraction and valve states at any time.

    Args:
        heart_rate_bpm: beats per minute, 30 to 200.
        phase_offset: phase of the beat at time 0 (0 to 1): lets recordings start anywhere in the beat.
    """

    def __init__(self, heart_rate_bpm, phase_offset=0.0):
        """Check the heart rate and keep the timing."""
        heart_rate_bpm = float(heart_rate_bpm)
        if not 30.0 <= heart_rate_bpm <= 200.0:
            raise ValueError(f'heart rate must be 30..200 beats per minute, got {heart_rate_bpm}')
        self.heart_rate_bpm = heart_rate_bpm
        self.period_s = 60.0 / heart_rate_bpm
        self.phase_offset = float(phase_offset) % 1.0

    def phase(self, time_s):
        """Return the phase of the beat (0 = end-diastole, SYSTOLE_END = end-systole) at ``time_s``."""
        return (float(time_s) / self.period_s + self.phase_offset) % 1.0

    def contraction(self, time_s):
        """Return the contraction state at ``time_s``: 0 at end-diastole, 1 at end-systole."""
        p = self.phase(time_s)
        if p < SYSTOLE_END:
            return _smoothstep(p / SYSTOLE_END)
        if p < 0.60:  # rapid filling
            return 1.0 - 0.80 * _smoothstep((p - SYSTOLE_END) / (0.60 - SYSTOLE_END))
        if p < 0.80:  # diastasis
            return 0.20 - 0.05 * _smoothstep((p - 0.60) / 0.20)
        return 0.15 * (1.0 - _smoothstep((p - 0.80) / 0.20))  # atrial contraction

    def mitral_opening(self, time_s):
        """Return how far the mitral leaflets are open at ``time_s`` (0 closed .. 1 fully open)."""
        p = self.phase(time_s)
        if p < 0.38 or p >= 0.97:
            return 0.0
        if p < 0.45:
            return _smoothstep((p - 0.38) / 0.07)
        if p < 0.82:  # drifts half-closed in diastasis
            return 1.0 - 0.5 * _smoothstep((p - 0.55) / 0.15)
        if p < 0.90:  # reopens with the atrial kick
            return 0.5 + 0.4 * _smoothstep((p - 0.82) / 0.04)
        return 0.9 * (1.0 - _smoothstep((p - 0.90) / 0.07))

    def aortic_open(self, time_s):
        """Return True while the aortic valve is open (ejection)."""
        p = self.phase(time_s)
        return 0.06 <= p < 0.33

    def end_diastole_times(self, start_s, stop_s):
        """Return the end-diastole times in [start_s, stop_s)."""
        first = math.ceil((start_s / self.period_s + self.phase_offset) - 1e-12) - self.phase_offset
        times = (first + np.arange(0, int((stop_s - start_s) / self.period_s) + 2)) * self.period_s
        return times[(times >= start_s) & (times < stop_s)]
