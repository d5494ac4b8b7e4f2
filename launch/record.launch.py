"""Launch the demonstration-recording nodes with real devices: arm state, capture, pedal, recorder.

Same set-up as ``echo-guidance record --profile record_fr3`` (franka_ros2 arm, started
separately) or ``--profile record_panda`` (``arm_config:=arm_franky.yaml``: libfranka directly).

    ros2 launch echo_guidance record.launch.py video_device:=/dev/video0 pedal_port:=/dev/ttyACM0 \
        output_dir:=/data/demonstrations subject_id:=S-014 target_plane:=PSAX-AV
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description():
    """Describe the four nodes and their configuration files."""
    config = PathJoinSubstitution([FindPackageShare('echo_guidance'), 'config'])
    calibration = PathJoinSubstitution([config, 'arm_calibration.yaml'])
    arguments = [
        DeclareLaunchArgument(
            'arm_config',
            default_value='arm.yaml',
            description='arm backend config: arm.yaml (franka_ros2) or arm_franky.yaml (libfranka)',
        ),
        DeclareLaunchArgument('video_device', default_value='/dev/video0', description='frame grabber'),
        DeclareLaunchArgument('pedal_port', default_value='/dev/ttyACM0', description='pedal serial port'),
        DeclareLaunchArgument('output_dir', default_value='out/demonstrations', description='where bags go'),
        DeclareLaunchArgument('operator_id', default_value='', description='operator id'),
        DeclareLaunchArgument('subject_id', default_value='', description='pseudonymous subject id'),
        DeclareLaunchArgument('target_plane', default_value='PLAX', description='PLAX, PSAX-AV or PSAX-MV'),
    ]
    nodes = [
        Node(
            package='echo_guidance',
            executable='arm_state_node',
            name='arm_state',
            output='screen',
            parameters=[calibration, PathJoinSubstitution([config, LaunchConfiguration('arm_config')])],
        ),
        Node(
            package='echo_guidance',
            executable='capture_node',
            name='capture',
            output='screen',
            parameters=[
                {
                    'source_kind': 'opencv',
                    'source_spec': LaunchConfiguration('video_device'),
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
            parameters=[{'port': LaunchConfiguration('pedal_port')}],
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
                    'session.operator_id': LaunchConfiguration('operator_id'),
                    'session.subject_id': LaunchConfiguration('subject_id'),
                    'session.target_plane': LaunchConfiguration('target_plane'),
                },
            ],
        ),
    ]
    return LaunchDescription(arguments + nodes)
