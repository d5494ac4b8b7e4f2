"""The guidance benchmarks: bench fusion, bench model, bench live (short runs with tiny models)."""

import argparse
import json

import numpy as np
import pytest
from guidance_helpers import trained_tiny_models  # noqa: F401 (fixture)

from echo_guidance.bench import fusion as bench_fusion
from echo_guidance.bench import live as bench_live


def _parse(module, argv):
    parser = argparse.ArgumentParser()
    module.register_bench(parser.add_subparsers())
    return parser.parse_args(argv)


def test_simulated_approach_ground_truth_is_consistent_and_perfect_predictions_fuse_to_it():
    from echo_guidance.geometry import action_to_matrix
    from echo_guidance.guidance.simulated import simulate_approach
    from echo_guidance.sim import Patient, ProbeConfig, ProbeRenderer

    patient = Patient.from_seed(2)
    renderer = ProbeRenderer(patient, ProbeConfig(width=64, height=64))
    approach = simulate_approach(patient, renderer, 'PSAX-AV', max_duration_s=1.5)
    assert approach.frames.shape == (45, 64, 64) and approach.frames.dtype == np.uint8
    # Applying the ground-truth action reaches the target from every true pose.
    assert np.allclose(approach.true_poses @ action_to_matrix(approach.actions), approach.target, atol=1e-6)
    # The measured poses carry the arm's small sensor noise, not more.
    offsets = np.linalg.norm(approach.measured_poses[:, :3, 3] - approach.true_poses[:, :3, 3], axis=1)
    assert 0 < offsets.max() < 0.5
    variants = bench_fusion.parse_variants('single,default,median:1.0:0')
    records = {
        v.name: [(approach, *bench_fusion.run_variant(v, approach, approach.actions))] for v in variants
    }
    summaries = {name: bench_fusion.summarise(r) for name, r in records.items()}
    assert max(summaries['single']['mae']) < 1e-9
    # Fused perfect predictions are off only by what the pose noise moves them (sub-mm, sub-degree).
    assert max(summaries['median:1.0:0']['mae']) < 0.5
    decision = bench_fusion.verdict(summaries)
    assert decision['keep_fusion'] is False  # nothing to gain over perfect single-frame predictions


def test_bench_fusion_runs_on_a_trained_tiny_model(trained_tiny_models, tmp_path, capsys):  # noqa: F811
    out = tmp_path / 'fusion.json'
    args = _parse(
        bench_fusion,
        [
            'fusion',
            '--model',
            str(trained_tiny_models['dreamer']),
            '--patients',
            '1',
            '--planes',
            'PLAX',
            '--max-duration',
            '1.5',
            '--json',
            str(out),
        ],
    )
    assert bench_fusion.run(args) == 0
    report = json.loads(out.read_text())
    ((model_id, entry),) = report['models'].items()
    assert model_id.startswith('tiny_dreamer@')
    assert set(entry['variants']) >= {'single', 'default', 'median:1.0:0'}
    single = entry['variants']['single']
    assert single['frames'] == 45 and len(single['mae']) == 6 and all(v >= 0 for v in single['mae'])
    assert 'keep_fusion' in entry['verdict']
    assert 'verdict: default fusion vs single' in capsys.readouterr().out


def test_bench_fusion_refuses_bad_arguments(tmp_path, capsys):
    args = _parse(bench_fusion, ['fusion', '--model', str(tmp_path / 'none.onnx')])
    assert bench_fusion.run(args) == 2
    assert 'does not exist' in capsys.readouterr().err
    with pytest.raises(ValueError, match="variant 'mode:1.0'"):
        bench_fusion.parse_variants('mode:1.0')


