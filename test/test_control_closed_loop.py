"""Closed-loop evaluation: starts, episodes, metrics, policies, the command and `evaluate closed-loop`."""

import json
import math

import numpy as np
import pytest

from echo_guidance.cli import build_parser, main
from echo_guidance.closed_loop.episode import ClosedLoopConfig, run_episode, sample_start
from echo_guidance.closed_loop.evaluate import evaluate_closed_loop, start_rng, wilson_interval
from echo_guidance.closed_loop.policies import OracleFactory, PolicySpecError, parse_policy
from echo_guidance.control import GuidanceSample, PlannerConfig, SafetyLimits
from echo_guidance.geometry import relative_action
from echo_guidance.sim import Patient, ProbeConfig, ProbeRenderer
from echo_guidance.sim.splits import seeds_for_split


@pytest.fixture(scope='module')
def patient():
    return Patient.from_seed(seeds_for_split('test', 1)[0])


@pytest.fixture(scope='module')
def renderer(patient):
    return ProbeRenderer(patient, ProbeConfig(width=64, height=64))


def test_starts_stay_within_the_stated_range_and_are_the_same_for_every_policy(patient):
    config = ClosedLoopConfig()
    target = patient.standard_plane_pose('PSAX-AV')
    for k in range(20):
        start = sample_start(patient, 'PSAX-AV', start_rng(0, patient.seed, 'PSAX-AV', k), config)
        offset = relative_action(target, start)
        assert np.all(np.abs((np.linalg.inv(target) @ start)[:3, 3]) <= 30.0 + 1e-9)
        assert np.all(np.abs(offset[3:]) <= 30.0 + 1e-6)
        again = sample_start(patient, 'PSAX-AV', start_rng(0, patient.seed, 'PSAX-AV', k), config)
        np.testing.assert_array_equal(start, again)


def test_oracle_episode_reaches_the_plane(patient, renderer):
    config = ClosedLoopConfig(time_limit_s=20.0)
    start = sample_start(patient, 'PLAX', start_rng(0, patient.seed, 'PLAX', 0), config)
    policy = OracleFactory()('PLAX', patient.standard_plane_pose('PLAX'))
    result = run_episode(patient, renderer, 'PLAX', start, policy, SafetyLimits(), PlannerConfig(), config)
    assert result.success and result.declared_reached and result.end_state == 'plane_reached'
    assert result.final_error_mm < 2.5 and result.final_error_deg < 2.5
    assert 0 < result.time_to_plane_s < 20 and result.cycles_to_plane > 0
    assert result.path_length_mm >= result.start_error_mm - result.final_error_mm - 1e-6
    assert result.frames == pytest.approx(result.time_to_plane_s * config.frame_rate_hz, abs=2)


def test_a_policy_without_valid_guidance_never_moves_the_probe(patient, renderer):
    config = ClosedLoopConfig(time_limit_s=2.0)
    start = sample_start(patient, 'PLAX', start_rng(0, patient.seed, 'PLAX', 1), config)

    def broken(frame, pose, stamp):
        return GuidanceSample(stamp, False, np.zeros(6), 0.0, status='model failed')

    result = run_episode(patient, renderer, 'PLAX', start, broken, SafetyLimits(), PlannerConfig(), config)
    assert not result.declared_reached and math.isnan(result.time_to_plane_s)
    assert result.path_length_mm == 0.0 and result.reasons['guidance_invalid'] > 50
    assert result.final_error_mm == pytest.approx(result.start_error_mm)


def test_evaluation_pairs_policies_on_the_same_starts(patient):
    results = evaluate_closed_loop(
        {'oracle': OracleFactory(), 'noisy': OracleFactory(2.0, 2.0, seed=1)},
        [patient.seed],
        ['PSAX-MV'],
        2,
        SafetyLimits(),
        PlannerConfig(),
        ClosedLoopConfig(time_limit_s=15.0, image_size=32),
    )
    episodes = results['episodes']
    assert len(episodes) == 4
    by_policy = {name: [e for e in episodes if e['policy'] == name] for name in ('oracle', 'noisy')}
    for a, b in zip(by_policy['oracle'], by_policy['noisy']):
        assert a['start_error_mm'] == b['start_error_mm'] and a['start_index'] == b['start_index']
    summary = results['summary']['oracle']['all']
    assert summary['episodes'] == 2 and summary['success_rate'] == 1.0
    assert summary['success_ci95'][0] < 1.0 == summary['success_ci95'][1]


def test_wilson_interval():
    low, high = wilson_interval(9, 10)
    assert 0.59 < low < 0.6 and 0.98 < high < 0.99
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_policy_specs():
    assert parse_policy('oracle')[0] == 'oracle'
    name, factory = parse_policy('noisy=oracle:2,3')
    assert (name, factory.noise_mm, factory.noise_deg) == ('noisy', 2.0, 3.0)
    with pytest.raises(PolicySpecError, match='NOISE_MM,NOISE_DEG'):
        parse_policy('oracle:2')
    with pytest.raises(PolicySpecError, match='unknown policy'):
        parse_policy('magic:x')
    with pytest.raises(PolicySpecError, match='cannot load model'):
        parse_policy('onnx:/nonexistent/model.onnx')


