"""Launch live guidance with real devices, display only: arm state (franka_ros2), capture, guidance.

The node list, parameter files and parameters come from config/profiles/guide.yaml, the profile that
``echo-guidance up guide`` starts without ``ros2 launch``: the two cannot drift apart.

    ros2 launch echo_guidance guide.launch.py model:=/data/models/dreamer.onnx target_plane:=PSAX-AV
"""

PROFILE = 'guide'


def generate_launch_description():
    """Describe the graph of profile guide (imports launch / launch_ros only now)."""
    from echo_guidance.up.launch import profile_launch_description

    return profile_launch_description(PROFILE)
