"""Start a whole node graph from a profile: ``echo-guidance up PROFILE`` and the launch files.

A profile (``config/profiles/<name>.yaml``, :mod:`echo_guidance.recording.profiles`) names helper
processes, nodes, their parameter files and parameters. ``echo-guidance up`` starts that graph as
separate processes for pip-only installs (no ``ros2 launch`` there); ``launch/<name>.launch.py``
builds the same graph for ``ros2 launch`` from the same YAML (:mod:`echo_guidance.up.launch`), so
the two cannot drift. :mod:`echo_guidance.up.graph` resolves and checks a profile without ROS:
executables, parameter files, declared parameter names, placeholders.
"""
