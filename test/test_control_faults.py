"""Randomised fault injection against the arm controller: the safety envelope is never violated.

Each sequence draws random limits, a random start pose and target, a random arm lag and several
random faults (onset, duration, kind) and runs the controller (envelope + planner + state machine)
against the kinematic simulated arm in simulated time. Every cycle the test checks, with its own
arithmetic rather than the envelope's:

* a fault present in this cycle's inputs gives no motion command this cycle (stop or hold within
  one control cycle; stop for the stop-class faults);
* every motion command respects the step, speed and acceleration limits against the previous
  command, stays in the workspace box and rotation cone around the pose where the controller first
  armed, and is never issued while the probe is farther than the tracking limit from the last
  setpoint;
* the arm receives a command exactly when the decision is a move, and after any stop nothing moves
  again before the deadman has been released and pressed again;
* the probe itself never leaves the workspace box (unless the test pushed it).
"""

import dataclasses
import math

import numpy as np
import pytest

from echo_guidance.arm.interface import ArmInterface
from echo_guidance.arm.kinematic import KinematicArm, KinematicArmBackend
from echo_guidance.control import (
    ArmController,
    ControlInputs,
    ControlState,
    GuidanceSample,
    PlannerConfig,
    SafetyLimits,
    Verdict,
)
from echo_guidance.geometry import action_to_matrix, relative_action

STOP_FAULTS = (
    'estop',
    'deadman_released',
    'deadman_stale',
    'deadman_missing',
    'pose_stale',
    'pose_nan',
    'pose_not_rigid',
    'pose_future',
    'force',
    'torque',
    'wrench_nan',
    'wrench_stale',
    'wrench_missing',
    'node_dead',
    'arm_error',
    'clock_back',
)
HOLD_FAULTS = (
    'frame_stale',
    'frame_missing',
    'guidance_stale',
    'guidance_nan',
    'guidance_invalid',
    'guidance_out_of_range',
    'low_confidence',
    'guidance_future',
)
# Not faults of the inputs, but stresses the envelope must bound: wild guidance, a target far
# outside the workspace, an arm pushed off its setpoint, a stalled arm.
STRESSES = ('wild_guidance', 'far_target', 'push', 'stall')
ALL_KINDS = STOP_FAULTS + HOLD_FAULTS + STRESSES
OPERATOR_STOPS = ('estop', 'deadman_released', 'deadman_timeout', 'deadman_missing')
SEQUENCES_PER_BLOCK = 250
BLOCKS = 4
CYCLES = 45


def angle_deg(R1, R2):
    return math.degrees(math.acos(min(1.0, max(-1.0, (np.trace(R1.T @ R2) - 1.0) / 2.0))))


def random_limits(rng):
    return SafetyLimits(
        control_rate_hz=float(rng.choice([20.0, 50.0, 100.0])),
        max_step_translation_mm=float(rng.uniform(0.2, 2.0)),
        max_step_rotation_deg=float(rng.uniform(0.2, 2.0)),
        max_linear_speed_mm_s=float(rng.uniform(5.0, 40.0)),
        max_angular_speed_deg_s=float(rng.uniform(5.0, 30.0)),
        max_linear_acceleration_mm_s2=float(rng.uniform(20.0, 400.0)),
        max_angular_acceleration_deg_s2=float(rng.uniform(20.0, 300.0)),
        workspace_half_extent_mm=tuple(float(v) for v in rng.uniform(3.0, 60.0, 3)),
        max_rotation_from_start_deg=float(rng.uniform(3.0, 60.0)),
        max_tracking_error_mm=float(rng.uniform(1.0, 5.0)),
        max_tracking_error_deg=float(rng.uniform(1.0, 5.0)),
        min_confidence=float(rng.uniform(0.1, 0.8)),
    )


@dataclasses.dataclass
class Fault:
    kind: str
    start: int
    end: int
    value: float


def random_faults(rng, cycles):
    faults = []
    for _ in range(int(rng.integers(2, 6))):
        start = int(rng.integers(4, cycles - 2))
        faults.append(
            Fault(str(rng.choice(ALL_KINDS)), start, start + int(rng.integers(1, 10)), float(rng.uniform()))
        )
    return faults


