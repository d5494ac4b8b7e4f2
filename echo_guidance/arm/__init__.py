"""The arm: where the probe is, in ``base``, from whichever arm interface a setup has.

* :mod:`echo_guidance.arm.calibration`: the flange → probe calibration read from config.
* :mod:`echo_guidance.arm.state`: one arm sample, its checks (NaN, non-rigid, stale) and the
  counters the arm-state node reports in diagnostics.
* :mod:`echo_guidance.arm.trajectory`: the deterministic analytic probe trajectory the scripted
  simulation backend plays and the benchmarks use as ground truth.
* :mod:`echo_guidance.arm.backends`: the backends: franka_ros2 topics, libfranka through franky
  (real arm or ``franky-sim``), and the scripted trajectory.
"""
