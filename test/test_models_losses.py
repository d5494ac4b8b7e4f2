"""Tests of the losses (paper Eq. 2 and Eq. 7) and a tiny overfit check that training reduces them."""

import numpy as np
import pytest
import torch
from learning_helpers import TINY_MODEL, synthetic_dataset  # noqa: F401 (fixture)

from echo_guidance.models import ModelConfig, build_model
from echo_guidance.models.losses import (
    baseline_loss,
    dreamer_loss,
    smooth_l1_action_loss,
    wrapped_action_error,
)


def test_rotation_errors_wrap_around_180_degrees():
    err = wrapped_action_error(
        torch.tensor([[0, 0, 0, 179.0, 0, -170.0]]), torch.tensor([[0, 0, 0, -179.0, 0, 170.0]])
    )
    assert torch.allclose(err, torch.tensor([[0, 0, 0, -2.0, 0, 20.0]]))


def test_smooth_l1_is_per_axis_normalised_and_weighted():
    scale = torch.tensor([10.0, 10, 10, 5, 5, 5])
    pred = torch.tensor([[10.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    target = torch.zeros(2, 6)
    # First sample: normalised error 1 on one axis, beyond beta: 1 - beta / 2, averaged over 6 axes.
    expected = (1 - 0.05) / 6 / 2
    assert smooth_l1_action_loss(pred, target, scale, beta=0.1).item() == pytest.approx(expected)
    weighted = smooth_l1_action_loss(pred, target, scale, beta=0.1, weight=torch.tensor([2.0, 0.0]))
    assert weighted.item() == pytest.approx(2 * expected)


def _batch(pairs, n=8, seed=0):
    rng = np.random.default_rng(seed)
    from echo_guidance.geometry import action_to_matrix, relative_action

    T1 = action_to_matrix(rng.uniform(-20, 20, (n, 6)))
    T2 = action_to_matrix(rng.uniform(-20, 20, (n, 6)))
    target = action_to_matrix(rng.uniform(-20, 20, (n, 6)))
    batch = {
        'image': torch.randint(0, 256, (n, 1, 64, 64), dtype=torch.uint8),
        'plane': torch.arange(n) % 3,
        'action': torch.tensor(relative_action(T1, target), dtype=torch.float32),
        'weight': torch.ones(n),
    }
    if pairs:
        batch['motion'] = torch.tensor(relative_action(T1, T2), dtype=torch.float32)
        batch['action_t2'] = torch.tensor(relative_action(T2, target), dtype=torch.float32)
    return batch


def test_eq7_composed_term_is_zero_when_the_imagined_action_is_right():
    """If G(I(f, â12)) returned â_t2 exactly, Eq. 6 gives back â_t1: the composed term vanishes."""
    batch = _batch(pairs=True)
    model = build_model(ModelConfig(kind='dreamer', **TINY_MODEL))
    composed = model.compose(batch['motion'], batch['action_t2'])
    err = wrapped_action_error(composed, batch['action'])
    assert err.abs().max() < 1e-3


def test_eq7_terms_and_extra_terms():
    torch.manual_seed(0)
    batch = _batch(pairs=True)
    batch['image_t2'] = batch['image'].flip(0)
    model = build_model(ModelConfig(kind='dreamer', **TINY_MODEL))
    loss, terms = dreamer_loss(model, batch, policy_weight=0.0)
    assert set(terms) == {'composed', 'imagined'}
    assert loss.item() == pytest.approx(float(terms['composed'] + terms['imagined']), rel=1e-5)
    loss2, terms2 = dreamer_loss(model, batch, policy_weight=0.5, latent_weight=2.0)
    assert set(terms2) == {'composed', 'imagined', 'policy', 'latent'}
    assert loss2.item() == pytest.approx(
        float(terms2['composed'] + terms2['imagined'] + 0.5 * terms2['policy'] + 2.0 * terms2['latent']),
        rel=1e-5,
    )


@pytest.mark.parametrize('kind', ['baseline', 'dreamer'])
def test_tiny_overfit_the_loss_drops(kind, synthetic_dataset):  # noqa: F811 (fixture)
    from echo_guidance.data.dataset import GuidanceDataset
    from echo_guidance.data.loader import GuidanceBatches

    stats = GuidanceDataset(synthetic_dataset).manifest['train_stats']
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, **TINY_MODEL, **stats)).train()
    batch = GuidanceBatches(synthetic_dataset, 'train', pairs=kind == 'dreamer')[list(range(0, 48, 6))]
    loss_fn = dreamer_loss if kind == 'dreamer' else baseline_loss
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss, _ = loss_fn(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
