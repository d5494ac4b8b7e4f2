"""ROS 2 nodes of echo_guidance: one module per node, each with a main(args=None)."""
