"""The record launch files and profiles name only executables and config files that exist.

``launch``/``launch_ros`` are not installable here, so the launch files are read with ``ast``: every
``executable=`` must be the console script of a module in echo_guidance/nodes, every ``.yaml`` a file
in config/, and each launch file must start the same nodes as its record profile.
"""

import ast

import pytest
import yaml
from conftest import REPO_ROOT

from echo_guidance.recording.profiles import ProfileError, available_profiles, load_profile, node_command

LAUNCH_FILES = {'record.launch.py': 'record_fr3', 'record_sim.launch.py': 'record_sim'}
NODE_MODULES = {
    p.stem for p in (REPO_ROOT / 'echo_guidance' / 'nodes').glob('*.py') if not p.stem.startswith('_')
}


def launch_calls(path):
    """Return (Node calls as {keyword: value}, .yaml names, has generate_launch_description) of a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes, yaml_names = [], []
    for item in ast.walk(tree):
        if isinstance(item, ast.Call) and getattr(item.func, 'id', '') == 'Node':
            keywords = {k.arg: k.value.value for k in item.keywords if isinstance(k.value, ast.Constant)}
            nodes.append(keywords)
        if isinstance(item, ast.Constant) and isinstance(item.value, str) and item.value.endswith('.yaml'):
            yaml_names.append(item.value)
    has_generate = any(
        isinstance(f, ast.FunctionDef) and f.name == 'generate_launch_description' for f in tree.body
    )
    return nodes, yaml_names, has_generate


@pytest.mark.parametrize('launch_name', sorted(LAUNCH_FILES))
def test_launch_file_names_only_existing_executables_and_configs(launch_name):
    nodes, yaml_names, has_generate = launch_calls(REPO_ROOT / 'launch' / launch_name)
    assert has_generate, f'{launch_name} has no generate_launch_description()'
    assert nodes, f'{launch_name} starts no Node'
    for node in nodes:
        assert node['package'] == 'echo_guidance'
        executable = node['executable']
        assert executable.endswith('_node') and executable[: -len('_node')] in NODE_MODULES, (
            f'{launch_name}: {executable!r} is not the console script of an echo_guidance/nodes module'
        )
    for name in yaml_names:
        assert (REPO_ROOT / 'config' / name).is_file(), (
            f'{launch_name} names config/{name}, which does not exist'
        )
    profile = load_profile(LAUNCH_FILES[launch_name])
    assert sorted(n['name'] for n in nodes) == sorted(n.name for n in profile.nodes)
    for node in profile.nodes:
        for name in node.params_files:
            assert name in yaml_names, f'{launch_name} does not load {name} that profile {profile.name} loads'


def test_every_packaged_profile_loads():
    profiles = available_profiles()
    assert {'record_sim', 'record_fr3', 'record_panda', 'bench_record'} <= set(profiles)
    for name, description in profiles.items():
        assert not description.startswith('(broken'), f'{name}: {description}'


def test_node_command_fills_placeholders_and_overrides_win(tmp_path):
    profile = load_profile('record_sim')
    command = node_command(
        profile.node('arm_state'),
        {'franky_sim.host': '127.0.0.5'},
        overrides={'max_age_s': 0.2},
        params_dir=tmp_path,
    )
    assert command[1:4] == ['-m', 'echo_guidance.nodes.arm_state', '--ros-args']
    files = [command[i + 1] for i, arg in enumerate(command) if arg == '--params-file']
    assert files[:2] == [
        str(REPO_ROOT / 'config' / name) for name in ('arm_calibration.yaml', 'arm_franky_sim.yaml')
    ]
    # The generated file comes last, so its values win over the profile's files for this node.
    generated = yaml.safe_load(open(files[-1]))
    assert generated == {'arm_state': {'ros__parameters': {'franky.hostname': '127.0.0.5', 'max_age_s': 0.2}}}
    with pytest.raises(ProfileError, match='franky_sim.host'):
        node_command(profile.node('arm_state'), {}, params_dir=tmp_path)


def test_bad_profiles_are_refused_with_reasons(tmp_path):
    with pytest.raises(ProfileError, match='no record profile'):
        load_profile('no_such_profile')
    bad = tmp_path / 'bad.yaml'
    bad.write_text('nodes:\n  - name: warp_drive\n')
    with pytest.raises(ProfileError, match="module 'warp_drive'"):
        load_profile(bad)
    bad.write_text('nodes:\n  - name: recorder\n    params_files: [missing.yaml]\n')
    with pytest.raises(ProfileError, match='missing.yaml'):
        load_profile(bad)
