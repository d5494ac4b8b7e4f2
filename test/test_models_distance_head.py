"""The stop judgement's distance head: target, loss, training, two-output export, backends, warm start."""

import numpy as np
import pytest
import torch
from learning_helpers import TINY_MODEL, synthetic_dataset, tiny_config  # noqa: F401 (fixture)

from echo_guidance.engine.checkpoint import CheckpointError, load_model, warm_start
from echo_guidance.engine.export import export_onnx, parity_check
from echo_guidance.engine.train import distance_metrics, train
from echo_guidance.geometry import plane_distance
from echo_guidance.models.config import ModelConfig, ModelConfigError
from echo_guidance.models.losses import baseline_loss
from echo_guidance.models.networks import build_model


def test_plane_distance_is_in_units_of_the_success_window():
    actions = np.array([[3, 4, 0, 0, 0, 0], [0, 0, 1, 0, 10, 0], [1, 0, 0, 0, 0, 2.5]], float)
    assert np.allclose(plane_distance(actions), [1.0, 2.0, 0.5])
    assert np.allclose(plane_distance(actions, 10.0, 5.0), [0.5, 2.0, 0.5])
    assert torch.allclose(
        plane_distance(torch.tensor(actions)), torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    )


def test_the_distance_head_is_learned_with_its_own_loss_term():
    config = ModelConfig(kind='baseline', distance_head=True, **TINY_MODEL)
    model = build_model(config)
    batch = {
        'image': torch.randint(0, 255, (4, 1, 64, 64), dtype=torch.uint8),
        'plane': torch.tensor([0, 1, 2, 0]),
        'action': torch.tensor(
            [[0, 0, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 40], [1, 1, 1, 1, 1, 1.0]]
        ),
    }
    loss, terms = baseline_loss(model, batch)
    assert set(terms) == {'policy', 'distance'} and torch.isfinite(loss)
    loss.backward()
    assert model.distance.mlp[0].weight.grad.abs().sum() > 0
    distance = model.predict_distance(model.encode(batch['image']), batch['plane'])
    assert distance.shape == (4,) and bool((distance >= 0).all())
    # A model without the head has no distance term and says so when asked.
    plain = build_model(ModelConfig(kind='baseline', **TINY_MODEL))
    assert set(baseline_loss(plain, batch)[1]) == {'policy'}
    with pytest.raises(ModelConfigError, match='no distance head'):
        plain.predict_distance(plain.encode(batch['image']), batch['plane'])
    with pytest.raises(ModelConfigError, match='distance_tolerance'):
        ModelConfig(distance_head=True, distance_tolerance=(5.0, 0.0))


def test_distance_metrics_count_false_and_missed_reached():
    targets = np.array(
        [[1, 0, 0, 0, 0, 0], [8, 0, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0], [0, 0, 0, 0, 9, 0]], float
    )
    # True distances 0.2, 1.6, 0.4, 1.8; the head calls the second one reached and misses the third.
    metrics = distance_metrics(np.array([0.2, 0.9, 1.2, 1.8]), targets)
    assert metrics['false_reached'] == pytest.approx(0.5) and metrics['missed_reached'] == pytest.approx(0.5)
    assert metrics['distance_mae'] == pytest.approx((0 + 0.7 + 0.8 + 0) / 4)


@pytest.mark.parametrize('kind', ['baseline', 'dreamer'])
def test_training_export_and_backends_carry_the_distance(kind, synthetic_dataset, tmp_path):  # noqa: F811
    from echo_guidance.guidance.backends import load_backend

    cfg = tiny_config(synthetic_dataset, tmp_path / 'run', model={'kind': kind, 'distance_head': True})
    summary = train(cfg, progress=False)
    assert 'distance_mae' in summary['last_val'] and 'false_reached' in summary['last_val']
    checkpoint = tmp_path / 'run' / 'last.pt'
    path, model = export_onnx(checkpoint, tmp_path / 'model.onnx')
    images = np.random.default_rng(0).integers(0, 256, (3, 1, 64, 64), dtype=np.uint8)
    parity = parity_check(model, path, images=images)
    assert parity['max_abs_diff'] < 1e-3
    onnx_backend = load_backend(path, 'onnxruntime-cpu', threads=1)
    torch_backend = load_backend(checkpoint, 'torch-cpu', threads=1)
    for backend in (onnx_backend, torch_backend):
        assert backend.outputs == ('action', 'distance')
        out = backend.predict_all(images[0, 0], 1)
        assert out['action'].shape == (6,) and isinstance(out['distance'], float) and out['distance'] >= 0
        assert np.allclose(backend.predict(images[0, 0], 1), out['action'])
    a, b = onnx_backend.predict_all(images[1, 0], 2), torch_backend.predict_all(images[1, 0], 2)
    assert abs(a['distance'] - b['distance']) < 1e-3


def test_warm_start_copies_matching_weights_and_keeps_new_heads(synthetic_dataset, tmp_path):  # noqa: F811
    train(tiny_config(synthetic_dataset, tmp_path / 'plain', train={'steps': 2}), progress=False)
    source, _ = load_model(tmp_path / 'plain' / 'last.pt')
    model = build_model(ModelConfig(kind='baseline', distance_head=True, **TINY_MODEL))
    report = warm_start(model, tmp_path / 'plain' / 'last.pt')
    assert report['copied'] > 10 and any(name.startswith('distance.') for name in report['skipped'])
    assert torch.equal(model.encoder.resnet.conv1.weight, source.encoder.resnet.conv1.weight)
    # Through the training config: a run that starts from another run's weights.
    cfg = tiny_config(
        synthetic_dataset,
        tmp_path / 'tuned',
        model={'distance_head': True},
        train={'steps': 2, 'init_from': str(tmp_path / 'plain' / 'last.pt')},
    )
    train(cfg, progress=False)
    with pytest.raises(CheckpointError):
        other = build_model(ModelConfig(kind='baseline', encoder='resnet18', input_size=64, query_dim=7))
        warm_start(other.head, tmp_path / 'plain' / 'last.pt')
