"""The installed console scripts: ``echo-guidance`` with every stage's subcommands, one per node."""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

from echo_guidance import cli

BIN = Path(sys.executable).parent


def installed_console_scripts():
    """Return {script name: entry point value} for the installed echo_guidance distribution."""
    dist = importlib.metadata.distribution('echo_guidance')
    return {ep.name: ep.value for ep in dist.entry_points if ep.group == 'console_scripts'}


def test_help_lists_every_subcommand(tmp_path):
    # Subcommands the source tree defines; the installed script must offer the same ones.
    subparsers = next(a for a in cli.build_parser()._actions if a.dest == 'command')
    expected = sorted(subparsers.choices)
    result = subprocess.run([BIN / 'echo-guidance', '--help'], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('usage: echo-guidance')
    missing = [name for name in expected if name not in result.stdout]
    assert not missing, f'installed echo-guidance lacks {missing}: run scripts/bootstrap.sh'


def test_version_is_the_package_version(tmp_path):
    import echo_guidance

    result = subprocess.run([BIN / 'echo-guidance', '--version'], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == echo_guidance.__version__


def test_one_console_script_per_node_module():
    nodes = sorted(p.stem for p in (REPO_ROOT / 'echo_guidance' / 'nodes').glob('*.py')
                   if not p.stem.startswith('_'))
    scripts = installed_console_scripts()
    assert scripts.get('echo-guidance') == 'echo_guidance.cli:main'
    expected = {f'{name}_node': f'echo_guidance.nodes.{name}:main' for name in nodes}
    node_scripts = {name: value for name, value in scripts.items() if name.endswith('_node')}
    assert node_scripts == expected, 'node console scripts differ from echo_guidance/nodes/: run bootstrap'
    for name in expected:
        assert (BIN / name).is_file(), name
