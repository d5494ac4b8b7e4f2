"""Tests of the training engine: tiny runs, metrics log, checkpoints (weights_only), resume, clear errors."""

import json
import pathlib
import subprocess
import sys

import pytest
import torch
from learning_helpers import REPO, TINY_CONFIG, synthetic_dataset, tiny_config  # noqa: F401 (fixture)

from echo_guidance.engine import train as train_module
from echo_guidance.engine.checkpoint import CheckpointError, load_model, read_checkpoint
from echo_guidance.engine.config import TrainConfigError, load_config, parse_config
from echo_guidance.engine.train import train
from echo_guidance.models import ModelConfig


def _records(out_dir, kind):
    lines = (pathlib.Path(out_dir) / 'metrics.jsonl').read_text().splitlines()
    return [r for r in map(json.loads, lines) if r['kind'] == kind]


@pytest.mark.parametrize('kind', ['baseline', 'dreamer'])
def test_tiny_run_logs_and_checkpoints(kind, synthetic_dataset, tmp_path):  # noqa: F811
    cfg = tiny_config(synthetic_dataset, tmp_path / 'run', model={'kind': kind})
    summary = train(cfg, progress=False)
    assert summary['steps'] == 6
    train_records = _records(tmp_path / 'run', 'train')
    assert [r['step'] for r in train_records] == [2, 4, 6]
    assert all(r['samples_per_s'] > 0 and r['loss'] > 0 for r in train_records)
    expected_terms = (
        {'loss_composed', 'loss_imagined', 'loss_policy'} if kind == 'dreamer' else {'loss_policy'}
    )
    assert expected_terms <= set(train_records[0])
    assert [r['step'] for r in _records(tmp_path / 'run', 'val')] == [3, 6]
    for name in ('last.pt', 'best.pt'):
        raw = torch.load(tmp_path / 'run' / name, map_location='cpu', weights_only=True)
        assert raw['format'] == 'echo_guidance.checkpoint/1' and raw['model_config']['kind'] == kind
        assert raw['train_config']['name'] == 'tiny_test' and len(raw['dataset']['manifest_sha256']) == 64
    model, state = load_model(tmp_path / 'run' / 'last.pt')
    assert state['step'] == 6 and not model.training
    # Dataset statistics became part of the model.
    stats = json.loads((synthetic_dataset / 'manifest.json').read_text())['train_stats']
    assert model.config.action_scale == pytest.approx(tuple(stats['action_scale']))


def test_resume_continues_exactly(synthetic_dataset, tmp_path, monkeypatch):  # noqa: F811
    straight = tiny_config(synthetic_dataset, tmp_path / 'straight')
    train(straight, progress=False)

    interrupted = tiny_config(synthetic_dataset, tmp_path / 'resumed')
    calls = {'n': 0}
    forward = train_module.LossModule.forward

    def crash_on_fourth_step(self, batch):
        calls['n'] += 1
        if calls['n'] == 4:
            raise KeyboardInterrupt('simulated crash')
        return forward(self, batch)

    monkeypatch.setattr(train_module.LossModule, 'forward', crash_on_fourth_step)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, progress=False)
    monkeypatch.setattr(train_module.LossModule, 'forward', forward)
    assert read_checkpoint(tmp_path / 'resumed' / 'last.pt')['step'] == 3
    summary = train(interrupted, resume='auto', progress=False)
    assert summary['steps'] == 6
    a = read_checkpoint(tmp_path / 'straight' / 'last.pt')['model_state']
    b = read_checkpoint(tmp_path / 'resumed' / 'last.pt')['model_state']
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    final = [r for r in _records(tmp_path / 'resumed', 'train') if r['step'] == 6][-1]
    assert final['loss'] == pytest.approx(_records(tmp_path / 'straight', 'train')[-1]['loss'], rel=1e-4)


