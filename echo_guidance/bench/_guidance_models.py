"""Model files for the guidance benchmarks: a trained checkpoint or ONNX file, or random weights of a config.

Latency depends on the architecture, not on the weights: without a trained model the benchmarks
build the configured network (e.g. ResNet-34 at 128², config/train/cpu_dreamer.yaml) with random
weights, export it like ``echo-guidance export`` does, and quantize a copy like ``echo-guidance
guidance quantize`` does. Every benchmark prints which it used.
"""

import json
from pathlib import Path

import numpy as np

DEFAULT_CONFIG = 'config/train/cpu_dreamer.yaml'


def model_config_from(config_path, input_size=None):
    """ModelConfig of a training config's ``model:`` section (input size overridden when given)."""
    import yaml

    from echo_guidance.models.config import ModelConfig
    from echo_guidance.resources import config_path as packaged

    path = Path(config_path)
    if not path.is_file():
        path = packaged(str(config_path).removeprefix('config/'))
    values = yaml.safe_load(path.read_text()).get('model') or {}
    config = ModelConfig.from_dict(values)
    return config.replace(input_size=int(input_size)) if input_size else config


def random_checkpoint(config, out_dir, seed=0):
    """Save a checkpoint of ``config`` with random weights in ``out_dir``; return its path."""
    import torch

    from echo_guidance.engine.checkpoint import save_checkpoint
    from echo_guidance.models.networks import build_model

    torch.manual_seed(seed)
    model = build_model(config).eval()
    name = f'random_{config.kind}_{config.encoder}_{config.input_size}'
    return save_checkpoint(Path(out_dir) / name / 'best.pt', model)


def export_checkpoint(checkpoint, out_dir):
    """Export ``checkpoint`` to ONNX in ``out_dir`` (as echo-guidance export does); return the path."""
    from echo_guidance.engine.export import export_onnx

    checkpoint = Path(checkpoint)
    name = checkpoint.parent.name if checkpoint.stem in ('best', 'last') else checkpoint.stem
    path, _ = export_onnx(checkpoint, Path(out_dir) / f'{name}.onnx')
    return path


def quantized_copy(onnx_path, out_dir, calibration_data=None, frames=32, seed=0):
    """Int8 copy of an ONNX model; calibration frames from a dataset directory, or random frames.

    Returns (path, record, calibration description).
    """
    from echo_guidance.guidance.backends import OnnxRuntimeBackend
    from echo_guidance.guidance.quantize import frames_from_dataset, quantize_model

    size = OnnxRuntimeBackend(onnx_path, 'cpu').input_size
    if calibration_data:
        calibration = frames_from_dataset(calibration_data, size, frames, seed=seed)
        check = frames_from_dataset(calibration_data, size, frames, split='val', seed=seed + 1)
        source = f'{frames} frames of {calibration_data}/train (checked on val)'
    else:
        rng = np.random.default_rng(seed)
        calibration = (rng.integers(0, 256, (frames, size, size), dtype=np.uint8), np.arange(frames) % 3)
        check = (rng.integers(0, 256, (8, size, size), dtype=np.uint8), np.arange(8) % 3)
        source = f'{frames} random frames (latency only: the accuracy of this copy is not meaningful)'
    out = Path(out_dir) / (Path(onnx_path).stem + '_int8.onnx')
    record = quantize_model(onnx_path, out, calibration, check)
    return out, record, source


def describe_file(path):
    """One line naming a model file and, for ONNX files, its architecture."""
    from echo_guidance.guidance.backends import read_onnx_metadata

    path = Path(path)
    if path.suffix == '.onnx':
        meta = read_onnx_metadata(path)
        config = json.loads(meta.get('model_config', '{}'))
        return (
            f'{path} ({config.get("kind")}, {config.get("encoder")}, {meta.get("input_size")}², '
            f'checkpoint {meta.get("checkpoint_sha256", "")[:8]})'
        )
    return str(path)
