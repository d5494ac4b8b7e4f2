"""Checkpoints: plain state dicts plus the model's identity, loadable with ``torch.load(weights_only=True)``.

A checkpoint file is a dict::

    format               'echo_guidance.checkpoint/1'
    model_config         ModelConfig.to_dict(): everything needed to rebuild the network
    architecture_digest  SHA-256 of parameter/buffer names, shapes and dtypes (networks.architecture_digest)
    model_state          the model's state dict (float32)
    step, epoch          progress when saved
    train_config         the full training config (dict) the run used
    dataset              {'dir', 'size', 'manifest_sha256'} of the training data
    metrics              the latest validation metrics, if any
    optimizer_state, scheduler_state, scaler_state, rng_state   for resuming (absent in exported weights)
    versions             torch and echo_guidance versions

Loading rebuilds the model from ``model_config`` and checks the digest, so a checkpoint saved by a
different architecture fails with a message naming what differs.
"""

import os
import pathlib

import torch

import echo_guidance
from echo_guidance.models.config import ModelConfig, ModelConfigError, config_differences
from echo_guidance.models.networks import architecture_digest, build_model
from echo_guidance.resources import file_sha256  # noqa: F401 (re-exported: checkpoints' identity)

CHECKPOINT_FORMAT = 'echo_guidance.checkpoint/1'


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not match what it is loaded into."""


def save_checkpoint(
    path,
    model,
    step=0,
    epoch=0,
    train_config=None,
    dataset=None,
    metrics=None,
    optimizer=None,
    scheduler=None,
    scaler=None,
):
    """Write a checkpoint atomically (temporary file, then rename)."""
    model = getattr(model, 'module', model)
    state = {
        'format': CHECKPOINT_FORMAT,
        'model_config': model.config.to_dict(),
        'architecture_digest': architecture_digest(model),
        'model_state': {k: v.detach().to('cpu') for k, v in model.state_dict().items()},
        'step': int(step),
        'epoch': int(epoch),
        'train_config': train_config or {},
        'dataset': dataset or {},
        'metrics': metrics or {},
        'versions': {'torch': ''.join(torch.__version__), 'echo_guidance': echo_guidance.__version__},
    }
    if optimizer is not None:
        state['optimizer_state'] = optimizer.state_dict()
    if scheduler is not None:
        state['scheduler_state'] = scheduler.state_dict()
    if scaler is not None:
        state['scaler_state'] = scaler.state_dict()
    state['rng_state'] = torch.get_rng_state()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path):
    """Load a checkpoint dict with ``weights_only=True``; raise CheckpointError on anything unusable."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f'cannot read checkpoint {path}: {type(exc).__name__}: {exc}') from exc
    if not isinstance(state, dict) or state.get('format') != CHECKPOINT_FORMAT:
        found = state.get('format') if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f'{path} is not an echo_guidance checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})'
        )
    for key in ('model_config', 'model_state', 'architecture_digest'):
        if key not in state:
            raise CheckpointError(f'checkpoint {path} lacks {key!r}')
    return state


def load_model(path_or_state, expected_config=None, device='cpu'):
    """Rebuild the model a checkpoint describes and load its weights.

    Args:
        path_or_state: Checkpoint path or an already read checkpoint dict.
        expected_config: Optional ModelConfig (or dict) the caller expects; any difference raises
            CheckpointError listing the differing fields.
        device: Where to put the model.

    Returns:
        (model in eval mode, checkpoint dict).
    """
    state = path_or_state if isinstance(path_or_state, dict) else read_checkpoint(path_or_state)
    where = '' if isinstance(path_or_state, dict) else f' {path_or_state}'
    try:
        config = ModelConfig.from_dict(state['model_config'])
    except (ModelConfigError, TypeError) as exc:
        raise CheckpointError(f'checkpoint{where} has an unusable model config: {exc}') from exc
    if expected_config is not None:
        diffs = config_differences(config, expected_config)
        if diffs:
            raise CheckpointError(
                f'checkpoint{where} does not match the configured model: ' + '; '.join(diffs)
            )
    model = build_model(config)
    digest = architecture_digest(model)
    if digest != state['architecture_digest']:
        raise CheckpointError(
            f'checkpoint{where} was saved from a different architecture than this code builds from its '
            f'config ({_state_dict_differences(model.state_dict(), state["model_state"])})'
        )
    model.load_state_dict(state['model_state'], strict=True)
    return model.to(device).eval(), state


def _state_dict_differences(expected, found, limit=5):
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(
        k for k in set(expected) & set(found) if tuple(expected[k].shape) != tuple(found[k].shape)
    )
    parts = []
    if missing:
        parts.append(f'{len(missing)} missing, e.g. {", ".join(missing[:limit])}')
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected, e.g. {", ".join(unexpected[:limit])}')
    if shapes:
        parts.append(
            'shape differences: '
            + ', '.join(f'{k} {tuple(found[k].shape)} vs {tuple(expected[k].shape)}' for k in shapes[:limit])
        )
    return '; '.join(parts) or 'same keys and shapes, different dtypes'


def warm_start(model, path):
    """Copy the weights of checkpoint ``path`` into ``model`` where names and shapes match.

    For fine-tuning (a DAgger round continues from the previous round's model) and for adding a
    head to a trained network. Normalisation buffers (pixel statistics, action scale) keep the new
    model's values: they belong to its dataset. Returns ``{'copied': n, 'skipped': [names]}``;
    raises CheckpointError when nothing matches (the wrong checkpoint).
    """
    state = read_checkpoint(path)['model_state']
    own = model.state_dict()
    keep = {'pixel_mean', 'pixel_std', 'action_scale'}
    copied, skipped = {}, []
    for name, tensor in own.items():
        source = state.get(name)
        if name in keep or source is None or tuple(source.shape) != tuple(tensor.shape):
            skipped.append(name)
        else:
            copied[name] = source
    if not copied:
        raise CheckpointError(f'{path}: no parameter of it matches the model (names or shapes differ)')
    model.load_state_dict(copied, strict=False)
    return {'copied': len(copied), 'skipped': skipped}
