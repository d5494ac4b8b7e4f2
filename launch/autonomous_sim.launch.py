"""Launch autonomous scanning in simulation: kinematic arm under arm control, capture, pedal, guidance.

The node list, parameter files and parameters come from config/profiles/autonomous_sim.yaml, the profile that
``echo-guidance up autonomous_sim`` starts without ``ros2 launch``: the two cannot drift apart.

    ros2 launch echo_guidance autonomous_sim.launch.py model:=out/models/cpu_dreamer.onnx
"""

PROFILE = 'autonomous_sim'


def generate_launch_description():
    """Describe the graph of profile autonomous_sim (imports launch / launch_ros only now)."""
    from echo_guidance.up.launch import profile_launch_description

    return profile_launch_description(PROFILE)
