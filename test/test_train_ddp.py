"""Data-parallel training: ``torchrun --nproc_per_node 2`` (gloo on CPU) follows the one-process loss curve.

Both runs see the same global batches (the sampler shards each global batch across ranks), so their
losses differ only through BatchNorm statistics, which each rank computes on its half of the batch.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from learning_helpers import REPO, TINY_CONFIG, synthetic_dataset, tiny_config  # noqa: F401 (fixture)

from echo_guidance.engine.train import train

STEPS = 24


def _losses(out_dir):
    lines = (pathlib.Path(out_dir) / 'metrics.jsonl').read_text().splitlines()
    return np.array([r['loss'] for r in map(json.loads, lines) if r['kind'] == 'train'])


@pytest.mark.slow
def test_two_processes_follow_the_single_process_curve(synthetic_dataset, tmp_path):  # noqa: F811
    overrides = {'steps': STEPS, 'log_every': 1, 'val_every': 1000, 'ckpt_every': 1000, 'batch_size': 16}
    train(tiny_config(synthetic_dataset, tmp_path / 'one', train=overrides), progress=False)

    torchrun = shutil.which('torchrun', path=os.path.dirname(sys.executable)) or 'torchrun'
    cmd = [
        torchrun,
        '--standalone',
        '--nproc_per_node',
        '2',
        '-m',
        'echo_guidance.cli',
        'train',
        str(TINY_CONFIG),
        '--no-progress',
        '--set',
        f'data.dir={synthetic_dataset}',
        '--set',
        f'train.out_dir={tmp_path / "two"}',
    ]
    cmd += [arg for k, v in overrides.items() for arg in ('--set', f'train.{k}={v}')]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = json.loads((tmp_path / 'two' / 'metrics.jsonl').read_text().splitlines()[0])
    assert start['world_size'] == 2

    one, two = _losses(tmp_path / 'one'), _losses(tmp_path / 'two')
    assert len(one) == len(two) == STEPS
    # Same curve shape: the per-step losses move together and stay within a few per cent.
    assert np.corrcoef(one, two)[0, 1] > 0.95, (one, two)
    assert np.mean(np.abs(one - two) / one) < 0.1, (one, two)
    assert two[-6:].mean() < two[:6].mean() and one[-6:].mean() < one[:6].mean()
