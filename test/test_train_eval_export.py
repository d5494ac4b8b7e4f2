"""Tests of evaluation (Table 1, CIs, Fig. 3 plot) and ONNX export with its parity check."""

import json

import numpy as np
import pytest
from learning_helpers import synthetic_dataset, tiny_config  # noqa: F401 (fixture)

from echo_guidance.engine.checkpoint import CheckpointError
from echo_guidance.engine.evaluate import evaluate
from echo_guidance.engine.export import export_onnx, parity_check
from echo_guidance.engine.train import train
from echo_guidance.models.config import ACTION_AXES


@pytest.fixture(scope='module')
def checkpoints(synthetic_dataset, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp('runs')
    paths = {}
    for kind in ('baseline', 'dreamer'):
        train(tiny_config(synthetic_dataset, root / kind, model={'kind': kind}), progress=False)
        paths[kind] = root / kind / 'last.pt'
    return paths


def test_evaluate_side_by_side(checkpoints, synthetic_dataset, tmp_path):  # noqa: F811
    out = tmp_path / 'eval'
    results = evaluate(
        [checkpoints['baseline'], checkpoints['dreamer']],
        synthetic_dataset,
        out,
        labels=['base', 'dream'],
        n_boot=200,
    )
    assert {p.name for p in out.iterdir()} >= {
        'results.json',
        'results.md',
        'stability.png',
        'predictions_base.npz',
        'predictions_dream.npz',
        'predictions_dream_policy_head.npz',
    }
    assert (out / 'stability.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert json.loads((out / 'results.json').read_text()) == json.loads(json.dumps(results))
    assert results['ci']['percentiles'] == [2.5, 97.5]
    assert set(results['per_plane']) == {'PLAX', 'PSAX-AV', 'PSAX-MV', 'all'}
    # Table 1 numbers are the plain MAE of the saved predictions.
    pred = np.load(out / 'predictions_base.npz')
    plax = pred['plane'] == 0
    err = np.abs(pred['pred'] - pred['target'])
    err[:, 3:] = (err[:, 3:] + 180) % 360 - 180
    for i, axis in enumerate(ACTION_AXES):
        cell = results['per_plane']['PLAX']['base'][f'mae_{axis}']
        assert cell['mean'] == pytest.approx(np.abs(err[plax, i]).mean(), rel=1e-5)
        assert cell['ci_low'] <= cell['mean'] + 1e-9 and cell['mean'] <= cell['ci_high'] + 1e-9
    change = results['relative_change_percent']['PLAX']['dream vs base']['mae_x']['percent']
    base_x = results['per_plane']['PLAX']['base']['mae_x']['mean']
    dream_x = results['per_plane']['PLAX']['dream']['mae_x']['mean']
    assert change == pytest.approx(100 * (dream_x - base_x) / base_x)
    curve = results['stability']['PLAX']['base']
    assert sum(curve['count']) == int(plax.sum()) and len(curve['mean']) == len(curve['std'])
    md = (out / 'results.md').read_text()
    assert '| PLAX | dream |' in md and '95 %' in md and '2.5–97.5' in md


def test_evaluate_within_a_window_and_the_stop_judgement_table(synthetic_dataset, tmp_path):  # noqa: F811
    from echo_guidance.engine.evaluate import within_mask
    from echo_guidance.engine.train import distance_metrics

    run = tmp_path / 'run'
    config = tiny_config(synthetic_dataset, run, model={'kind': 'baseline', 'distance_head': True})
    train(config, progress=False)
    everything = evaluate([run / 'last.pt'], synthetic_dataset, tmp_path / 'all', labels=['m'], n_boot=50)
    near = evaluate(
        [run / 'last.pt'], synthetic_dataset, tmp_path / 'near', labels=['m'], n_boot=50, within=(10.0, 10.0)
    )
    pred = np.load(tmp_path / 'near' / 'predictions_m.npz')
    keep = within_mask(pred['target'], (10.0, 10.0))
    assert keep.all() and 0 < near['samples'] < everything['samples']
    assert np.all(np.abs(pred['target'][:, :3]) <= 10.0) and np.all(np.abs(pred['target'][:, 3:]) <= 10.0)
    rows = near['stop_judgement']['m']
    assert [r['threshold'] for r in rows] == [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0]
    assert rows[3] == {'threshold': 0.6, **distance_metrics(pred['distance'], pred['target'], threshold=0.6)}
    assert '## Stop judgement' in (tmp_path / 'near' / 'results.md').read_text()
    from echo_guidance.engine.cli import _mm_deg

    assert _mm_deg('10,5') == (10.0, 5.0)
    for bad in ('10', '10,x', '0,5'):
        with pytest.raises(Exception, match='MM'):
            _mm_deg(bad)


def test_evaluate_rejects_bad_checkpoints(synthetic_dataset, tmp_path):  # noqa: F811
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='cannot read checkpoint'):
        evaluate([bad], synthetic_dataset, tmp_path / 'eval')


@pytest.mark.parametrize('kind', ['baseline', 'dreamer'])
def test_onnx_export_matches_pytorch(kind, checkpoints, synthetic_dataset, tmp_path):  # noqa: F811
    import onnx
    import onnxruntime as ort

    from echo_guidance.data.dataset import GuidanceDataset

    path, model = export_onnx(checkpoints[kind], tmp_path / f'{kind}.onnx')
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta['echo_guidance.planes']) == ['PLAX', 'PSAX-AV', 'PSAX-MV']
    assert json.loads(meta['echo_guidance.model_config'])['kind'] == kind
    assert proto.opset_import[0].version >= 17
    # Real frames of the test split, every plane, several batch sizes (the batch axis is dynamic).
    frames = np.asarray(GuidanceDataset(synthetic_dataset).split('test')['frames'][:5])[:, None]
    for batch in (1, 5):
        parity = parity_check(model, path, images=frames[:batch], planes=np.arange(batch) % 3)
        assert parity['onnx'].shape == (batch, 6)
        assert parity['max_abs_diff'] < 1e-3, parity['max_abs_diff']
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['image', 'plane']
    assert session.get_inputs()[0].type == 'tensor(uint8)'
