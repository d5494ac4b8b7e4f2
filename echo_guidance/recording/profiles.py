"""Record profiles: which processes and nodes a recording set-up runs, with which configuration.

A profile is a YAML file in ``config/profiles/`` (or any path)::

    description: one line shown by `echo-guidance record --list-profiles`
    processes:                      # helper programs started first, in order (optional)
      - name: franky_sim
        command: [franky-sim, -s, mujoco]      # a bare name is looked up beside this Python first
        ready_pattern: "using '(?P<host>[0-9.]+)'"   # wait for this line; named groups become values
        ready_timeout_s: 30
    nodes:                          # echo_guidance nodes, each a separate process
      - name: arm_state             # module echo_guidance.nodes.<node> (default: name)
        params_files: [arm_calibration.yaml, arm_franky_sim.yaml]   # files in config/
        parameters:                 # -p overrides; strings may use {franky_sim.host}, {output_dir}, ...
          franky.hostname: "{franky_sim.host}"

Substitution values come from ready patterns (``<process name>.<group>``) and from the caller
(``output_dir``, ``epoch_s``, ...). An unknown placeholder is an error naming it.

Optional keys for ``echo-guidance up`` and the launch files generated from profiles::

    arguments:                      # placeholders with defaults, overridable (launch arguments)
      model: {default: out/models/cpu_dreamer.onnx, description: ONNX model of the guidance node}
    processes:
      - name: franky_sim
        ...
        launch_command: [franky-sim, -s, mujoco, --hostname, "{franky_sim.host}"]  # under ros2 launch
        launch_values: {host: 127.0.0.1}     # ros2 launch cannot read a ready line: fixed values
"""

import dataclasses
import re
import sys
import tempfile
from pathlib import Path

import yaml

from echo_guidance.resources import config_path, share_dir

PLACEHOLDER = re.compile(r'\{([A-Za-z0-9_.-]+)\}')


