"""Launch files and profiles name only executables, parameter files and parameters that exist.

``launch``/``launch_ros`` are not installable here, so the launch files are checked in two ways
without them: their source (``ast``: each builds the graph of the profile it is named after, and
imports ``launch`` only inside ``generate_launch_description``), and by running
``generate_launch_description()`` against minimal stand-ins for ``launch``/``launch_ros`` that
record what would be launched. Every profile's executables must be console scripts that setup.py
generates (``<module>_node`` for ``echo_guidance/nodes/<module>.py``), every parameter file must
exist in config/, and every parameter a file or the profile sets must be declared by that node.
"""

import ast
import sys
import types

import pytest
import yaml
from conftest import REPO_ROOT

from echo_guidance.recording.profiles import available_profiles, load_profile
from echo_guidance.up.graph import check_profile, declared_parameters, parameters_in_file
from echo_guidance.up.launch import launch_arguments

PROFILE_LAUNCH_FILES = ['guide', 'guide_sim', 'autonomous', 'autonomous_sim', 'autonomous_franky_sim']
NODE_MODULES = {
    p.stem for p in (REPO_ROOT / 'echo_guidance' / 'nodes').glob('*.py') if not p.stem.startswith('_')
}
CONSOLE_SCRIPTS = {f'{name}_node' for name in NODE_MODULES}  # setup.py's node_entry_points()


def test_setup_generates_a_console_script_per_node_module():
    source = (REPO_ROOT / 'setup.py').read_text()
    assert "f'{name}_node = {PACKAGE}.nodes.{name}:main'" in source
    assert {'arm_control_node', 'guidance_node', 'capture_node', 'pedal_node'} <= CONSOLE_SCRIPTS


@pytest.mark.parametrize('name', PROFILE_LAUNCH_FILES)
def test_launch_file_builds_its_profile_and_imports_launch_lazily(name):
    path = REPO_ROOT / 'launch' / f'{name}.launch.py'
    tree = ast.parse(path.read_text(), filename=str(path))
    top_imports = [
        alias.name if isinstance(node, ast.Import) else node.module
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [None])
    ]
    assert not [m for m in top_imports if m and m.split('.')[0] in ('launch', 'launch_ros')], top_imports
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
    }
    assert constants.get('PROFILE') == name, f'{path.name} must build profile {name}'
    generate = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == 'generate_launch_description'
    )
    calls = [
        n
        for n in ast.walk(generate)
        if isinstance(n, ast.Call) and getattr(n.func, 'id', '') == 'profile_launch_description'
    ]
    assert calls and isinstance(calls[0].args[0], ast.Name) and calls[0].args[0].id == 'PROFILE'


@pytest.mark.parametrize('name', sorted(available_profiles()))
def test_every_profile_is_consistent(name, tmp_path):
    profile = load_profile(name)
    values = {}
    if any(a.name == 'model' for a in profile.arguments):
        # The guidance node checks that its model file exists; the profiles' default models are trained
        # by the pipeline (out/), not shipped.
        from guidance_helpers import write_graph_model

        values['model'] = str(write_graph_model(tmp_path / 'model.onnx'))
    assert check_profile(name, values) == []
    if 'model' in values:
        assert any('model file out/' in p for p in check_profile(name, {'model': 'out/no_such_model.onnx'}))
    for node in load_profile(name).nodes:
        assert f'{node.node}_node' in CONSOLE_SCRIPTS
        for file_name in node.params_files:
            assert (REPO_ROOT / 'config' / file_name).is_file()


def test_the_profiles_the_issue_asks_for_exist():
    profiles = available_profiles()
    for name in ('record', 'guide', 'autonomous'):
        real = 'record_fr3' if name == 'record' else name
        assert real in profiles and f'{name}_sim' in profiles


