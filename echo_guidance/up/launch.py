"""Build a ``ros2 launch`` description from a profile (imported by the files in ``launch/``).

``launch`` and ``launch_ros`` are imported inside :func:`profile_launch_description` only: they come
with a ROS 2 installation, not from the package registries, and nothing else needs them.

Mapping: each profile argument becomes a launch argument (same name and default); ``output_dir``
is a launch argument too (default ``out/<profile>``); ``{config_dir}`` is the installed package's
``config`` folder. A helper process runs its ``launch_command`` (``ros2 launch`` cannot wait for
a ready line), and the values its ready pattern would have read become launch arguments named
``<process>_<group>`` with the profile's ``launch_values`` as defaults. Nodes become
``launch_ros`` ``Node`` actions: executable ``<module>_node``, the profile's parameter files from
the package's ``config`` folder, then the profile's parameters.
"""

from echo_guidance.recording.profiles import PLACEHOLDER, load_profile
from echo_guidance.up.graph import node_executable


def launch_argument_name(placeholder):
    """Launch argument name of a placeholder: ``franky_sim.host`` → ``franky_sim_host`` (no dots there)."""
    return placeholder.replace('.', '_').replace('-', '_')


def launch_arguments(profile):
    """Return [(name, default, description)] of the launch arguments a profile's launch file declares."""
    arguments = [(a.name, a.default, a.description) for a in profile.arguments]
    arguments.append(('output_dir', f'out/{profile.name}', 'where nodes write their output'))
    for process in profile.processes:
        for key, value in process.launch_values.items():
            arguments.append(
                (
                    launch_argument_name(f'{process.name}.{key}'),
                    value,
                    f'{process.name} {key} (read from its output under echo-guidance up)',
                )
            )
    return arguments


def split_placeholders(text):
    """Split a string into literal text and placeholder names: ``'a{x}b'`` → ``['a', ('x',), 'b']``."""
    parts, position = [], 0
    for match in PLACEHOLDER.finditer(text):
        if match.start() > position:
            parts.append(text[position : match.start()])
        parts.append((match.group(1),))
        position = match.end()
    if position < len(text):
        parts.append(text[position:])
    return parts


def profile_launch_description(profile_name):
    """Return the ``launch.LaunchDescription`` of profile ``profile_name``."""
    from launch.actions import DeclareLaunchArgument, ExecuteProcess
    from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
    from launch_ros.actions import Node
    from launch_ros.substitutions import FindPackageShare

    from launch import LaunchDescription

    profile = load_profile(profile_name)
    config = PathJoinSubstitution([FindPackageShare('echo_guidance'), 'config'])

    def substitute(value):
        if not isinstance(value, str) or '{' not in value:
            return value
        parts = []
        for part in split_placeholders(value):
            if isinstance(part, str):
                parts.append(part)
            elif part[0] == 'config_dir':
                parts.append(config)
            else:
                parts.append(LaunchConfiguration(launch_argument_name(part[0])))
        return parts

    actions = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, default, description in launch_arguments(profile)
    ]
    for process in profile.processes:
        command = process.launch_command or process.command
        actions.append(
            ExecuteProcess(cmd=[substitute(c) for c in command], name=process.name, output='screen')
        )
    for node in profile.nodes:
        parameters = [PathJoinSubstitution([config, name]) for name in node.params_files]
        if node.parameters:
            parameters.append({name: substitute(value) for name, value in node.parameters.items()})
        actions.append(
            Node(
                package='echo_guidance',
                executable=node_executable(node),
                name=node.name,
                output='screen',
                parameters=parameters,
            )
        )
    return LaunchDescription(actions)
