"""Shared pieces of the learning-stack tests (test_models_*, test_data_*, test_train_*).

Import the fixtures into a test module (``from learning_helpers import synthetic_dataset``) to use them.
"""

import pathlib

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO / 'config' / 'train' / 'tiny_test.yaml'

TINY_MODEL = dict(
    encoder='resnet10',
    encoder_width=0.25,
    input_size=64,
    query_dim=32,
    head_hidden=(64, 32),
    dreamer_dim=64,
    dreamer_layers=1,
    dreamer_heads=4,
    dreamer_ff=128,
)


def tiny_config(data_dir, out_dir, **sections):
    """The tiny test config pointed at ``data_dir`` / ``out_dir``; ``sections`` update its sections."""
    from echo_guidance.engine.config import parse_config

    values = yaml.safe_load(TINY_CONFIG.read_text())
    values['data']['dir'] = str(data_dir)
    values['train']['out_dir'] = str(out_dir)
    for section, updates in sections.items():
        if isinstance(updates, dict):
            values.setdefault(section, {}).update(updates)
        else:
            values[section] = updates
    return parse_config(values, str(TINY_CONFIG))


def make_synthetic_dataset(root, subjects=5, frames=16, size=64, seed=0):
    """Write a small synthetic dataset (3 planes per subject) and return its manifest."""
    from echo_guidance.data.dataset import write_dataset
    from echo_guidance.data.synthetic import synthetic_demonstrations

    demos = synthetic_demonstrations(n_subjects=subjects, frames_per_demo=frames, size=size, seed=seed)
    return write_dataset(demos, root, size=size, seed=seed)


@pytest.fixture(scope='module')
def synthetic_dataset(tmp_path_factory):
    """A 5-subject synthetic dataset of 64×64 frames (train 3 subjects, val 1, test 1)."""
    root = tmp_path_factory.mktemp('learning') / 'dataset'
    make_synthetic_dataset(root)
    return root