def test_check_profile_finds_misspelt_parameters_missing_files_and_placeholders(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text(
        yaml.safe_dump(
            {
                'nodes': [
                    {
                        'name': 'arm_control',
                        'params_files': ['arm_control.yaml'],
                        'parameters': {'limits.max_sped_mm_s': 3.0, 'backend': '{arm_kind}'},
                    },
                    {
                        'name': 'guidance',
                        'params_files': ['guidance.yaml'],
                        'parameters': {'model': 'x.onnx'},
                    },
                ]
            }
        )
    )
    problems = check_profile(bad)
    assert "placeholders without a value: ['arm_kind']" in problems
    assert any("'limits.max_sped_mm_s', which the node does not declare" in p for p in problems)
    assert any("node guidance: the profile sets 'model'" in p for p in problems)
    bad.write_text(yaml.safe_dump({'nodes': [{'name': 'arm_control', 'params_files': ['arm_kontrol.yaml']}]}))
    assert any('arm_kontrol.yaml' in p for p in check_profile(bad))


def test_parameter_files_are_read_per_node_and_wildcard():
    calibration = parameters_in_file(REPO_ROOT / 'config' / 'arm_calibration.yaml', 'arm_control')
    assert set(calibration) == {
        'flange_to_probe.translation_mm',
        'flange_to_probe.rpy_deg',
        'flange_to_probe.source',
    }
    control = parameters_in_file(REPO_ROOT / 'config' / 'arm_control.yaml', 'arm_control')
    assert control['limits.max_linear_speed_mm_s'] == 20.0
    assert parameters_in_file(REPO_ROOT / 'config' / 'arm_control.yaml', 'capture') == {}
    assert set(control) <= declared_parameters('arm_control')


class _Recorder:
    """A stand-in launch class: remembers its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def fake_launch(monkeypatch):
    """Minimal ``launch``/``launch_ros`` modules (the real ones only come with a ROS installation)."""
    classes = {}

    def module(name, **members):
        mod = types.ModuleType(name)
        for member in members:
            cls = type(member, (_Recorder,), {})
            classes[member] = cls
            setattr(mod, member, cls)
        monkeypatch.setitem(sys.modules, name, mod)
        return mod

    module('launch', LaunchDescription=None)
    module('launch.actions', DeclareLaunchArgument=None, ExecuteProcess=None)
    module('launch.substitutions', LaunchConfiguration=None, PathJoinSubstitution=None)
    module('launch_ros')
    module('launch_ros.actions', Node=None)
    module('launch_ros.substitutions', FindPackageShare=None)
    return classes


@pytest.mark.parametrize('name', PROFILE_LAUNCH_FILES)
def test_generated_launch_description_matches_the_profile(name, fake_launch):
    namespace = {'__name__': f'launch_file_{name}'}
    source = (REPO_ROOT / 'launch' / f'{name}.launch.py').read_text()
    exec(compile(source, f'{name}.launch.py', 'exec'), namespace)  # noqa: S102 - the file under test
    description = namespace['generate_launch_description']()
    assert type(description).__name__ == 'LaunchDescription'
    actions = description.args[0]
    declared = {a.args[0] for a in actions if type(a).__name__ == 'DeclareLaunchArgument'}
    nodes = [a for a in actions if type(a).__name__ == 'Node']
    processes = [a for a in actions if type(a).__name__ == 'ExecuteProcess']
    profile = load_profile(name)
    assert [n.kwargs['name'] for n in nodes] == [n.name for n in profile.nodes]
    assert len(processes) == len(profile.processes)
    assert declared == {arg for arg, _, _ in launch_arguments(profile)}

    def configurations(value):
        if type(value).__name__ == 'LaunchConfiguration':
            yield value.args[0]
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from configurations(item)
        elif isinstance(value, dict):
            for item in value.values():
                yield from configurations(item)

    for node, spec in zip(nodes, profile.nodes):
        assert node.kwargs['package'] == 'echo_guidance'
        assert node.kwargs['executable'] in CONSOLE_SCRIPTS
        files = [
            p.args[0][1] for p in node.kwargs['parameters'] if type(p).__name__ == 'PathJoinSubstitution'
        ]
        assert files == list(spec.params_files)
        for file_name in files:
            assert (REPO_ROOT / 'config' / file_name).is_file()
        used = set(configurations(node.kwargs['parameters']))
        assert used <= declared, f'{spec.name} uses undeclared launch arguments {used - declared}'
    for process in processes:
        used = set(configurations(process.kwargs['cmd']))
        assert used <= declared
