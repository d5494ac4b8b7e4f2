"""Steadier guidance: fuse the predictions of recent frames, moved into the current probe frame.

A frame at probe pose T_k (base, mm) whose model output is a_k says the target plane's pose is
G_k = T_k · U(a_k). The probe has since moved to T_c, so in the current probe frame that prediction
reads a_k' = U⁻¹(T_c⁻¹ · G_k): the probe's own measured motion carries every past prediction into
the present, without the lag of a plain moving average. The fused action is a robust, age-weighted
combination (per-axis weighted median by default, or a weighted mean with outliers removed) of
the a_k' of the last ``window_s`` seconds; angles are combined as differences to the current
frame's prediction, wrapped to (−180°, 180°], so ±180° never averages to 0.

A past prediction's weight is w_k = 0.5^(age / half_life_s) · exp(−½ ((Δt_k / motion_scale_mm)² +
(Δθ_k / motion_scale_deg)²)), with Δt_k, Δθ_k the distance (mm) and rotation (degrees) between the
probe then and now. The motion term matters because a real model's error is not independent from
frame to frame but grows with the distance to the target and shrinks predictions toward the mean:
carried into the present, a prediction made farther away brings its larger error with it. So
fusion averages freely while the probe holds still (where jitter matters most) and falls back toward
the single frame while it moves fast (measured with ``echo-guidance bench fusion``, docs/guidance.md).
A scale of 0 turns the motion term off.

Per-axis confidence comes from how much those predictions agree: with s_i their weighted spread on
axis i about the fused value, c_i = exp(−½ (s_i / scale_i)²) · min(1, n_eff / min_frames), where
n_eff = (Σw)² / Σw² is the effective number of fused frames. Without a probe pose the predictions
cannot be moved into the current frame: guidance is then the single-frame prediction, and the
spread is taken over the recent raw predictions as if the probe had held still (a moving probe
then lowers the confidence, which is the safe direction).

"Plane reached" (:class:`PlaneReachedJudge`) has hysteresis: it turns on after ``enter_frames``
consecutive valid frames within ``enter_mm`` and ``enter_deg`` (translation norm and geodesic
rotation of the fused action) with overall confidence at least ``min_confidence``, and off after
``exit_frames`` consecutive frames beyond ``exit_mm`` or ``exit_deg`` (or at once on an invalid frame).
When the model has the stop judgement's distance head, the regressor saying "about zero" is not
enough: the distance head must agree. Its answers of the frames taken with the probe still (within
``still_mm`` / ``still_deg`` of where it is now, no older than ``distance_window_s``) are combined by
their median; "reached" needs that median at most ``max_distance`` (in units of the success window,
5 mm / 5°) as well, and a median above ``exit_distance`` counts as outside.
"""

import collections
import dataclasses
import math

import numpy as np

from echo_guidance.geometry import action_to_matrix, invert_transform, matrix_to_action

FUSION_METHODS = ('median', 'mean')


def _positive(name, value):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f'{name} must be a positive number, got {value!r}')