def test_evaluate_still_takes_checkpoints_and_closed_loop_is_routed():
    parser = build_parser()
    args = parser.parse_args(['evaluate', 'a.pt', 'b.pt', '--data', 'd', '--out', 'o'])
    assert args.checkpoints == ['a.pt', 'b.pt'] and args.handler.__module__ == 'echo_guidance.engine.cli'
    args = parser.parse_args(['evaluate', 'closed-loop', '--policy', 'oracle', '--patients', '2'])
    assert args.handler.__module__ == 'echo_guidance.closed_loop.cli' and args.patients == 2


def test_the_command_writes_its_reports(tmp_path, capsys):
    out = tmp_path / 'cl'
    status = main(
        [
            'evaluate',
            'closed-loop',
            '--policy',
            'oracle',
            '--patients',
            '1',
            '--planes',
            'PLAX',
            '--starts',
            '1',
            '--image-size',
            '32',
            '--out',
            str(out),
            '--quiet',
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert '| oracle | all | 1 | 100%' in printed
    results = json.loads((out / 'results.json').read_text())
    assert results['summary']['oracle']['all']['success_rate'] == 1.0
    assert (out / 'episodes.csv').read_text().startswith('policy,patient_seed,plane')
    assert main(['closed-loop', '--policy', 'oracle', '--planes', 'A5C', '--out', str(out)]) == 2


def test_worker_processes_give_the_same_results(tmp_path):
    runs = []
    for jobs in ('1', '2'):
        out = tmp_path / jobs
        args = ['closed-loop', '--policy', 'n=oracle:3,3', '--patients', '2', '--planes', 'PSAX-MV']
        args += ['--starts', '2', '--image-size', '32', '--time-limit', '4', '--jobs', jobs]
        assert main(args + ['--output-dir', str(out), '--no-progress']) == 0
        runs.append(json.loads((out / 'results.json').read_text())['episodes'])
    keys = ('patient_seed', 'start_index', 'final_error_mm', 'final_error_deg', 'frames')
    assert [[e[k] for k in keys] for e in runs[0]] == [[e[k] for k in keys] for e in runs[1]]


@pytest.mark.slow
def test_model_policies_run_through_onnx_and_the_guidance_engine(tmp_path, patient, renderer):
    from learning_helpers import make_synthetic_dataset, tiny_config

    from echo_guidance.engine.export import export_onnx
    from echo_guidance.engine.train import train

    make_synthetic_dataset(tmp_path / 'data')
    train(tiny_config(tmp_path / 'data', tmp_path / 'train'), progress=False)
    path, _ = export_onnx(tmp_path / 'train' / 'best.pt', tmp_path / 'model.onnx')
    config = ClosedLoopConfig(time_limit_s=3.0, image_size=64)
    start = sample_start(patient, 'PLAX', start_rng(0, patient.seed, 'PLAX', 0), config)
    for spec in (f'onnx:{path}', f'fused:{path}'):
        name, factory = parse_policy(spec)
        policy = factory('PLAX', patient.standard_plane_pose('PLAX'))
        sample = policy(renderer.render(start), start, 0.0)
        assert sample.valid and sample.action.shape == (6,) and np.all(np.isfinite(sample.action))
        result = run_episode(
            patient, renderer, 'PLAX', start, policy, SafetyLimits(), PlannerConfig(), config
        )
        assert result.frames > 0 and result.end_state in ('plane_reached', 'moving', 'armed'), result


def test_trace_logs_truth_answer_and_estimate_per_frame(tmp_path, patient):
    import csv

    from echo_guidance.closed_loop.episode import TRACE_FIELDS

    results = evaluate_closed_loop(
        {'oracle': OracleFactory()},
        [patient.seed],
        ['PSAX-AV'],
        1,
        SafetyLimits(),
        PlannerConfig(),
        ClosedLoopConfig(time_limit_s=10.0, image_size=32),
        trace_dir=tmp_path / 'trace',
    )
    episode = results['episodes'][0]
    path = tmp_path / 'trace' / f'oracle_{patient.patient_id}_PSAX-AV_0.csv'
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(TRACE_FIELDS) and len(rows) == episode['frames']
    for row in rows:  # a noiseless oracle answers the truth
        for axis in ('x', 'y', 'z', 'roll', 'pitch', 'yaw'):
            assert float(row[f'pred_{axis}']) == pytest.approx(float(row[f'true_{axis}']), abs=2e-3)
    assert float(rows[0]['error_mm']) == pytest.approx(episode['start_error_mm'], abs=1e-3)
    assert rows[0]['estimate_error_mm'] == 'nan'  # no estimate before the first guidance
    assert float(rows[-1]['estimate_error_mm']) < 3.0 and float(rows[-1]['frame_mean']) > 0
