"""Training configuration files (``config/train/*.yaml``): parsing, defaults and validation.

A file has four sections; every key is optional except ``data.dir`` and unknown keys are errors::

    name: cpu_baseline
    seed: 0
    model:  {...}   # echo_guidance.models.ModelConfig fields; action_scale, pixel_mean and pixel_std
                    # default to the training split's statistics from the dataset manifest
    data:   {dir, train_split, val_split, num_workers, max_pair_gap_s}
    train:  {batch_size (global, over all ranks), steps | epochs, lr, min_lr, weight_decay, betas,
             warmup_steps, grad_clip, amp, channels_last, device, threads, log_every, val_every,
             val_batches, ckpt_every, out_dir}
    loss:   {beta, balanced, policy_weight, latent_weight, distance_weight}

Relative paths (``data.dir``, ``train.out_dir``) are resolved against the current directory.
"""

import copy
import dataclasses
import pathlib

import yaml

from echo_guidance.models.config import ModelConfig, ModelConfigError


class TrainConfigError(ValueError):
    """A training configuration that is invalid, with the key and the reason."""


@dataclasses.dataclass
class DataSection:
    """Where the samples come from and how they are loaded."""

    dir: str = ''
    train_split: str = 'train'
    val_split: str = 'val'
    num_workers: int = 1
    max_pair_gap_s: float = None


@dataclasses.dataclass
class TrainSection:
    """Optimisation and bookkeeping."""

    batch_size: int = 32
    steps: int = None
    epochs: float = None
    lr: float = 1e-4
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: tuple = (0.9, 0.999)
    warmup_steps: int = 0
    grad_clip: float = 1.0
    amp: str = 'auto'
    channels_last: bool = True
    device: str = 'auto'
    threads: int = None
    log_every: int = 20
    val_every: int = 500
    val_batches: int = 20
    ckpt_every: int = 500
    out_dir: str = 'out/train/run'
    init_from: str = None  # warm start: weights of this checkpoint where names and shapes match


@dataclasses.dataclass
class LossSection:
    """Loss settings (see echo_guidance.models.losses)."""

    beta: float = 0.1
    balanced: bool = True
    policy_weight: float = 1.0
    latent_weight: float = 0.0
    distance_weight: float = 1.0  # the distance head's term, for models with model.distance_head


AMP_MODES = ('auto', 'bf16', 'fp16', 'none')
STATS_KEYS = ('action_scale', 'pixel_mean', 'pixel_std')


@dataclasses.dataclass
class TrainConfig:
    """A parsed training configuration."""

    name: str
    seed: int
    model: dict
    data: DataSection
    train: TrainSection
    loss: LossSection
    source: str = ''

    def to_dict(self):
        """Plain-Python form for checkpoints and logs."""
        return {
            'name': self.name,
            'seed': self.seed,
            'model': copy.deepcopy(self.model),
            'data': dataclasses.asdict(self.data),
            'train': {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self.train).items()
            },
            'loss': dataclasses.asdict(self.loss),
            'source': self.source,
        }

    def model_config(self, dataset_stats=None):
        """The ModelConfig, with statistics the config leaves out taken from ``dataset_stats``."""
        values = dict(self.model)
        for key in STATS_KEYS:
            if key not in values and dataset_stats and key in dataset_stats:
                values[key] = dataset_stats[key]
        try:
            return ModelConfig.from_dict(values)
        except (ModelConfigError, TypeError) as exc:
            raise TrainConfigError(f'{self.source or "config"}: {exc}') from exc


def _section(cls, values, name, source):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise TrainConfigError(f'{source}: section {name!r} must be a mapping, got {type(values).__name__}')
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TrainConfigError(
            f'{source}: unknown key(s) in {name!r}: {", ".join(unknown)}; known: {", ".join(sorted(known))}'
        )
    return cls(**values)


def parse_config(values, source='<dict>'):
    """Validate a configuration mapping and return a TrainConfig."""
    if not isinstance(values, dict):
        raise TrainConfigError(f'{source}: a training config must be a mapping at the top level')
    top = {'name', 'seed', 'model', 'data', 'train', 'loss'}
    unknown = sorted(set(values) - top)
    if unknown:
        raise TrainConfigError(
            f'{source}: unknown top-level key(s) {", ".join(unknown)}; known: {", ".join(sorted(top))}'
        )
    cfg = TrainConfig(
        name=str(values.get('name') or pathlib.Path(source).stem),
        seed=int(values.get('seed', 0)),
        model=dict(values.get('model') or {}),
        data=_section(DataSection, values.get('data'), 'data', source),
        train=_section(TrainSection, values.get('train'), 'train', source),
        loss=_section(LossSection, values.get('loss'), 'loss', source),
        source=source,
    )
    t = cfg.train
    t.betas = tuple(t.betas)
    if not cfg.data.dir:
        raise TrainConfigError(
            f'{source}: data.dir is required (a directory made by `echo-guidance dataset build`)'
        )
    if (t.steps is None) == (t.epochs is None):
        raise TrainConfigError(f'{source}: give exactly one of train.steps and train.epochs')
    if t.steps is not None and t.steps < 1:
        raise TrainConfigError(f'{source}: train.steps must be >= 1, got {t.steps}')
    if t.epochs is not None and not t.epochs > 0:
        raise TrainConfigError(f'{source}: train.epochs must be > 0, got {t.epochs}')
    if t.amp not in AMP_MODES:
        raise TrainConfigError(f'{source}: train.amp {t.amp!r}: expected one of {", ".join(AMP_MODES)}')
    if t.batch_size < 1:
        raise TrainConfigError(f'{source}: train.batch_size must be >= 1, got {t.batch_size}')
    if not t.lr > 0:
        raise TrainConfigError(f'{source}: train.lr must be > 0, got {t.lr}')
    if t.device not in ('auto', 'cpu', 'cuda'):
        raise TrainConfigError(f'{source}: train.device {t.device!r}: expected auto, cpu or cuda')
    for key in ('log_every', 'val_every', 'ckpt_every'):
        if getattr(t, key) < 1:
            raise TrainConfigError(f'{source}: train.{key} must be >= 1')
    cfg.model_config({'action_scale': [1.0] * 6, 'pixel_mean': 0.5, 'pixel_std': 0.25})  # validates model
    return cfg


def load_config(path, overrides=None):
    """Read a YAML training config; ``overrides`` are ``section.key=value`` strings (value parsed as YAML)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise TrainConfigError(f'training config {path} does not exist')
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TrainConfigError(f'{path} is not valid YAML: {exc}') from exc
    values = values or {}
    for item in overrides or []:
        if '=' not in item:
            raise TrainConfigError(f'override {item!r}: expected section.key=value')
        key, raw = item.split('=', 1)
        parts = key.split('.')
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TrainConfigError(f'override {item!r}: {part} is not a section')
        node[parts[-1]] = yaml.safe_load(raw)
    return parse_config(values, str(path))
