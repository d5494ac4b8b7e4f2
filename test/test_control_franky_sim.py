"""The arm controller drives franky-sim (MuJoCo behind the real libfranka protocol) through franky.

franky-sim is started on loopback; the franky command backend connects, plays the approach from the
simulator's home pose to the virtual patient, and the controller (envelope, planner, state machine),
with the limits of config/arm_control_franky_sim.yaml, follows ground-truth guidance to a pose
18 mm / 11° away and holds there; a stop then leaves the arm still.
"""

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from echo_guidance.arm.calibration import FlangeToProbeCalibration
from echo_guidance.arm.command_backends import FrankyCommandBackend
from echo_guidance.arm.interface import ArmInterface
from echo_guidance.closed_loop.cli import load_controller_config
from echo_guidance.control import ArmController, ControlInputs, ControlState, GuidanceSample
from echo_guidance.geometry import action_to_matrix, relative_action
from echo_guidance.resources import config_path

APPROACH = [[-24.0, -40.0, 242.0, 0.0, 0.0, 0.0]]  # as config/arm_control_franky_sim.yaml


@pytest.fixture
def franky_sim():
    program = Path(sys.executable).parent / 'franky-sim'
    if not program.exists():
        pytest.skip('franky-sim is not installed')
    process = subprocess.Popen(
        [str(program), '-s', 'mujoco'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    host = None
    for line in process.stdout:
        found = re.search(r"using '([0-9.]+)'", line)
        if found:
            host = found.group(1)
            break
    try:
        assert host, 'franky-sim did not print its address'
        yield host
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.slow
def test_controller_moves_franky_sim_to_a_target_and_stops(franky_sim):
    limits, planner = load_controller_config(
        [config_path('arm_control.yaml'), config_path('arm_control_franky_sim.yaml')]
    )
    calibration = FlangeToProbeCalibration.from_config(
        {'translation_mm': [0.0, 0.0, 135.0], 'rpy_deg': [0.0, 0.0, 90.0]}
    )
    backend = FrankyCommandBackend(
        franky_sim, calibration, limits, clock=time.monotonic, sim_approach=APPROACH
    )
    arm = ArmInterface(backend).start()
    try:
        deadline = time.monotonic() + 60
        while backend.state() is None:
            assert not backend.connection_error(), backend.connection_error()
            assert time.monotonic() < deadline, 'no state from franky-sim'
            time.sleep(0.1)
        start = backend.state().pose_mm
        # The approach put the probe at the virtual patient's parasternal window (about z = 145 mm).
        assert abs(start[2, 3] - 145.0) < 10.0, start[:3, 3]
        target = start @ action_to_matrix([15.0, -10.0, 0.0, 5.0, -5.0, 8.0])
        controller = ArmController(limits, planner, arm)
        cycle, report = 0, None
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            now = time.monotonic()
            state = backend.state()
            action = relative_action(state.pose_mm, target)
            # A ground-truth stop judgement: at the target within 2 mm / 2 deg.
            at_target = bool(np.linalg.norm(action[:3]) < 2.0 and np.all(np.abs(action[3:]) < 2.0))
            guidance = GuidanceSample(now, True, action, 0.9, plane_reached=at_target)
            report = controller.cycle(
                ControlInputs(
                    now_s=now,
                    pose_mm=state.pose_mm,
                    pose_stamp_s=state.stamp_s,
                    wrench=state.wrench,
                    wrench_stamp_s=state.wrench_stamp_s,
                    deadman_held=cycle > 2,
                    deadman_stamp_s=now,
                    frame_stamp_s=now,
                    guidance=guidance,
                    arm_errors=state.errors,
                )
            )
            assert report.state not in (ControlState.FAULT, ControlState.STOPPED), report
            if report.state is ControlState.PLANE_REACHED:
                break
            cycle += 1
            time.sleep(max(0.0, limits.period_s - (time.monotonic() - now)))
        assert report.state is ControlState.PLANE_REACHED, report
        error = relative_action(backend.state().pose_mm, target)
        assert np.linalg.norm(error[:3]) < 3.0 and np.all(np.abs(error[3:]) < 3.0), error
        arm.stop()
        time.sleep(0.5)
        before = backend.state().pose_mm
        time.sleep(0.5)
        assert np.linalg.norm(backend.state().pose_mm[:3, 3] - before[:3, 3]) < 0.05
    finally:
        arm.close()