@dataclasses.dataclass(frozen=True)
class FusionConfig:
    """How past predictions are fused and how confidence is computed.

    Attributes:
        enabled: fuse past frames (False: every frame's guidance is its own prediction; confidence
            still comes from the spread of recent predictions).
        window_s: predictions older than this (relative to the current frame's stamp) are dropped.
        max_frames: at most this many past frames are kept.
        half_life_s: a prediction's weight halves every ``half_life_s`` of age.
        method: ``median`` (per-axis weighted median) or ``mean`` (weighted mean of the predictions
            within ``outlier_sigma`` robust standard deviations of the weighted median).
        outlier_sigma: outlier threshold of the ``mean`` method.
        confidence_scale: per-axis spread (mm, mm, mm, deg, deg, deg) at which confidence is exp(−½) ≈ 0.61.
        min_frames: effective number of fused frames needed for full confidence.
        motion_scale_mm: probe travel (mm) since a past frame at which its weight drops by exp(−½); 0 = off.
        motion_scale_deg: probe rotation (degrees) since a past frame with the same effect; 0 = off.
    """

    enabled: bool = True
    window_s: float = 1.0
    max_frames: int = 30
    half_life_s: float = 0.5
    method: str = 'median'
    outlier_sigma: float = 2.5
    confidence_scale: tuple = (3.0, 3.0, 3.0, 5.0, 5.0, 5.0)
    min_frames: float = 4.0
    motion_scale_mm: float = 1.0
    motion_scale_deg: float = 1.0

    def __post_init__(self):
        """Check every field; raise ValueError naming the bad one."""
        object.__setattr__(self, 'confidence_scale', tuple(float(v) for v in self.confidence_scale))
        for name in ('motion_scale_mm', 'motion_scale_deg'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f'fusion {name} must be a number >= 0 (0 = off), got {value!r}')
        for name in ('window_s', 'half_life_s', 'outlier_sigma', 'min_frames'):
            _positive(f'fusion {name}', getattr(self, name))
        if not (isinstance(self.max_frames, int) and self.max_frames >= 1):
            raise ValueError(f'fusion max_frames must be an integer >= 1, got {self.max_frames!r}')
        if self.method not in FUSION_METHODS:
            raise ValueError(f'fusion method {self.method!r}: expected one of {", ".join(FUSION_METHODS)}')
        if len(self.confidence_scale) != 6:
            raise ValueError(
                f'fusion confidence_scale needs 6 values (mm x3, deg x3), got {len(self.confidence_scale)}'
            )
        for value in self.confidence_scale:
            _positive('fusion confidence_scale', value)


@dataclasses.dataclass(frozen=True)
class ReachedConfig:
    """Thresholds of the "plane reached" judgement (docs/conventions.md: success is 5 mm and 5°)."""

    enter_mm: float = 5.0
    enter_deg: float = 5.0
    exit_mm: float = 7.0
    exit_deg: float = 7.0
    enter_frames: int = 3
    exit_frames: int = 3
    min_confidence: float = 0.3
    max_distance: float = 0.6
    exit_distance: float = 1.0
    distance_window_s: float = 1.0
    still_mm: float = 0.5
    still_deg: float = 0.5

    def __post_init__(self):
        """Check the thresholds; exit thresholds may not be below the enter ones."""
        for name in ('max_distance', 'exit_distance', 'distance_window_s', 'still_mm', 'still_deg'):
            _positive(f'plane-reached {name}', getattr(self, name))
        if self.exit_distance < self.max_distance:
            raise ValueError(
                f'plane-reached exit_distance ({self.exit_distance}) must not be below max_distance '
                f'({self.max_distance})'
            )
        for name in ('enter_mm', 'enter_deg', 'exit_mm', 'exit_deg'):
            _positive(f'plane-reached {name}', getattr(self, name))
        if self.exit_mm < self.enter_mm or self.exit_deg < self.enter_deg:
            raise ValueError(
                f'plane-reached exit thresholds ({self.exit_mm} mm, {self.exit_deg} deg) must not '
                f'be below the enter thresholds ({self.enter_mm} mm, {self.enter_deg} deg)'
            )
        for name in ('enter_frames', 'exit_frames'):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f'plane-reached {name} must be an integer >= 1, got {value!r}')
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f'plane-reached min_confidence must be in [0, 1], got {self.min_confidence}')


@dataclasses.dataclass(frozen=True)
class FusedEstimate:
    """The outcome of one fusion step.

    Attributes:
        action: (6,) the guidance action (fused, or the single-frame prediction).
        axis_confidence: (6,) per-axis confidence in [0, 1].
        confidence: overall confidence (geometric mean of the per-axis ones).
        spread: (6,) weighted spread of the predictions about ``action`` (mm, degrees; NaN with one frame).
        frames_fused: how many frames went into ``action`` (1 = single frame).
        motion_compensated: True when past predictions were moved by the measured probe motion.
    """

    action: np.ndarray
    axis_confidence: np.ndarray
    confidence: float
    spread: np.ndarray
    frames_fused: int
    motion_compensated: bool


def wrap_degrees(angles):
    """Angles wrapped to (−180, 180]."""
    wrapped = np.mod(np.asarray(angles, dtype=float) + 180.0, 360.0) - 180.0
    return np.where(wrapped == -180.0, 180.0, wrapped)


