"""Tests of the guidance networks: shapes, the paper's head, plane queries, the Dreamer, config checks."""

import pytest
import torch
from learning_helpers import TINY_MODEL

from echo_guidance.models import (
    DreamerPolicy,
    GuidancePolicy,
    ModelConfig,
    ModelConfigError,
    architecture_digest,
    build_model,
    config_differences,
    count_parameters,
)


def tiny(kind='baseline', **kw):
    return ModelConfig(kind=kind, **{**TINY_MODEL, **kw})


def frames(batch=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=g)


def test_paper_sized_policy_has_resnet34_and_2048_512_6_head():
    model = build_model(ModelConfig(kind='baseline', encoder='resnet34', input_size=224))
    assert isinstance(model, GuidancePolicy)
    linears = [m for m in model.head.mlp if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [2048, 512, 6]
    # 512-d pooled feature concatenated with a 512-d query.
    assert linears[0].in_features == 1024
    assert model.head.queries.weight.shape == (3, 512)
    encoder_params = count_parameters(model.encoder)
    # ResNet-34 without its classifier, one input channel: ~21.3 M parameters.
    assert 21.0e6 < encoder_params < 21.5e6
    # Stem + 16 basic blocks x 2 convolutions + 3 downsampling shortcuts.
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.encoder.modules()) == 1 + 32 + 3


@pytest.mark.parametrize('kind', ['baseline', 'dreamer'])
def test_forward_shapes_and_units(kind):
    model = build_model(tiny(kind)).eval()
    with torch.no_grad():
        out = model(frames(), torch.tensor([0, 1, 2]))
        tokens = model.encode(frames())
    assert out.shape == (3, 6) and out.dtype == torch.float32
    assert tokens.shape == (3, 4, model.encoder.out_channels)  # (64 / 32)² tokens
    assert torch.isfinite(out).all()


def test_plane_query_changes_the_prediction():
    model = build_model(tiny()).eval()
    x = frames(batch=1).repeat(3, 1, 1, 1)
    with torch.no_grad():
        out = model(x, torch.tensor([0, 1, 2]))
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])


def test_untrained_dreamer_imagines_no_change_and_refines_by_composition():
    model = build_model(tiny('dreamer')).eval()
    assert isinstance(model, DreamerPolicy)
    with torch.no_grad():
        tokens = model.encode(frames())
        imagined = model.imagine(tokens, torch.tensor([[5.0, -3.0, 2.0, 10.0, -5.0, 20.0]] * 3))
        assert torch.equal(imagined, tokens)  # zero-initialised output projection
        a0, a_res, a = model.refine(tokens, torch.tensor([0, 1, 2]))
    from echo_guidance.geometry import compose_actions

    assert torch.allclose(a, compose_actions(a0, a_res), atol=1e-4)


def test_gradients_flow_through_the_composed_prediction():
    torch.manual_seed(0)
    model = build_model(tiny('dreamer')).train()
    torch.nn.init.normal_(model.dreamer.out_proj.weight, std=0.02)  # leave the identity start
    tokens = model.encode(frames())
    motion = torch.tensor([[4.0, -2.0, 1.0, 5.0, -3.0, 8.0]] * 3)
    a2 = model.to_physical(model.policy_normalised(model.imagine(tokens, motion), torch.tensor([0, 1, 2])))
    composed = model.compose(motion, a2)
    composed.abs().sum().backward()
    for name, module in [
        ('encoder', model.encoder),
        ('head', model.head),
        ('dreamer', model.dreamer),
        ('transformer', model.dreamer.transformer),
    ]:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads, f'no gradient reached the {name}'
        total = sum(float(g.abs().sum()) for g in grads)
        assert total > 0 and torch.isfinite(torch.tensor(total)), name


def test_bad_inputs_are_named():
    model = build_model(tiny()).eval()
    with pytest.raises(ValueError, match='plane index out of range'):
        model(frames(batch=1), torch.tensor([3]))
    with pytest.raises(ValueError, match=r'expected frames of shape \(batch, 1, 64, 64\)'):
        model(frames(batch=1, size=96), torch.tensor([0]))


@pytest.mark.parametrize(
    'changes, message',
    [
        ({'encoder': 'resnet50'}, 'model.encoder'),
        ({'input_size': 100}, 'multiple of 32'),
        ({'kind': 'world'}, 'model.kind'),
        ({'planes': ('PLAX', 'A2C')}, 'unknown target plane'),
        ({'action_scale': (1, 1, 1)}, 'action_scale'),
    ],
)
def test_invalid_model_configs(changes, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**changes)


def test_unknown_model_key_and_config_differences():
    with pytest.raises(ModelConfigError, match='unknown model setting.*encoder_depth'):
        ModelConfig.from_dict({'encoder_depth': 34})
    diffs = config_differences(tiny(), tiny(encoder='resnet18', input_size=96))
    assert diffs == [
        "model.encoder: checkpoint 'resnet10', config 'resnet18'",
        'model.input_size: checkpoint 64, config 96',
    ]
    assert config_differences(tiny(), ModelConfig.from_dict(tiny().to_dict())) == []


def test_architecture_digest_follows_the_architecture():
    a, b = build_model(tiny()), build_model(tiny())
    assert architecture_digest(a) == architecture_digest(b)
    assert architecture_digest(a) != architecture_digest(build_model(tiny(encoder='resnet18')))
    assert architecture_digest(a) != architecture_digest(build_model(tiny('dreamer')))