class Harness:
    """One randomised sequence: builds the inputs, runs the controller, checks every property."""

    def __init__(self, seed):
        rng = self.rng = np.random.default_rng(seed)
        self.limits = random_limits(rng)
        self.dt = self.limits.period_s
        self.start = action_to_matrix(np.concatenate([rng.uniform(300, 600, 3), rng.uniform(-180, 180, 3)]))
        offset = np.concatenate([rng.uniform(-30, 30, 3), rng.uniform(-30, 30, 3)])
        self.target = self.start @ action_to_matrix(offset)
        self.arm = KinematicArm(self.start, time_constant_s=float(rng.uniform(0.005, 0.1)))
        self.t = 0.0
        self.backend = KinematicArmBackend(self.arm, clock=lambda: self.t)
        self.interface = ArmInterface(self.backend, clock=lambda: self.t)
        self.controller = ArmController(
            self.limits,
            PlannerConfig(gain_per_s=float(rng.uniform(0.5, 5.0)), min_estimates=1),
            self.interface,
        )
        self.faults = random_faults(rng, CYCLES)
        self.counts = {'moves': 0, 'stops': 0, 'holds': 0, 'faults': len(self.faults)}
        self.workspace_centre = None
        self.workspace_rotation = None
        self.prev_move = None
        self.needs_release = False
        self.operator_release = 0
        self.pushed = False
        self.history = []  # (time, true probe pose) of past cycles: the guidance answers one of them

    def active(self, k):
        return {f.kind: f for f in self.faults if f.start <= k < f.end}

    def inputs(self, k, active):
        rng, t, lim = self.rng, self.t, self.limits
        state = self.backend.state()
        self.history.append((t, state.pose_mm.copy()))
        pose, pose_stamp = state.pose_mm.copy(), state.stamp_s
        wrench, wrench_stamp = rng.normal(0.0, 1.0, 6) * [2, 2, 2, 0.2, 0.2, 0.2], t
        now = t
        # The operator: released for the first cycles, then pressed; releases and re-presses after stops.
        held = k >= 2 and self.operator_release == 0
        if self.operator_release:
            self.operator_release -= 1
        deadman_stamp = t
        if 'deadman_released' in active:
            held = False
        if 'deadman_stale' in active:  # the pedal fell silent: its last message ages past the timeout
            deadman_stamp = t - lim.deadman_timeout_s - 0.001 - active['deadman_stale'].value
        deadman = (held, deadman_stamp)
        if 'deadman_missing' in active:
            deadman = (None, None)
        if 'pose_stale' in active:
            pose_stamp = t - lim.pose_max_age_s - 0.001 - active['pose_stale'].value
        if 'pose_nan' in active:
            pose[int(rng.integers(0, 3)), int(rng.integers(0, 4))] = np.nan
        if 'pose_not_rigid' in active:
            pose[:3, :3] *= 1.01
        if 'pose_future' in active:
            pose_stamp = t + lim.max_future_stamp_s + 0.05
        if 'force' in active:
            wrench[:3] = rng.normal(0, 1, 3)
            wrench[:3] *= (lim.max_contact_force_n + 0.1 + active['force'].value * 20) / np.linalg.norm(
                wrench[:3]
            )
        if 'torque' in active:
            wrench[3:] = rng.normal(0, 1, 3)
            wrench[3:] *= (lim.max_contact_torque_nm + 0.01 + active['torque'].value) / np.linalg.norm(
                wrench[3:]
            )
        if 'wrench_nan' in active:
            wrench[int(rng.integers(0, 6))] = np.inf if active['wrench_nan'].value > 0.5 else np.nan
        if 'wrench_stale' in active:
            wrench_stamp = t - lim.wrench_max_age_s - 0.01
        if 'wrench_missing' in active:
            wrench, wrench_stamp = None, None
        frame_stamp = t - rng.uniform(0, 0.5) * lim.frame_max_age_s
        if 'frame_stale' in active:
            frame_stamp = t - lim.frame_max_age_s - 0.01 - active['frame_stale'].value
        if 'frame_missing' in active:
            frame_stamp = None
        lag = int(rng.integers(0, max(1, int(0.5 * lim.guidance_max_age_s / self.dt))))
        lag = min(lag, len(self.history) - 1)
        guidance_stamp, reference = self.history[-1 - lag]
        target = self.target
        if 'far_target' in active:
            target = self.target @ action_to_matrix(rng.uniform(-200, 200, 6) * [1, 1, 1, 0.5, 0.5, 0.5])
        action = relative_action(reference, target) + rng.normal(0, 1, 6)
        if 'wild_guidance' in active:
            action = np.concatenate([rng.uniform(-100, 100, 3), rng.uniform(-170, 170, 3)])
        confidence = float(rng.uniform(lim.min_confidence, 1.0))
        valid = True
        if 'guidance_stale' in active:
            guidance_stamp = t - lim.guidance_max_age_s - 0.01 - active['guidance_stale'].value
        if 'guidance_future' in active:
            guidance_stamp = t + lim.max_future_stamp_s + 0.1
        if 'guidance_nan' in active:
            if active['guidance_nan'].value < 0.3:
                confidence = math.nan
            else:
                action[int(rng.integers(0, 6))] = np.nan if active['guidance_nan'].value < 0.6 else np.inf
        if 'guidance_invalid' in active:
            valid = False
        if 'guidance_out_of_range' in active:
            if active['guidance_out_of_range'].value < 0.5:
                action[:3] = (
                    action[:3] / max(np.linalg.norm(action[:3]), 1e-9) * (lim.max_action_translation_mm + 1)
                )
            else:
                confidence = 1.5
        if 'low_confidence' in active:
            confidence = lim.min_confidence * active['low_confidence'].value * 0.999
        guidance = GuidanceSample(stamp_s=guidance_stamp, valid=valid, action=action, confidence=confidence)
        dead = ('/guidance: silent for 2.00 s',) if 'node_dead' in active else ()
        errors = ('reflex: cartesian_reflex',) if 'arm_error' in active else ()
        if 'clock_back' in active:
            now = t - 0.5 - active['clock_back'].value
        return ControlInputs(
            now_s=now,
            pose_mm=pose,
            pose_stamp_s=pose_stamp,
            wrench=wrench,
            wrench_stamp_s=wrench_stamp,
            deadman_held=deadman[0],
            deadman_stamp_s=deadman[1],
            estop='estop' in active,
            frame_stamp_s=frame_stamp,
            guidance=guidance,
            dead_nodes=dead,
            arm_errors=errors,
        )

    def check_move(self, k, inputs, command):
        lim, dt = self.limits, self.dt
        tol = 1e-6
        T = command.target_pose_mm
        assert np.all(np.isfinite(T)), f'cycle {k}: non-finite command'
        prev = self.prev_move
        base = prev.target_pose_mm if prev is not None else inputs.pose_mm
        v_prev = prev.linear_velocity_mm_s if prev is not None else np.zeros(3)
        w_prev = prev.angular_velocity_deg_s if prev is not None else np.zeros(3)
        step = np.linalg.norm(T[:3, 3] - base[:3, 3])
        turn = angle_deg(T[:3, :3], base[:3, :3])
        v, w = command.linear_velocity_mm_s, command.angular_velocity_deg_s
        assert step <= lim.max_step_translation_mm * (1 + tol), f'cycle {k}: step {step} mm'
        assert turn <= lim.max_step_rotation_deg * (1 + tol) + 1e-6, f'cycle {k}: turn {turn} deg'
        np.testing.assert_allclose(T[:3, 3] - base[:3, 3], v * dt, atol=1e-9)
        assert np.linalg.norm(v) <= lim.max_linear_speed_mm_s * (1 + tol), (
            f'cycle {k}: speed {np.linalg.norm(v)}'
        )
        assert np.linalg.norm(w) <= lim.max_angular_speed_deg_s * (1 + tol), f'cycle {k}: angular speed'
        assert np.linalg.norm(v - v_prev) <= lim.max_linear_acceleration_mm_s2 * dt * (1 + tol) + 1e-9, (
            f'cycle {k}: acceleration {np.linalg.norm(v - v_prev) / dt}'
        )
        assert np.linalg.norm(w - w_prev) <= lim.max_angular_acceleration_deg_s2 * dt * (1 + tol) + 1e-9, (
            f'cycle {k}: angular acceleration'
        )
        excess = np.abs(T[:3, 3] - self.workspace_centre) - np.asarray(lim.workspace_half_extent_mm)
        assert np.all(excess <= 1e-9), f'cycle {k}: command outside the workspace box by {excess.max()} mm'
        cone = angle_deg(T[:3, :3], self.workspace_rotation)
        assert cone <= lim.max_rotation_from_start_deg + 1e-6, f'cycle {k}: {cone} deg from the start'
        if prev is not None:
            distance = np.linalg.norm(inputs.pose_mm[:3, 3] - prev.target_pose_mm[:3, 3])
            assert distance <= lim.max_tracking_error_mm * (1 + tol), f'cycle {k}: moved with tracking error'

    def run(self):
        for k in range(CYCLES):
            active = self.active(k)
            if 'push' in active and active['push'].start == k:
                self.arm.pose_mm[:3, 3] += self.rng.normal(0, 1, 3) * (1 + 8 * active['push'].value)
                self.pushed = True
            inputs = self.inputs(k, active)
            moves_before = self.arm.commands
            report = self.controller.cycle(inputs)
            decision = report.decision
            stop_faults = [kind for kind in active if kind in STOP_FAULTS]
            hold_faults = [kind for kind in active if kind in HOLD_FAULTS]
            if report.state is ControlState.ARMED and self.workspace_centre is None:
                self.workspace_centre = inputs.pose_mm[:3, 3].copy()
                self.workspace_rotation = inputs.pose_mm[:3, :3].copy()
            if stop_faults:
                assert decision.verdict is Verdict.STOP, (
                    f'cycle {k}: faults {stop_faults} but decision {decision.describe()}'
                )
            if hold_faults:
                assert decision.verdict is not Verdict.MOVE, (
                    f'cycle {k}: faults {hold_faults} but decision {decision.describe()}'
                )
            if decision.verdict is Verdict.MOVE:
                assert not self.needs_release, f'cycle {k}: moved after a stop without a fresh deadman press'
                assert self.workspace_centre is not None
                self.check_move(k, inputs, decision.command)
                assert self.arm.commands == moves_before + 1, f'cycle {k}: move decided but not sent'
                self.prev_move = decision.command
                self.counts['moves'] += 1
            else:
                assert self.arm.commands == moves_before, (
                    f'cycle {k}: the arm got a command on {decision.verdict}'
                )
                self.prev_move = None
                self.counts['stops' if decision.verdict is Verdict.STOP else 'holds'] += 1
            if decision.verdict is Verdict.STOP and report.state is not ControlState.IDLE:
                self.needs_release = True
            # A release re-enables only after the last fault cycle and with the e-stop clear.
            fault_stop = decision.verdict is Verdict.STOP and decision.reason not in OPERATOR_STOPS
            fresh_release = inputs.deadman_held is False and inputs.deadman_stamp_s == inputs.now_s
            if fresh_release and not fault_stop and 'estop' not in active:
                self.needs_release = False
            if (
                report.state in (ControlState.FAULT, ControlState.STOPPED)
                and not active
                and not self.operator_release
            ):
                self.operator_release = 2
            if not self.pushed and self.workspace_centre is not None:
                excess = (
                    np.abs(self.arm.pose_mm[:3, 3] - self.workspace_centre)
                    - self.limits.workspace_half_extent_mm
                )
                assert np.all(excess <= 1e-6), f'cycle {k}: the probe left the workspace box'
            if 'stall' in active:
                self.arm.target_mm = self.arm.pose_mm.copy()  # the arm ignores its commands this cycle
            self.backend.advance(self.dt)
            self.t += self.dt
        return self.counts


