"""``echo-guidance up``: lists and checks profiles, starts a graph, and stops all of it when a node dies."""

import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO_ROOT


def up(*args, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, '-m', 'echo_guidance.cli', 'up', *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def model(tmp_path):
    from guidance_helpers import write_graph_model

    return write_graph_model(tmp_path / 'constant.onnx', size=128)


def test_list_and_check_every_new_profile(model):
    listed = up('--list')
    assert listed.returncode == 0
    for name in ('guide', 'guide_sim', 'autonomous', 'autonomous_sim', 'autonomous_franky_sim', 'record_sim'):
        assert name in listed.stdout
        checked = up(name, '--check', *(['--arg', f'model={model}'] if name != 'record_sim' else []))
        assert checked.returncode == 0, checked.stderr
        assert 'consistent' in checked.stdout


@pytest.mark.parametrize(
    'override, message',
    [
        (['--arg', 'model=/no/such/model.onnx'], 'model file /no/such/model.onnx does not exist'),
        (['--arg', 'target_plane=A2C'], "node guidance: parameter 'target_plane' = 'A2C': must be one of"),
        (['--arg', 'target_plane=A2C'], "node arm_control: kinematic.sim_plane: unknown target plane 'A2C'"),
        (['--set', 'guidance.target_plane=A2C'], "'target_plane' = 'A2C': must be one of PLAX"),
        (['--set', 'capture.rate_hz=5000'], "node capture: parameter 'rate_hz' = 5000.0: must be <= 1000.0"),
        (['--set', 'arm_control.made_up=1'], "arm_control: --set sets 'made_up', which the node does not"),
        (['--set', 'display.port=http'], "node display: parameter 'port' = 'http': expected an integer"),
        (['--set', 'arm_control.limits.max_contact_force_n=500'], 'force_n = 500 N is out of range'),
        (['--arg', 'display_port=70000'], "node display: parameter 'port' = 70000: must be <= 65535"),
        (['--set', 'recorder.output_dir=x'], "--set names node 'recorder', which profile autonomous_sim"),
    ],
)
def test_check_applies_arguments_and_overrides_and_rejects_each_bad_one(override, message, model):
    given_model = [] if any(o.startswith('model=') for o in override) or not override else [
        '--arg', f'model={model}'
    ]
    result = up('autonomous_sim', '--check', *given_model, *override)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert 'consistent' not in result.stdout


def test_check_passes_with_the_profile_defaults_on_a_fresh_clone():
    # Every default of the profile exists in the repository (model: default = models/guidance/).
    result = up('autonomous_sim', '--check')
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'consistent' in result.stdout


def test_check_accepts_an_integer_where_a_float_is_expected_and_a_free_port(model):
    result = up(
        'autonomous_sim', '--check', '--arg', f'model={model}', '--arg', 'display_port=0',
        '--set', 'capture.rate_hz=30', '--set', 'arm_control.limits.max_contact_force_n=20',
    )
    assert result.returncode == 0, result.stderr
    assert 'consistent' in result.stdout


def test_bad_arguments_are_refused_with_the_reason():
    result = up('autonomous_sim', '--arg', 'modell=x.onnx', '--check')
    assert result.returncode == 2 and "no argument(s) ['modell']" in result.stderr
    result = up('no_such_profile')
    assert result.returncode == 2 and 'no record profile' in result.stderr
    result = up('autonomous_sim', '--set', 'arm_control=1', '--check')
    assert result.returncode == 2 and 'NODE.PARAM=VALUE' in result.stderr


@pytest.fixture
def small_profile(tmp_path):
    path = tmp_path / 'small.yaml'
    path.write_text(
        yaml.safe_dump(
            {
                'description': 'arm control on the kinematic arm and a simulated pedal',
                'nodes': [
                    {
                        'name': 'arm_control',
                        'params_files': ['arm_control.yaml'],
                        'parameters': {
                            'backend': 'kinematic',
                            'kinematic.start_pose': [500.0, 0.0, 200.0, 180.0, 0.0, 90.0],
                        },
                    },
                    {'name': 'pedal', 'params_files': ['pedal_sim.yaml'], 'parameters': {'port': 'sim:held'}},
                ],
            }
        )
    )
    return path


def test_up_runs_a_graph_and_stops_it(small_profile, tmp_path, ros_env):
    result = up(str(small_profile), '--output-dir', str(tmp_path / 'out'), '--duration', '4', env=ros_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'up: stopped arm_control (0), pedal (0)' in result.stdout  # arm control first
    log = (tmp_path / 'out' / 'logs' / 'arm_control.log').read_text()
    assert 'arm control with kinematic simulated arm' in log


def test_a_bad_override_is_refused_before_anything_starts(small_profile, tmp_path, ros_env):
    result = up(
        str(small_profile),
        '--output-dir',
        str(tmp_path / 'out'),
        '--set',
        'arm_control.limits.max_contact_force_n=500.0',
        '--duration',
        '60',
        env=ros_env,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'limits.max_contact_force_n = 500 N is out of range' in result.stderr
    assert not (tmp_path / 'out').exists()  # nothing started, no logs


def test_a_dying_node_stops_the_whole_graph(small_profile, tmp_path, ros_env, processes, wait_until):
    import os
    import signal

    launcher = processes.start(
        [sys.executable, '-m', 'echo_guidance.cli', 'up', small_profile, '--output-dir', tmp_path / 'out'],
        name='up',
        cwd=REPO_ROOT,
    )
    found = wait_until(lambda: re.search(r'pedal +pid (\d+)', launcher.output()), 60, message='pedal started')
    arm_log = tmp_path / 'out' / 'logs' / 'arm_control.log'
    wait_until(lambda: 'arm control with' in arm_log.read_text(), 60, message='arm control running')
    os.kill(int(found.group(1)), signal.SIGKILL)
    assert launcher.wait(timeout=30) == 1, launcher.output()
    assert 'pedal exited with status -9' in launcher.output()
    assert 'up: stopped arm_control (0), pedal (-9)' in launcher.output()


@pytest.mark.slow
def test_autonomous_sim_comes_up_and_arms_on_the_scripted_pedal(tmp_path, ros_env):
    """The one-command simulated set-up: kinematic arm, capture, pedal, guidance with a tiny model."""
    from learning_helpers import make_synthetic_dataset, tiny_config

    from echo_guidance.engine.export import export_onnx
    from echo_guidance.engine.train import train

    make_synthetic_dataset(tmp_path / 'data')
    train(tiny_config(tmp_path / 'data', tmp_path / 'train'), progress=False)
    model, _ = export_onnx(tmp_path / 'train' / 'best.pt', tmp_path / 'model.onnx')
    result = up(
        'autonomous_sim',
        '--arg',
        f'model={model}',
        '--arg',
        'display_port=0',
        '--output-dir',
        str(tmp_path / 'out'),
        '--duration',
        '30',
        env=ros_env,
        timeout=200,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    log = (tmp_path / 'out' / 'logs' / 'arm_control.log').read_text()
    # The pedal script presses the deadman after 8 s; only then does the controller arm.
    assert 'idle -> armed' in log, log
    assert 'armed -> moving' in log or '-> plane_reached' in log, log
    assert 'guidance ready' in (tmp_path / 'out' / 'logs' / 'guidance.log').read_text()
