"""Launch live guidance in simulation, display only: franky-sim arm near the patient, capture, guidance.

The node list, parameter files and parameters come from config/profiles/guide_sim.yaml, the profile that
``echo-guidance up guide_sim`` starts without ``ros2 launch``: the two cannot drift apart.

    ros2 launch echo_guidance guide_sim.launch.py model:=out/models/cpu_dreamer.onnx target_plane:=PLAX
"""

PROFILE = 'guide_sim'


def generate_launch_description():
    """Describe the graph of profile guide_sim (imports launch / launch_ros only now)."""
    from echo_guidance.up.launch import profile_launch_description

    return profile_launch_description(PROFILE)
