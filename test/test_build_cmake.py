"""CMakeLists.txt in full mode (what colcon builds) against the ROS wheels: configure, build, install, use.

There is no colcon here; this runs the same CMake steps colcon's ament_cmake build runs and checks the
installed tree: interfaces, the Python package, launch/config, and one executable per node.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, files_under


def load_setup_helpers():
    spec = importlib.util.spec_from_file_location('echo_guidance_setup', REPO_ROOT / 'setup.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() itself only runs as __main__
    return module


@pytest.fixture(scope='module')
def installed_prefix(tmp_path_factory):
    """Configure, build and install the full package into a temporary prefix; return the prefix."""
    cmake = shutil.which('cmake')
    assert cmake, 'cmake not on PATH (scripts/bootstrap.sh installs it)'
    helpers = load_setup_helpers()
    work = tmp_path_factory.mktemp('cmake-full')
    build_dir, prefix = work / 'build', work / 'install'
    env = helpers.cmake_environment()
    steps = [
        helpers.cmake_configure_command(cmake, build_dir, prefix, interfaces_only=False),
        [cmake, '--build', str(build_dir), '--parallel', str(os.cpu_count())],
        [cmake, '--install', str(build_dir)],
    ]
    for step in steps:
        result = subprocess.run(step, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f'{" ".join(step)}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}'
    return prefix


def site_packages(prefix):
    (path,) = prefix.glob('lib/python3*/site-packages')
    return path


@pytest.mark.slow
def test_installs_data_and_one_executable_per_node(installed_prefix):
    share = installed_prefix / 'share' / 'echo_guidance'
    assert (share / 'package.xml').is_file()
    assert (installed_prefix / 'share/ament_index/resource_index/packages/echo_guidance').is_file()
    for kind in ('launch', 'config'):
        assert files_under(share / kind) == files_under(REPO_ROOT / kind), kind
    nodes = sorted(p.stem for p in (REPO_ROOT / 'echo_guidance' / 'nodes').glob('*.py')
                   if not p.stem.startswith('_'))
    lib = installed_prefix / 'lib' / 'echo_guidance'
    executables = sorted(p.name for p in lib.iterdir()) if lib.is_dir() else []
    assert executables == [f'{name}_node' for name in nodes]
    for name in nodes:
        wrapper = lib / f'{name}_node'
        assert os.access(wrapper, os.X_OK)
        assert f'from echo_guidance.nodes.{name} import main' in wrapper.read_text()


@pytest.mark.slow
def test_installed_python_package_and_interfaces_work(installed_prefix, tmp_path):
    packages = site_packages(installed_prefix)
    assert (packages / 'echo_guidance' / 'cli.py').is_file()
    library_path = os.pathsep.join([str(installed_prefix / 'lib'), os.environ.get('LD_LIBRARY_PATH', '')])
    env = dict(os.environ, PYTHONPATH=str(packages), LD_LIBRARY_PATH=library_path)
    env.pop('ECHO_GUIDANCE_SHARE_DIR', None)
    code = '''
import json
import echo_guidance, echo_guidance.msg, echo_guidance.resources
from rclpy.serialization import deserialize_message, serialize_message
message = echo_guidance.msg.Guidance(target_plane='PSAX-AV', confidence=0.5)
copy = deserialize_message(serialize_message(message), echo_guidance.msg.Guidance)
print(json.dumps([echo_guidance.__file__, echo_guidance.msg.__file__, echo_guidance.__version__,
                  str(echo_guidance.resources.share_dir()), copy == message]))
'''
    result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    package_file, msg_file, version, share, round_trip = json.loads(result.stdout)
    assert package_file == str(packages / 'echo_guidance' / '__init__.py')
    assert msg_file == str(packages / 'echo_guidance' / 'msg' / '__init__.py')
    assert version == load_setup_helpers().package_version()
    assert share == str(installed_prefix / 'share' / 'echo_guidance')
    assert round_trip
