"""``echo-guidance up``: lists and checks profiles, starts a graph, and stops all of it when a node dies."""

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


def test_list_and_check_every_new_profile():
    listed = up('--list')
    assert listed.returncode == 0
    for name in ('guide', 'guide_sim', 'autonomous', 'autonomous_sim', 'autonomous_franky_sim', 'record_sim'):
        assert name in listed.stdout
        checked = up(name, '--check')
        assert checked.returncode == 0, checked.stderr
        assert 'consistent' in checked.stdout


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
    assert 'up: stopped pedal (0), arm_control (0)' in result.stdout
    log = (tmp_path / 'out' / 'logs' / 'arm_control.log').read_text()
    assert 'arm control with kinematic simulated arm' in log


def test_a_dying_node_stops_the_whole_graph(small_profile, tmp_path, ros_env):
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
    assert 'arm_control exited with status 2' in result.stderr
    assert 'limits.max_contact_force_n = 500 N is out of range' in result.stderr
    assert 'stopped' in result.stdout and 'pedal' in result.stdout


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