def test_resume_with_another_model_names_the_difference(synthetic_dataset, tmp_path):  # noqa: F811
    train(tiny_config(synthetic_dataset, tmp_path / 'run'), progress=False)
    other = tiny_config(
        synthetic_dataset, tmp_path / 'run', model={'encoder': 'resnet18'}, train={'steps': 8}
    )
    with pytest.raises(CheckpointError, match="model.encoder: checkpoint 'resnet10', config 'resnet18'"):
        train(other, resume='auto', progress=False)


def test_checkpoint_errors(synthetic_dataset, tmp_path):  # noqa: F811
    train(tiny_config(synthetic_dataset, tmp_path / 'run'), progress=False)
    path = tmp_path / 'run' / 'last.pt'
    state = read_checkpoint(path)
    expected = ModelConfig.from_dict({**state['model_config'], 'query_dim': 64})
    with pytest.raises(CheckpointError, match='model.query_dim: checkpoint 32, config 64'):
        load_model(path, expected_config=expected)
    # A config edited after saving no longer builds the saved architecture.
    state['model_config']['head_hidden'] = [128, 32]
    with pytest.raises(CheckpointError, match='different architecture.*head.mlp.0.weight'):
        load_model(state)
    truncated = tmp_path / 'truncated.pt'
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match='cannot read checkpoint'):
        read_checkpoint(truncated)
    foreign = tmp_path / 'foreign.pt'
    torch.save({'state_dict': {}}, foreign)
    with pytest.raises(CheckpointError, match='not an echo_guidance checkpoint'):
        read_checkpoint(foreign)
    with pytest.raises(CheckpointError, match='does not exist'):
        read_checkpoint(tmp_path / 'missing.pt')


@pytest.mark.parametrize(
    'values, message',
    [
        ({'train': {'stepz': 3}}, "unknown key.*'train': stepz"),
        ({'train': {'steps': 3, 'epochs': 1}}, 'exactly one of train.steps and train.epochs'),
        ({'train': {'steps': 3, 'amp': 'fp8'}}, 'train.amp'),
        ({'train': {'steps': 3}, 'model': {'encoder': 'vit'}}, 'model.encoder'),
        ({'train': {'steps': 3}, 'extras': 1}, 'unknown top-level key'),
    ],
)
def test_config_errors(values, message):
    values = {'data': {'dir': 'somewhere'}, **values}
    with pytest.raises(TrainConfigError, match=message):
        parse_config(values)
    with pytest.raises(TrainConfigError, match='data.dir is required'):
        parse_config({'train': {'steps': 3}})


def test_shipped_configs_parse():
    names = sorted(p.name for p in (REPO / 'config' / 'train').glob('*.yaml'))
    assert {
        'cpu_baseline.yaml',
        'cpu_dreamer.yaml',
        'paper_gpu_baseline.yaml',
        'paper_gpu_dreamer.yaml',
        'tiny_test.yaml',
    } <= set(names)
    for name in names:
        cfg = load_config(REPO / 'config' / 'train' / name)
        model = cfg.model_config({'action_scale': [1.0] * 6, 'pixel_mean': 0.5, 'pixel_std': 0.2})
        if name.startswith('paper_gpu'):
            assert (
                model.encoder == 'resnet34' and model.input_size == 224 and model.head_hidden == (2048, 512)
            )
            assert cfg.train.lr == 1e-4 and cfg.train.epochs == 300


def test_train_command(synthetic_dataset, tmp_path, capsys):  # noqa: F811
    out = tmp_path / 'cli'
    cmd = [
        sys.executable,
        '-m',
        'echo_guidance.cli',
        'train',
        str(TINY_CONFIG),
        '--no-progress',
        '--set',
        f'data.dir={synthetic_dataset}',
        '--set',
        f'train.out_dir={out}',
        '--set',
        'train.steps=2',
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])['steps'] == 2
    from echo_guidance.cli import main

    assert main(cmd[3:6] + ['--set', 'data.dir=/nonexistent']) == 1
    assert 'not a dataset directory' in capsys.readouterr().err
