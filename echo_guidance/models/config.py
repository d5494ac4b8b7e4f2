"""The description of a guidance model: everything needed to rebuild it, and to tell two apart.

A :class:`ModelConfig` travels inside every checkpoint. Loading a checkpoint rebuilds the network from
it, and a training run that resumes compares it with the configuration file, so that a mismatch is
reported by name ("model.encoder: checkpoint resnet18, config resnet34") instead of as a wall of
missing state-dict keys.
"""

import dataclasses
import math

from echo_guidance.planes import GUIDANCE_PLANES, check_plane

ENCODER_LAYERS = {
    'resnet10': (1, 1, 1, 1),
    'resnet18': (2, 2, 2, 2),
    'resnet34': (3, 4, 6, 3),
}
"""Residual blocks per stage of the supported ResNet encoders (basic blocks)."""

MODEL_KINDS = ('baseline', 'dreamer')
"""``baseline``: the policy π = G(E(S), q). ``dreamer``: the policy plus Cardiac Dreamer I."""

ACTION_AXES = ('x', 'y', 'z', 'roll', 'pitch', 'yaw')
"""Names of the six action components: translation in mm, rotation in degrees."""

DEFAULT_ACTION_SCALE = (10.0, 10.0, 10.0, 10.0, 10.0, 10.0)
"""Per-axis scale (mm, mm, mm, deg, deg, deg) used when the dataset gives none."""