def test_bench_model_compares_onnxruntime_with_eager_pytorch(tmp_path, capsys):
    from echo_guidance.bench import model as bench_model

    out = tmp_path / 'model.json'
    args = _parse(
        bench_model,
        [
            'model',
            '--config',
            'config/train/tiny_test.yaml',
            '--sizes',
            '64',
            '--iterations',
            '5',
            '--warmup',
            '1',
            '--json',
            str(out),
        ],
    )
    assert bench_model.run(args) == 0
    report = json.loads(out.read_text())
    (result,) = report['results']
    assert set(result['stats']) == {'torch-eager', 'onnxruntime', 'onnxruntime-int8', 'engine-step'}
    assert all(s['median_ms'] > 0 and s['n'] == 5 for s in result['stats'].values())
    assert result['eager_over']['onnxruntime'] == pytest.approx(
        result['stats']['torch-eager']['median_ms'] / result['stats']['onnxruntime']['median_ms'], rel=0.01
    )
    printed = capsys.readouterr().out
    assert 'random weights: baseline resnet10 at 64²' in printed and 'eager/this' in printed


def test_bench_live_evaluation_counts_skips_and_backlog():
    ms = 1_000_000
    frames = [(1000 * ms + k * 33 * ms, k) for k in range(100)]
    guidance = [(stamp, stamp + (10 + k) * ms, True) for k, (stamp, _) in enumerate(frames) if k % 10]
    record = {'window_ns': [frames[0][0], frames[-1][0]], 'guidance': guidance, 'frames': frames}
    result = bench_live.evaluate(record, 1 / 30)
    assert result['frames_published'] == 100 and result['frames_skipped'] == 10
    assert result['latency_ms']['p50'] == pytest.approx(10 + 50, abs=2)
    assert result['backlog'] is True  # latency grew by ~90 ms over the run
    assert any('backlog' in reason for reason in bench_live.failures(result))
    steady = [(s, s + 12 * ms, True) for s, _ in frames]
    result = bench_live.evaluate({**record, 'guidance': steady}, 1 / 30)
    assert result['frames_skipped'] == 0 and not result['backlog'] and bench_live.failures(result) == []


def test_bench_live_measures_frame_to_guidance_latency_across_processes(
    trained_tiny_models,  # noqa: F811
    tmp_path,
    ros_domain_id,
    capsys,
):
    out = tmp_path / 'live.json'
    args = _parse(
        bench_live,
        [
            'live',
            '--duration',
            '2',
            '--warmup',
            '1',
            '--model',
            str(trained_tiny_models['baseline']),
            '--output-dir',
            str(tmp_path / 'run'),
            '--json',
            str(out),
            '--domain-id',
            str(ros_domain_id),
        ],
    )
    status = bench_live.run(args)
    printed = capsys.readouterr()
    assert status in (0, 1), printed.err
    result = json.loads(out.read_text())
    assert 55 <= result['frames_published'] <= 65  # 2 s at 30 fps
    assert result['frames_guided'] >= result['frames_published'] - 3
    assert 0 < result['latency_ms']['p50'] < 200
    assert result['node_diagnostics']['model_id'].startswith('tiny_baseline@')
    assert 'frame stamp -> guidance receipt' in printed.out


def test_bench_live_sim_puts_the_scripted_probe_where_the_models_run():
    """With --source sim the scripted arm must hold the probe over the heart: frames with echo."""
    from echo_guidance.arm.calibration import calibration_from_file
    from echo_guidance.arm.trajectory import SinusoidTrajectory
    from echo_guidance.bench.live import SIM_SEED, scripted_scan_near_plane
    from echo_guidance.guidance.echo import EchoConfig, echo_fraction
    from echo_guidance.sim import Patient, ProbeConfig, ProbeRenderer

    params = scripted_scan_near_plane()
    trajectory = SinusoidTrajectory.from_config(
        {'centre': params['scripted.centre'], 'amplitude': params['scripted.amplitude']}
    )
    calibration = calibration_from_file()
    assert calibration.source  # read from config/arm_calibration.yaml, not defaults
    renderer = ProbeRenderer(Patient.from_seed(SIM_SEED), ProbeConfig(width=128, height=128))
    needed = EchoConfig().min_fraction
    for t_s in np.linspace(0.0, 120.0, 61):
        probe = calibration.probe_pose(trajectory.flange_pose(t_s))
        assert echo_fraction(renderer.render(probe, t_s)) > 2 * needed, t_s
