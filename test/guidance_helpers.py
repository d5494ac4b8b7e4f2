"""Shared pieces of the guidance and display tests (test_guidance_*, test_display_*).

- :func:`write_graph_model`: small hand-built ONNX graphs with the metadata ``echo-guidance export``
  writes, whose behaviour the tests choose: a constant action, NaN for dark frames, or deliberately
  slow (a chain of large matrix products), so node behaviour can be checked exactly.
- ``trained_tiny_models`` (session fixture): the tiny test config trained for a few steps on the
  synthetic dataset, baseline and Dreamer, exported with ``echo_guidance.engine.export`` (real models
  of the real architecture, seconds to make).
"""

import json
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


def _metadata(size, planes=('PLAX', 'PSAX-AV', 'PSAX-MV')):
    return {
        'echo_guidance.model_config': json.dumps(
            {'kind': 'baseline', 'encoder': 'handmade', 'input_size': size}
        ),
        'echo_guidance.planes': json.dumps(list(planes)),
        'echo_guidance.input_size': str(size),
        'echo_guidance.input': 'image uint8 (batch,1,S,S) grey levels; plane int64 (batch,) query index',
        'echo_guidance.output': 'action float32 (batch,6)',
        'echo_guidance.architecture_digest': 'handmade',
        'echo_guidance.checkpoint_sha256': 'feedc0de' * 8,
    }


def write_graph_model(
    path,
    kind='constant',
    action=(10.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    size=64,
    matmul_size=1024,
    matmuls=4,
    metadata=True,
):
    """Write a hand-built guidance ONNX graph to ``path`` and return the path.

    Kinds:
        ``constant``: action = ``action`` for every frame;
        ``nan_when_dark``: action = ``action`` + sqrt(mean grey level − 128) (NaN for frames darker
            than mid-grey, finite otherwise);
        ``slow``: ``constant`` after ``matmuls`` products of ``matmul_size``² matrices (tens of ms).
    """
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node('Cast', ['image'], ['image_f'], to=TensorProto.FLOAT),
        helper.make_node('ReduceMean', ['image_f'], ['mean'], axes=[1, 2, 3], keepdims=0),  # (B,)
        helper.make_node('Unsqueeze', ['mean', 'axis1'], ['mean_b1']),  # (B, 1)
        helper.make_node('Mul', ['mean_b1', 'zeros16'], ['zero_b6']),  # (B, 6) zeros
        helper.make_node('Add', ['zero_b6', 'action_const'], ['base']),
    ]
    inits = [
        helper.make_tensor('axis1', TensorProto.INT64, [1], [1]),
        helper.make_tensor('zeros16', TensorProto.FLOAT, [1, 6], [0.0] * 6),
        helper.make_tensor('action_const', TensorProto.FLOAT, [1, 6], [float(v) for v in action]),
    ]
    out = 'base'
    if kind == 'nan_when_dark':
        nodes += [
            helper.make_node('Sub', ['mean_b1', 'mid'], ['centred']),
            helper.make_node('Sqrt', ['centred'], ['root']),
            helper.make_node('Add', ['base', 'root'], ['action']),
        ]
        inits.append(helper.make_tensor('mid', TensorProto.FLOAT, [1], [128.0]))
        out = None
    elif kind == 'slow':
        rng = np.random.default_rng(0)
        weight = (rng.standard_normal((matmul_size, matmul_size)) / np.sqrt(matmul_size)).astype(np.float32)
        inits.append(helper.make_tensor('w', TensorProto.FLOAT, weight.shape, weight.ravel().tolist()))
        # Scaled by the frame's mean so that ONNX Runtime cannot fold the products into a constant.
        nodes += [
            helper.make_node('ReduceMean', ['image_f'], ['scale'], keepdims=0),
            helper.make_node('Mul', ['w', 'scale'], ['w_scaled']),
        ]
        previous = 'w_scaled'
        for k in range(matmuls):
            nodes.append(helper.make_node('MatMul', [previous, 'w'], [f'm{k}']))
            previous = f'm{k}'
        nodes += [
            helper.make_node('ReduceSum', [previous], ['total'], keepdims=0),
            helper.make_node('Mul', ['total', 'zero'], ['nothing']),
            helper.make_node('Add', ['base', 'nothing'], ['action']),
        ]
        inits.append(helper.make_tensor('zero', TensorProto.FLOAT, [], [0.0]))
        out = None
    elif kind != 'constant':
        raise ValueError(f'unknown graph kind {kind!r}')
    if out is not None:
        nodes.append(helper.make_node('Identity', [out], ['action']))
    graph = helper.make_graph(
        nodes,
        f'guidance_{kind}',
        [
            helper.make_tensor_value_info('image', TensorProto.UINT8, ['batch', 1, size, size]),
            helper.make_tensor_value_info('plane', TensorProto.INT64, ['batch']),
        ],
        [helper.make_tensor_value_info('action', TensorProto.FLOAT, ['batch', 6])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    if metadata:
        for key, value in _metadata(size).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope='session')
def trained_tiny_models(tmp_path_factory):
    """Tiny trained models: {'baseline': onnx, 'dreamer': onnx, 'baseline_pt': checkpoint, 'dataset': dir}."""
    import sys

    sys.path.insert(0, str(REPO / 'test'))
    from learning_helpers import make_synthetic_dataset, tiny_config

    from echo_guidance.engine.export import export_onnx
    from echo_guidance.engine.train import train

    root = tmp_path_factory.mktemp('guidance_models')
    make_synthetic_dataset(root / 'data')
    paths = {'dataset': root / 'data'}
    for kind in ('baseline', 'dreamer'):
        train(tiny_config(root / 'data', root / kind, model={'kind': kind}), progress=False)
        paths[f'{kind}_pt'] = root / kind / 'last.pt'
        paths[kind] = export_onnx(root / kind / 'last.pt', root / f'tiny_{kind}.onnx')[0]
    return paths