@pytest.mark.parametrize('block', range(BLOCKS))
def test_random_faults_never_violate_the_envelope(block):
    totals = {'moves': 0, 'stops': 0, 'holds': 0, 'faults': 0}
    for index in range(SEQUENCES_PER_BLOCK):
        seed = block * SEQUENCES_PER_BLOCK + index
        try:
            counts = Harness(seed).run()
        except AssertionError as error:
            raise AssertionError(f'sequence seed {seed}: {error}') from None
        for key in totals:
            totals[key] += counts[key]
    # The sequences must actually exercise motion, holds and stops, or the checks above prove nothing.
    assert totals['moves'] > 20 * SEQUENCES_PER_BLOCK // 4, totals
    assert totals['stops'] > SEQUENCES_PER_BLOCK and totals['holds'] > SEQUENCES_PER_BLOCK, totals
    assert totals['faults'] >= 2 * SEQUENCES_PER_BLOCK


def test_every_fault_kind_is_injected_and_seen():
    """The random draws cover every fault kind, and each stop-class kind produces a stop."""
    seen = set()
    for seed in range(BLOCKS * SEQUENCES_PER_BLOCK):
        seen.update(f.kind for f in random_faults(np.random.default_rng(seed), CYCLES))
    assert seen == set(ALL_KINDS)