def weighted_median(values, weights):
    """Per-column weighted median of ``values`` (N, D) with weights (N,): the lower median at ties."""
    values = np.asarray(values, dtype=float)
    weights = np.asarray(weights, dtype=float)
    order = np.argsort(values, axis=0)
    sorted_values = np.take_along_axis(values, order, axis=0)
    cumulative = np.cumsum(weights[order], axis=0)
    half = 0.5 * cumulative[-1]
    index = np.argmax(cumulative >= half[None, :] - 1e-12, axis=0)
    return sorted_values[index, np.arange(values.shape[1])]


def _weighted_spread(values, weights, centre):
    total = weights.sum()
    return np.sqrt((weights[:, None] * (values - centre[None, :]) ** 2).sum(axis=0) / total)


def rotation_angle_deg(action):
    """Geodesic rotation angle (degrees) of U(action)."""
    R = action_to_matrix(np.asarray(action, dtype=float))[:3, :3]
    return math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(R) - 1.0) / 2.0))))


class TemporalFusion:
    """Keeps recent predictions with their probe poses and fuses them into the current probe frame."""

    def __init__(self, config=None):
        """Start with an empty history."""
        self.config = FusionConfig() if config is None else config
        self._history = collections.deque(maxlen=self.config.max_frames)

    def reset(self):
        """Forget every past prediction (new target plane, time jump, ...)."""
        self._history.clear()

    def __len__(self):
        """Number of past predictions held."""
        return len(self._history)

    def _candidates(self, stamp_s, pose_mm, action):
        """Past predictions as seen from now: values (N, 6) unwrapped around ``action``, and weights (N,)."""
        cfg = self.config
        motion_factor = None
        if pose_mm is not None:
            # Entries without a pose cannot be moved into the current frame and are left out.
            past = [entry for entry in self._history if entry[1] is not None]
            if past:
                current_inv = invert_transform(pose_mm)
                moved = matrix_to_action(current_inv[None] @ np.stack([e[1] for e in past]))
                if cfg.motion_scale_mm > 0 or cfg.motion_scale_deg > 0:
                    relative = current_inv[None] @ np.stack([e[3] for e in past])
                    travel = np.linalg.norm(relative[:, :3, 3], axis=1)
                    cosine = np.clip((np.trace(relative[:, :3, :3], axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
                    turn = np.degrees(np.arccos(cosine))
                    exponent = np.zeros(len(past))
                    if cfg.motion_scale_mm > 0:
                        exponent += (travel / cfg.motion_scale_mm) ** 2
                    if cfg.motion_scale_deg > 0:
                        exponent += (turn / cfg.motion_scale_deg) ** 2
                    motion_factor = np.exp(-0.5 * exponent)
            else:
                moved = np.zeros((0, 6))
        else:
            past = list(self._history)
            # As if the probe had held still (used for the confidence only).
            moved = np.array([e[2] for e in past]).reshape(-1, 6)
        values = np.concatenate([action[None], moved], axis=0)
        values[1:, 3:] = action[None, 3:] + wrap_degrees(values[1:, 3:] - action[None, 3:])
        ages = np.array([0.0] + [stamp_s - e[0] for e in past])
        weights = 0.5 ** (ages / cfg.half_life_s)
        if motion_factor is not None:
            weights[1:] *= motion_factor
        return values, weights

    def _combine(self, values, weights):
        if len(values) == 1:
            return values[0].copy()
        centre = weighted_median(values, weights)
        if self.config.method == 'median':
            return centre
        deviation = np.abs(values - centre[None, :])
        robust_sigma = 1.4826 * weighted_median(deviation, weights)
        keep = deviation <= self.config.outlier_sigma * np.maximum(robust_sigma, 1e-6)[None, :]
        w = weights[:, None] * keep
        return (w * values).sum(axis=0) / w.sum(axis=0)

    def update(self, stamp_s, pose_mm, action):
        """Fuse the prediction ``action`` of the frame at ``stamp_s`` (probe pose ``pose_mm`` or None).

        Returns:
            A :class:`FusedEstimate`.
        """
        cfg = self.config
        action = np.asarray(action, dtype=float)
        stamp_s = float(stamp_s)
        if self._history and stamp_s <= self._history[-1][0]:
            self.reset()  # time went backwards (bag restarted, clock reset): the history does not apply
        while self._history and stamp_s - self._history[0][0] > cfg.window_s:
            self._history.popleft()
        values, weights = self._candidates(stamp_s, pose_mm, action)
        compensated = pose_mm is not None
        if cfg.enabled and compensated:
            fused = self._combine(values, weights)
            fused[3:] = wrap_degrees(fused[3:])
            frames = len(values)
        else:
            fused, frames = action.copy(), 1
        centre = fused.copy()
        centre[3:] = action[3:] + wrap_degrees(fused[3:] - action[3:])
        if len(values) >= 2:
            spread = _weighted_spread(values, weights, centre)
            n_eff = weights.sum() ** 2 / (weights**2).sum()
            scale = np.array(cfg.confidence_scale)
            axis_confidence = np.exp(-0.5 * (spread / scale) ** 2) * min(1.0, n_eff / cfg.min_frames)
        else:
            spread = np.full(6, np.nan)
            axis_confidence = np.zeros(6)
        confidence = float(np.exp(np.mean(np.log(np.maximum(axis_confidence, 1e-12)))))
        if confidence < 1e-9:
            confidence = 0.0
        target = pose_mm @ action_to_matrix(action) if pose_mm is not None else None
        self._history.append((stamp_s, target, action, pose_mm))
        return FusedEstimate(fused, axis_confidence, confidence, spread, frames, compensated)


class PlaneReachedJudge:
    """Decides "plane reached" from successive guidance actions, with hysteresis (module docstring)."""

    def __init__(self, config=None):
        """Start in the "not reached" state."""
        self.config = ReachedConfig() if config is None else config
        self._distances = collections.deque(maxlen=64)
        self.reset()

    def reset(self):
        """Back to "not reached"."""
        self.reached = False
        self._streak = 0
        self._distances.clear()
        self.distance = math.nan

    def still_distance(self, stamp_s, pose_mm):
        """Median distance of the recent frames taken where the probe is now (NaN when there are none)."""
        cfg = self.config
        values = []
        for stamp, pose, distance in self._distances:
            if stamp_s - stamp > cfg.distance_window_s:
                continue
            if pose is not None and pose_mm is not None:
                relative = invert_transform(pose_mm) @ pose
                moved = float(np.linalg.norm(relative[:3, 3]))
                cosine = min(1.0, max(-1.0, (np.trace(relative[:3, :3]) - 1.0) / 2.0))
                if moved > cfg.still_mm or math.degrees(math.acos(cosine)) > cfg.still_deg:
                    continue
            values.append(distance)
        return float(np.median(values)) if values else math.nan

    def update(self, action, confidence, valid=True, distance=None, pose_mm=None, stamp_s=None):
        """Feed one frame's guidance; return whether the plane is judged reached.

        Args:
            action, confidence: the frame's (fused) guidance and its confidence.
            valid: False resets the judgement.
            distance: the distance head's answer for this frame, or None when the model has none.
            pose_mm, stamp_s: the probe pose and the frame time (which frames count as "still").
        """
        cfg = self.config
        if not valid:
            self.reset()
            return False
        translation = float(np.linalg.norm(np.asarray(action, dtype=float)[:3]))
        rotation = rotation_angle_deg(action)
        far, near = False, True
        if distance is not None and math.isfinite(distance):
            stamp = 0.0 if stamp_s is None else float(stamp_s)
            self._distances.append((stamp, None if pose_mm is None else np.asarray(pose_mm, float), distance))
            self.distance = self.still_distance(stamp, pose_mm)
            far = self.distance > cfg.exit_distance
            near = self.distance <= cfg.max_distance
        else:
            self.distance = math.nan
        if self.reached:
            outside = translation > cfg.exit_mm or rotation > cfg.exit_deg or far
            self._streak = self._streak + 1 if outside else 0
            if self._streak >= cfg.exit_frames:
                self.reached, self._streak = False, 0
        else:
            inside = (
                translation <= cfg.enter_mm
                and rotation <= cfg.enter_deg
                and confidence >= cfg.min_confidence
                and near
            )
            self._streak = self._streak + 1 if inside else 0
            if self._streak >= cfg.enter_frames:
                self.reached, self._streak = True, 0
        return self.reached
