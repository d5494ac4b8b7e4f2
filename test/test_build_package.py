"""package.xml is a valid format-3 ament_cmake package description that agrees with the code."""

import pytest
from catkin_pkg.package import parse_package
from conftest import REPO_ROOT
from rosidl_adapter.parser import parse_message_file, parse_service_file

import echo_guidance


@pytest.fixture(scope='module')
def package():
    return parse_package(str(REPO_ROOT / 'package.xml'))  # validates the format too


def test_package_is_format_3_ament_cmake_interface_package(package):
    assert package.name == 'echo_guidance'
    assert package.package_format == 3
    assert package.get_build_type() == 'ament_cmake'
    assert 'rosidl_interface_packages' in [group.name for group in package.member_of_groups]


def test_version_matches_python_package(package):
    assert package.version == echo_guidance.__version__


def test_every_package_used_by_the_interfaces_is_a_dependency(package):
    used = set()
    for path in (REPO_ROOT / 'msg').glob('*.msg'):
        used |= {f.type.pkg_name for f in parse_message_file('echo_guidance', str(path)).fields}
    for path in (REPO_ROOT / 'srv').glob('*.srv'):
        spec = parse_service_file('echo_guidance', str(path))
        used |= {f.type.pkg_name for part in (spec.request, spec.response) for f in part.fields}
    used.discard(None)
    build = {d.name for d in package.build_depends}
    run = {d.name for d in package.exec_depends}
    assert used <= build, f'missing <depend>/<build_depend>: {sorted(used - build)}'
    assert used <= run, f'missing <depend>/<exec_depend>: {sorted(used - run)}'
    assert 'rosidl_default_generators' in {d.name for d in package.buildtool_depends}
    assert 'rosidl_default_runtime' in run


def test_runtime_ros_dependencies_are_declared(package):
    run = {d.name for d in package.exec_depends}
    assert {'rclpy', 'std_msgs', 'geometry_msgs', 'sensor_msgs', 'diagnostic_msgs', 'visualization_msgs',
            'std_srvs', 'builtin_interfaces'} <= run
