"""Launch demonstration recording in simulation: franky-sim arm, virtual patient, simulated pedal.

Same set-up as ``echo-guidance record --profile record_sim``. franky-sim (MuJoCo) serves the real
libfranka protocol on ``sim_host``; the arm-state node reads it through franky and drives the probe
onto the virtual patient's PLAX plane and away again (arm_franky_sim_plax.yaml, computed for seed 0);
the capture node renders the virtual patient at the probe pose the arm reports; the simulated
sonographer marks the plane when the probe is there; the recorder declares the true target pose.

    ros2 launch echo_guidance record_sim.launch.py output_dir:=out/demonstrations
"""

from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description():
    """Describe the simulator process, the four nodes and their configuration files."""
    config = PathJoinSubstitution([FindPackageShare('echo_guidance'), 'config'])
    calibration = PathJoinSubstitution([config, 'arm_calibration.yaml'])
    sim_host = LaunchConfiguration('sim_host')
    arguments = [
        DeclareLaunchArgument(
            'sim_host', default_value='127.0.0.1', description='loopback address for franky-sim'
        ),
        DeclareLaunchArgument('output_dir', default_value='out/demonstrations', description='where bags go'),
        DeclareLaunchArgument('target_plane', default_value='PLAX', description='PLAX, PSAX-AV or PSAX-MV'),
        DeclareLaunchArgument(
            'sim_seed', default_value='0', description='virtual patient seed (the arm motion is made for 0)'
        ),
    ]
    # franky-sim's default simulator choice (-s auto) crashed on the dev machine; MuJoCo works.
    simulator = ExecuteProcess(cmd=['franky-sim', '-s', 'mujoco', '--hostname', sim_host], output='screen')
    nodes = [
        Node(
            package='echo_guidance',
            executable='arm_state_node',
            name='arm_state',
            output='screen',
            parameters=[
                calibration,
                PathJoinSubstitution([config, 'arm_franky_sim.yaml']),
                PathJoinSubstitution([config, 'arm_franky_sim_plax.yaml']),
                {'franky.hostname': sim_host},
            ],
        ),
        Node(
            package='echo_guidance',
            executable='capture_node',
            name='capture',
            output='screen',
            parameters=[
                {
                    'source_kind': 'sim',
                    'rate_hz': 30.0,
                    'sim_seed': LaunchConfiguration('sim_seed'),
                    'output_width': 640,
                    'output_height': 480,
                }
            ],
        ),
        Node(
            package='echo_guidance',
            executable='pedal_node',
            name='pedal',
            output='screen',
            parameters=[
                {
                    'port': 'sim:sonographer',
                    'sonographer.sim_seed': LaunchConfiguration('sim_seed'),
                    'heartbeat_timeout_s': 2.0,  # the simulated device runs in the node's process
                }
            ],
        ),
        Node(
            package='echo_guidance',
            executable='recorder_node',
            name='recorder',
            output='screen',
            parameters=[
                calibration,
                PathJoinSubstitution([config, 'recorder.yaml']),
                {
                    'output_dir': LaunchConfiguration('output_dir'),
                    'sync_tolerance_s': 0.02,  # franky-sim's state stream is irregular (see the profile)
                    'session.target_plane': LaunchConfiguration('target_plane'),
                    'session.probe_model': 'simulated phased array',
                    'session.extra_yaml': 'profile: record_sim',
                    'session.sim_patient_seed': LaunchConfiguration('sim_seed'),
                },
            ],
        ),
    ]
    return LaunchDescription(arguments + [simulator] + nodes)
