"""Launch autonomous scanning with real devices: arm state and arm control (franka_ros2), capture, guidance.

The node list, parameter files and parameters come from config/profiles/autonomous.yaml, the profile that
``echo-guidance up autonomous`` starts without ``ros2 launch``: the two cannot drift apart.

    ros2 launch echo_guidance autonomous.launch.py model:=/data/models/dreamer.onnx target_plane:=PLAX
"""

PROFILE = 'autonomous'


def generate_launch_description():
    """Describe the graph of profile autonomous (imports launch / launch_ros only now)."""
    from echo_guidance.up.launch import profile_launch_description

    return profile_launch_description(PROFILE)
