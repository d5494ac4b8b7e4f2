"""Closed-loop evaluation: autonomous scanning of held-out virtual patients in simulation.

From random starts near a standard plane (up to ±30 mm and ±30° from it), a guidance policy looks
at frames rendered at the probe's pose, the arm controller (safety envelope, planner, state
machine; :mod:`echo_guidance.control`) moves a kinematic simulated arm, and the run ends when the
controller declares the plane reached or the time runs out. Success: the probe ends within 5 mm
and 5° (geodesic) of the plane's pose (docs/conventions.md).

* :mod:`~echo_guidance.closed_loop.policies`: guidance policies (the ground-truth oracle, a raw
  ONNX model, the fused guidance engine).
* :mod:`~echo_guidance.closed_loop.episode`: one run.
* :mod:`~echo_guidance.closed_loop.evaluate`: many runs, metrics, reports.
* ``echo-guidance closed-loop`` (also ``echo-guidance evaluate closed-loop``): the command.
"""
