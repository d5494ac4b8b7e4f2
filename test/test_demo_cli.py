"""``echo-guidance demo``: refuses bad input before starting anything; runs end to end with a tiny model.

The end-to-end test starts the real graph (arm control on the kinematic arm, capture, scripted pedal,
guidance, display, recorder: separate processes over DDS on a domain of its own), then reads the
bags back with rosbags itself and checks the printed summary against them.
"""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT


def demo(*args, env=None, timeout=150):
    return subprocess.run(
        [sys.executable, '-m', 'echo_guidance.cli', 'demo', *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_unknown_plane_and_missing_or_corrupt_models_start_nothing(tmp_path, ros_env):
    out = tmp_path / 'out'
    started = time.monotonic()
    result = demo(
        '--plane', 'A5C', '--model', str(tmp_path / 'none.onnx'), '--output-dir', str(out), env=ros_env
    )
    assert result.returncode == 2
    assert "unknown target plane 'A5C': expected one of PLAX, PSAX-AV, PSAX-MV" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr

    result = demo('--model', str(tmp_path / 'none.onnx'), '--output-dir', str(out), env=ros_env)
    assert result.returncode == 2
    assert f'model file {tmp_path / "none.onnx"} does not exist' in result.stderr

    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(b'\x08\x07 this is not a protobuf graph' * 20)
    result = demo('--model', str(corrupt), '--output-dir', str(out), env=ros_env)
    assert result.returncode == 2
    assert 'bad model' in result.stderr and str(corrupt) in result.stderr
    assert 'started' not in result.stdout
    # Nothing was started or written: no run folder, no logs, and far quicker than a graph start.
    assert not out.exists()
    assert time.monotonic() - started < 60


@pytest.fixture
def tiny_model(tmp_path):
    from learning_helpers import make_synthetic_dataset, tiny_config

    from echo_guidance.engine.export import export_onnx
    from echo_guidance.engine.train import train

    make_synthetic_dataset(tmp_path / 'data')
    train(tiny_config(tmp_path / 'data', tmp_path / 'train', model={'kind': 'dreamer'}), progress=False)
    model, _ = export_onnx(tmp_path / 'train' / 'best.pt', tmp_path / 'tiny_dreamer.onnx')
    return Path(model)


@pytest.mark.slow
def test_the_demo_runs_end_to_end_and_its_bags_read_back(tmp_path, ros_env, tiny_model):
    from rosbags.highlevel import AnyReader

    out = tmp_path / 'out'
    result = demo(
        '--model',
        str(tiny_model),
        '--plane',
        'PSAX-AV',
        '--duration',
        '40',
        '--output-dir',
        str(out),
        env=ros_env,
    )
    output = result.stdout + result.stderr
    assert result.returncode in (0, 1), output
    for field in (
        'model',
        'target plane',
        'outcome',
        'start error',
        'final error',
        'timing',
        'path length',
        'bags',
        'plot',
        'page',
    ):
        assert re.search(rf'^{field}\s', result.stdout, re.MULTILINE), (field, output)
    assert 'tiny_dreamer@' in result.stdout and 'PSAX-AV' in result.stdout
    # The exit status says what the summary says.
    if result.returncode == 0:
        assert re.search(r'^outcome\s+PLANE REACHED', result.stdout, re.MULTILINE), output
        assert 'demo: PLANE REACHED: exit 0' in result.stdout
    else:
        assert re.search(r'^outcome\s+NOT REACHED', result.stdout, re.MULTILINE), output
        assert 'the run completed, but the plane was not reached: exit 1' in result.stdout
    assert "sonographer's page: http://127.0.0.1:" in result.stdout

    (run_dir,) = (out / 'runs').iterdir()
    assert run_dir.name.endswith('_PSAX-AV_patient0')
    bags = [p.parent for p in run_dir.rglob('metadata.yaml')]
    assert {b.name for b in bags} >= {'guidance_control'} and len(bags) == 2, bags
    counts = {}
    with AnyReader(bags) as reader:
        for connection, _, raw in reader.messages():
            reader.deserialize(raw, connection.msgtype)
            counts[connection.topic] = counts.get(connection.topic, 0) + 1
    for topic in (
        '/us/image',
        '/arm/probe_pose',
        '/recorder/synced_pose',
        '/guidance',
        '/arm_control/state',
        '/session/info',
        '/pedal/event',
    ):
        assert counts.get(topic, 0) > 0, (topic, counts)
    assert counts['/recorder/synced_pose'] == counts['/us/image']
    recorded = re.search(
        r'^>?recorded\s+(\d+) frames, (\d+) probe poses, (\d+) guidance', result.stdout, re.M
    )
    assert recorded and int(recorded.group(1)) == counts['/us/image'], output
    assert (
        int(recorded.group(2)) == counts['/arm/probe_pose'] and int(recorded.group(3)) == counts['/guidance']
    )
    # The scripted pedal presses the deadman 8 s after it starts: the controller armed on it.
    assert re.search(r'controller \S+ -> armed', result.stdout), output
    plot = run_dir / 'demo_run.png'
    assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert (run_dir / 'summary.json').is_file() and (run_dir / 'summary.txt').is_file()
    check = subprocess.run(
        [
            sys.executable,
            '-m',
            'echo_guidance.cli',
            'bag',
            'check',
            str(next(b for b in bags if b.name != 'guidance_control')),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