class ProfileError(ValueError):
    """A record profile that is missing, malformed or refers to something that does not exist."""


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    """A helper program a profile starts before its nodes.

    ``launch_command`` and ``launch_values`` say how ``ros2 launch`` runs it (it cannot wait for a
    ready line, so the values a ready pattern would have read are fixed there).
    """

    name: str
    command: tuple
    ready_pattern: str = ''
    ready_timeout_s: float = 30.0
    launch_command: tuple = ()
    launch_values: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ProfileArgument:
    """A placeholder with a default that ``echo-guidance up --arg`` or ``ros2 launch`` can override."""

    name: str
    default: str
    description: str = ''


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One echo_guidance node of a profile."""

    name: str
    node: str
    params_files: tuple = ()
    parameters: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RecordProfile:
    """A parsed record profile."""

    name: str
    path: Path
    description: str
    processes: tuple
    nodes: tuple
    arguments: tuple = ()

    def argument_values(self, overrides=None):
        """Return {argument: value}: the defaults updated with ``overrides``.

        Raises:
            ProfileError: an override names an argument the profile does not have.
        """
        values = {a.name: a.default for a in self.arguments}
        unknown = sorted(set(overrides or {}) - set(values))
        if unknown:
            raise ProfileError(
                f'profile {self.name} has no argument(s) {unknown}; its arguments: {sorted(values) or "none"}'
            )
        values.update(overrides or {})
        return values

    def node(self, name):
        """Return the NodeSpec called ``name``; raise ProfileError when there is none."""
        for spec in self.nodes:
            if spec.name == name:
                return spec
        raise ProfileError(f'profile {self.name} has no node {name!r}; it has {[n.name for n in self.nodes]}')


def profile_dir():
    """Return the folder holding the packaged profiles (config/profiles)."""
    return share_dir() / 'config' / 'profiles'


def available_profiles():
    """Return {name: description} of the packaged profiles."""
    profiles = {}
    for path in sorted(profile_dir().glob('*.yaml')):
        try:
            profiles[path.stem] = load_profile(path).description
        except ProfileError as error:
            profiles[path.stem] = f'(broken: {error})'
    return profiles


def _node_modules():
    nodes_dir = Path(__file__).resolve().parent.parent / 'nodes'
    return {p.stem for p in nodes_dir.glob('*.py') if not p.stem.startswith('_')}


def load_profile(name_or_path):
    """Load a profile by name (``config/profiles/<name>.yaml``) or by path.

    Raises:
        ProfileError: the file is missing or malformed, a node module or config file does not exist.
    """
    path = Path(name_or_path)
    if path.suffix not in ('.yaml', '.yml'):
        candidate = profile_dir() / f'{name_or_path}.yaml'
        if not candidate.is_file():
            names = ', '.join(sorted(p.stem for p in profile_dir().glob('*.yaml'))) or 'none'
            raise ProfileError(f'no record profile {name_or_path!r}; available: {names}')
        path = candidate
    if not path.is_file():
        raise ProfileError(f'profile file {path} does not exist')
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ProfileError(f'{path} is not valid YAML: {error}') from error
    if not isinstance(document, dict) or not isinstance(document.get('nodes'), list):
        raise ProfileError(
            f'{path}: a profile needs a "nodes" list (and optionally "processes", "description")'
        )
    unknown = set(document) - {'description', 'processes', 'nodes', 'arguments'}
    if unknown:
        raise ProfileError(
            f'{path}: unknown keys {sorted(unknown)}; expected description, arguments, processes, nodes'
        )
    arguments = []
    raw_arguments = document.get('arguments') or {}
    if not isinstance(raw_arguments, dict):
        raise ProfileError(f'{path}: arguments must be a mapping name: {{default: ..., description: ...}}')
    for name, entry in raw_arguments.items():
        if not isinstance(entry, dict) or 'default' not in entry or set(entry) - {'default', 'description'}:
            raise ProfileError(
                f'{path}: argument {name!r} needs {{default: ..., description: ...}}, got {entry!r}'
            )
        arguments.append(ProfileArgument(str(name), str(entry['default']), str(entry.get('description', ''))))
    processes = []
    for entry in document.get('processes') or []:
        if not isinstance(entry, dict) or 'name' not in entry or not entry.get('command'):
            raise ProfileError(f'{path}: each process needs a name and a command list, got {entry!r}')
        if entry.get('ready_pattern'):
            try:
                re.compile(entry['ready_pattern'])
            except re.error as error:
                raise ProfileError(f'{path}: process {entry["name"]}: bad ready_pattern: {error}') from error
        launch_values = entry.get('launch_values') or {}
        if not isinstance(launch_values, dict):
            raise ProfileError(f'{path}: process {entry["name"]}: launch_values must be a mapping')
        processes.append(
            ProcessSpec(
                entry['name'],
                tuple(str(c) for c in entry['command']),
                entry.get('ready_pattern', ''),
                float(entry.get('ready_timeout_s', 30.0)),
                tuple(str(c) for c in entry.get('launch_command') or ()),
                {str(k): str(v) for k, v in launch_values.items()},
            )
        )
    modules = _node_modules()
    nodes = []
    for entry in document['nodes']:
        if not isinstance(entry, dict) or 'name' not in entry:
            raise ProfileError(f'{path}: each node needs a name, got {entry!r}')
        module = entry.get('node', entry['name'])
        if module not in modules:
            raise ProfileError(
                f'{path}: node {entry["name"]!r} names module {module!r}, which is not one of '
                f'echo_guidance.nodes: {sorted(modules)}'
            )
        files = tuple(entry.get('params_files') or ())
        for name in files:
            try:
                config_path(name)
            except (FileNotFoundError, ValueError) as error:
                raise ProfileError(f'{path}: node {entry["name"]}: {error}') from error
        parameters = entry.get('parameters') or {}
        if not isinstance(parameters, dict):
            raise ProfileError(f'{path}: node {entry["name"]}: parameters must be a mapping')
        nodes.append(NodeSpec(entry['name'], module, files, dict(parameters)))
    return RecordProfile(
        path.stem,
        path,
        str(document.get('description', '')),
        tuple(processes),
        tuple(nodes),
        tuple(arguments),
    )


def substitute(value, values):
    """Fill ``{placeholders}`` in a string parameter value; other values pass unchanged.

    Raises:
        ProfileError: a placeholder has no value.
    """
    if not isinstance(value, str) or '{' not in value:
        return value
    missing = [field for field in PLACEHOLDER.findall(value) if field not in values]
    if missing:
        raise ProfileError(f'no value for {missing} in {value!r}; known: {sorted(values)}')
    return PLACEHOLDER.sub(lambda found: str(values[found.group(1)]), value)


def node_command(spec, values=None, overrides=None, python=sys.executable, params_dir=None):
    """Return the argv that runs one node of a profile as its own process.

    The profile's parameters and ``overrides`` go into a parameter file written to ``params_dir``
    (a temporary folder by default), keyed by the node's name and loaded after the profile's
    ``params_files``: values given there for this node win over the files' (a ``-p`` override would
    lose against a file that names the node). Each value is written as the node's parameter type
    (:func:`echo_guidance.up.params.typed_parameters`: ``"{display_port}"`` becomes an integer).

    Args:
        spec: the NodeSpec.
        values: substitutions for ``{placeholders}`` in string parameters.
        overrides: extra parameters (name -> value) that win over the profile's.
        python: the interpreter (nodes run as ``python -m echo_guidance.nodes.<node>``).
        params_dir: where to write the generated parameter file.
    """
    values = values or {}
    command = [python, '-m', f'echo_guidance.nodes.{spec.node}', '--ros-args', '-r', f'__node:={spec.name}']
    for name in spec.params_files:
        command += ['--params-file', str(config_path(name))]
    parameters = {
        name: substitute(value, values) for name, value in {**spec.parameters, **(overrides or {})}.items()
    }
    if parameters:
        from echo_guidance.up.params import typed_parameters

        # A placeholder gives text ("{display_port}" -> "0"): the node's parameter type decides.
        parameters = typed_parameters(spec.node, parameters)
        directory = (
            Path(params_dir) if params_dir is not None else Path(tempfile.mkdtemp(prefix='echo_guidance-'))
        )
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f'{spec.name}.parameters.yaml'
        path.write_text(yaml.safe_dump({spec.name: {'ros__parameters': parameters}}, sort_keys=False))
        command += ['--params-file', str(path)]
    return command


def process_command(spec, python=sys.executable):
    """Return the argv of a helper process; a bare program name is looked up beside ``python`` first."""
    command = list(spec.command)
    beside = Path(python).parent / command[0]
    if '/' not in command[0] and beside.exists():
        command[0] = str(beside)
    return command