class ModelConfigError(ValueError):
    """A model configuration that is invalid or does not match a checkpoint."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and fixed normalisation of a guidance model.

    Attributes:
        kind: ``baseline`` or ``dreamer``.
        encoder: ResNet depth: ``resnet10``, ``resnet18`` or ``resnet34`` (the paper's).
        encoder_width: Width multiplier of the ResNet channels (1.0 = 64..512 channels).
        input_size: Side of the square grayscale input frame in pixels (224 in the paper config).
        query_dim: Size of each learnable plane query q_i.
        head_hidden: Hidden sizes of the guidance layer G; its output is 6 (the paper: 2048, 512, 6).
        head_dropout: Dropout between the hidden layers of G.
        dreamer_dim: Token width inside Cardiac Dreamer.
        dreamer_layers: Transformer encoder layers in Cardiac Dreamer.
        dreamer_heads: Attention heads per layer.
        dreamer_ff: Feed-forward width per layer.
        dreamer_dropout: Dropout inside the transformer.
        planes: Target planes in query-index order.
        action_scale: Per-axis scale (mm, mm, mm, deg, deg, deg); the network predicts a / scale.
        pixel_mean: Mean grey level (0..1) subtracted from the input frame.
        pixel_std: Standard deviation (0..1) the input frame is divided by.
        distance_head: Add the stop judgement's head: it predicts the distance to the plane,
            max(translation / tolerance mm, geodesic rotation / tolerance deg), so 1 is the edge of
            the success window (:func:`plane_distance`).
        distance_tolerance: (mm, degrees) of one unit of that distance (the success window, 5 mm / 5°).
        distance_max: Distances are learned clipped to this (far from the plane only "far" matters).
    """

    kind: str = 'baseline'
    encoder: str = 'resnet34'
    encoder_width: float = 1.0
    input_size: int = 128
    query_dim: int = 512
    head_hidden: tuple = (2048, 512)
    head_dropout: float = 0.0
    dreamer_dim: int = 512
    dreamer_layers: int = 4
    dreamer_heads: int = 8
    dreamer_ff: int = 2048
    dreamer_dropout: float = 0.1
    planes: tuple = GUIDANCE_PLANES
    action_scale: tuple = DEFAULT_ACTION_SCALE
    pixel_mean: float = 0.5
    pixel_std: float = 0.25
    distance_head: bool = False
    distance_tolerance: tuple = (5.0, 5.0)
    distance_max: float = 4.0

    def __post_init__(self):
        """Normalise sequences to tuples and check every field."""
        for name in ('head_hidden', 'planes', 'action_scale', 'distance_tolerance'):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, 'action_scale', tuple(float(v) for v in self.action_scale))
        object.__setattr__(self, 'head_hidden', tuple(int(v) for v in self.head_hidden))
        object.__setattr__(self, 'distance_tolerance', tuple(float(v) for v in self.distance_tolerance))
        self._validate()

    def _validate(self):
        if self.kind not in MODEL_KINDS:
            raise ModelConfigError(f'model.kind {self.kind!r}: expected one of {", ".join(MODEL_KINDS)}')
        if self.encoder not in ENCODER_LAYERS:
            raise ModelConfigError(
                f'model.encoder {self.encoder!r}: expected one of {", ".join(ENCODER_LAYERS)}'
            )
        if not self.encoder_width > 0:
            raise ModelConfigError(f'model.encoder_width must be > 0, got {self.encoder_width}')
        if self.input_size < 32 or self.input_size % 32:
            raise ModelConfigError(
                f'model.input_size must be a multiple of 32 and >= 32 (the encoder downsamples 32x), '
                f'got {self.input_size}'
            )
        if not self.planes:
            raise ModelConfigError('model.planes is empty: at least one target plane is needed')
        for plane in self.planes:
            check_plane(plane)
        if len(set(self.planes)) != len(self.planes):
            raise ModelConfigError(f'model.planes has duplicates: {self.planes}')
        if len(self.action_scale) != 6 or not all(math.isfinite(v) and v > 0 for v in self.action_scale):
            raise ModelConfigError(
                f'model.action_scale must be 6 finite positive numbers (mm x3, deg x3), '
                f'got {self.action_scale}'
            )
        if not (math.isfinite(self.pixel_std) and self.pixel_std > 0):
            raise ModelConfigError(f'model.pixel_std must be > 0, got {self.pixel_std}')
        if self.kind == 'dreamer' and self.dreamer_dim % self.dreamer_heads:
            raise ModelConfigError(
                f'model.dreamer_dim ({self.dreamer_dim}) must be divisible by model.dreamer_heads '
                f'({self.dreamer_heads})'
            )
        if not isinstance(self.distance_head, bool):
            raise ModelConfigError(f'model.distance_head must be true or false, got {self.distance_head!r}')
        if len(self.distance_tolerance) != 2 or not all(
            math.isfinite(v) and v > 0 for v in self.distance_tolerance
        ):
            raise ModelConfigError(
                f'model.distance_tolerance must be two positive numbers (mm, deg), '
                f'got {self.distance_tolerance}'
            )
        if not (math.isfinite(self.distance_max) and self.distance_max > 1):
            raise ModelConfigError(f'model.distance_max must be > 1, got {self.distance_max}')
        for name in ('query_dim', 'dreamer_dim', 'dreamer_layers', 'dreamer_heads', 'dreamer_ff'):
            if getattr(self, name) < 1:
                raise ModelConfigError(f'model.{name} must be >= 1, got {getattr(self, name)}')

    @property
    def feature_dim(self):
        """Channels of the encoder's last stage (512 for the standard ResNets)."""
        return int(512 * self.encoder_width)

    @property
    def feature_grid(self):
        """Side of the encoder's output feature map (input_size / 32)."""
        return self.input_size // 32

    @classmethod
    def from_dict(cls, values):
        """Build a config from a mapping (e.g. a YAML ``model:`` section); unknown keys are an error."""
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ModelConfigError(f'model section must be a mapping, got {type(values).__name__}')
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ModelConfigError(
                f'unknown model setting(s) {", ".join(unknown)}; known: {", ".join(sorted(known))}'
            )
        return cls(**values)

    def to_dict(self):
        """Plain-Python form (lists, floats, strings) that YAML, JSON and torch.save(weights_only) accept."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes):
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def config_differences(expected, actual, prefix='model.'):
    """List human-readable differences between two model configs (as dicts or ModelConfig).

    Returns:
        A list of strings like ``"model.encoder: checkpoint 'resnet18', config 'resnet34'"``; empty
        when they agree.
    """
    a = expected.to_dict() if isinstance(expected, ModelConfig) else dict(expected)
    b = actual.to_dict() if isinstance(actual, ModelConfig) else dict(actual)
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, '<absent>'), b.get(key, '<absent>')
        if isinstance(va, (list, tuple)) and isinstance(vb, (list, tuple)):
            same = len(va) == len(vb) and all(_close(x, y) for x, y in zip(va, vb))
        else:
            same = _close(va, vb)
        if not same:
            diffs.append(f'{prefix}{key}: checkpoint {va!r}, config {vb!r}')
    return diffs


def _close(x, y):
    if isinstance(x, float) or isinstance(y, float):
        try:
            return math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return x == y
