"""Randomised fault injection against the arm controller: the safety envelope is never violated.

``echo-guidance bench faults`` (and test/test_control_faults.py, with fewer sequences). Each sequence
draws random limits, a random start pose and target, a random arm lag, a planner *motion mode* and
several random faults (onset, duration, kind), and runs the controller (envelope + planner + state
machine) against the kinematic simulated arm in simulated time. Every cycle it checks, with its own
arithmetic rather than the envelope's:

* a fault present in this cycle's inputs gives no motion command this cycle (stop or hold within
  one control cycle; stop for the stop-class faults);
* every motion command respects the step, speed and acceleration limits against the previous
  command, stays in the workspace box and rotation cone around the pose where the controller first
  armed, and is never issued while the probe is farther than the tracking limit from the last
  setpoint;
* the arm receives a command exactly when the decision is a move, and after any stop nothing moves
  again before the deadman has been released and pressed again;
* the probe itself never leaves the workspace box (unless the sequence pushed it).

Motion modes: ``continuous`` (the default planner), ``step_and_look``, ``look_around`` (the stop
judgement must agree; looks from poses around the estimate, the guidance's flag drawn at random)
and ``search`` (low confidence starts a bounded search pattern: there low confidence is the one
hold-class condition that may move, every other check still applies). Sequences of the last two
start near the target and run longer, so those phases are reached; the report counts the cycles
spent in them.
"""

import dataclasses
import json
import math
import pathlib
import time

import numpy as np

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
MODES = ('continuous', 'step_and_look', 'look_around', 'search')
CYCLES = {'continuous': 45, 'step_and_look': 45, 'look_around': 150, 'search': 150}


class EnvelopeViolation(AssertionError):
    """A motion or a missing stop the envelope must never allow (names the cycle and the check)."""


def _require(condition, message):
    if not condition:
        raise EnvelopeViolation(message)


def angle_deg(R1, R2):
    """Geodesic angle between two rotation matrices, degrees."""
    return math.degrees(math.acos(min(1.0, max(-1.0, (np.trace(R1.T @ R2) - 1.0) / 2.0))))


def random_limits(rng):
    """SafetyLimits drawn over wide ranges (every check must hold for any valid limits)."""
    from echo_guidance.control import SafetyLimits

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


def random_planner(rng, mode):
    """PlannerConfig of a motion mode, its settings drawn at random."""
    from echo_guidance.control import PlannerConfig

    base = {
        'gain_per_s': float(rng.uniform(0.5, 5.0)),
        'min_estimates': 1,
        'reach_requires_guidance': False,
        'look_around': False,
        'search': False,
    }
    if mode == 'step_and_look':
        base.update(
            step_and_look=True, look_frames=int(rng.integers(1, 4)), step_fraction=float(rng.uniform(0.3, 1))
        )
    elif mode == 'look_around':
        base.update(
            reach_requires_guidance=True,
            look_around=True,
            reach_cycles=int(rng.integers(1, 5)),
            reach_translation_mm=float(rng.uniform(1.0, 4.0)),
            reach_rotation_deg=float(rng.uniform(1.0, 4.0)),
            look_around_mm=float(rng.uniform(0.5, 6.0)),
            look_around_deg=float(rng.uniform(0.5, 6.0)),
            look_around_frames=int(rng.integers(1, 3)),
            look_around_rounds=int(rng.integers(1, 4)),
            look_still_mm=float(rng.uniform(0.2, 1.0)),
            look_still_deg=float(rng.uniform(0.2, 1.0)),
        )
    elif mode == 'search':
        base.update(
            search=True,
            search_after_s=float(rng.uniform(0.02, 0.3)),
            search_mm=float(rng.uniform(1.0, 20.0)),
            search_deg=float(rng.uniform(1.0, 20.0)),
            search_press_mm=float(rng.uniform(0.0, 10.0)),
            search_dwell_s=float(rng.uniform(0.02, 0.3)),
            search_rounds=int(rng.integers(1, 4)),
            look_still_mm=float(rng.uniform(0.2, 1.0)),
            look_still_deg=float(rng.uniform(0.2, 1.0)),
        )
    return PlannerConfig(**base)


@dataclasses.dataclass
class Fault:
    """One injected fault: its kind, first and last cycle (exclusive) and a draw for its size."""

    kind: str
    start: int
    end: int
    value: float


def random_faults(rng, cycles):
    """Two to five faults of random kinds at random cycles."""
    faults = []
    for _ in range(int(rng.integers(2, 6))):
        start = int(rng.integers(4, cycles - 2))
        faults.append(
            Fault(str(rng.choice(ALL_KINDS)), start, start + int(rng.integers(1, 10)), float(rng.uniform()))
        )
    return faults


class Sequence:
    """One randomised sequence: builds the inputs, runs the controller, checks every property."""

    def __init__(self, seed, mode='continuous'):
        """Draw the sequence of ``seed`` in motion mode ``mode``."""
        from echo_guidance.arm.interface import ArmInterface
        from echo_guidance.arm.kinematic import KinematicArm, KinematicArmBackend
        from echo_guidance.control import ArmController
        from echo_guidance.geometry import action_to_matrix

        if mode not in MODES:
            raise ValueError(f'unknown motion mode {mode!r}: expected one of {", ".join(MODES)}')
        self.mode = mode
        self.cycles = CYCLES[mode]
        rng = self.rng = np.random.default_rng([seed, MODES.index(mode)])
        self.limits = random_limits(rng)
        self.dt = self.limits.period_s
        self.start = action_to_matrix(np.concatenate([rng.uniform(300, 600, 3), rng.uniform(-180, 180, 3)]))
        reach = 30.0 if mode in ('continuous', 'step_and_look') else 4.0
        offset = np.concatenate([rng.uniform(-reach, reach, 3), rng.uniform(-reach, reach, 3)])
        self.target = self.start @ action_to_matrix(offset)
        self.arm = KinematicArm(self.start, time_constant_s=float(rng.uniform(0.005, 0.1)))
        self.t = 0.0
        self.backend = KinematicArmBackend(self.arm, clock=lambda: self.t)
        self.interface = ArmInterface(self.backend, clock=lambda: self.t)
        self.controller = ArmController(self.limits, random_planner(rng, mode), self.interface)
        self.faults = random_faults(rng, self.cycles)
        # The search mode's driver (not a fault): stretches of low confidence that start searches.
        self.lost = []
        if mode == 'search':
            start = int(rng.integers(2, 20))
            self.lost = [(start, start + int(rng.integers(20, 120)))]
        self.counts = {
            'moves': 0,
            'stops': 0,
            'holds': 0,
            'faults': len(self.faults),
            'look_around': 0,
            'search': 0,
        }
        self.workspace_centre = None
        self.workspace_rotation = None
        self.prev_move = None
        self.needs_release = False
        self.operator_release = 0
        self.pushed = False
        self.history = []  # (time, true probe pose) of past cycles: the guidance answers one of them

    def active(self, k):
        """The faults active in cycle ``k``, by kind."""
        return {f.kind: f for f in self.faults if f.start <= k < f.end}

    def inputs(self, k, active):
        """The ControlInputs of cycle ``k`` with the active faults applied."""
        from echo_guidance.control import ControlInputs, GuidanceSample
        from echo_guidance.geometry import action_to_matrix, plane_distance, relative_action

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
        truth = relative_action(reference, target)
        action = truth + rng.normal(0, 1, 6)
        if 'wild_guidance' in active:
            action = np.concatenate([rng.uniform(-100, 100, 3), rng.uniform(-170, 170, 3)])
        confidence = float(rng.uniform(lim.min_confidence, 1.0))
        if any(start <= k < end for start, end in self.lost):
            confidence = lim.min_confidence * float(rng.uniform(0.0, 0.999))
        if 'low_confidence' in active:
            confidence = lim.min_confidence * active['low_confidence'].value * 0.999
        # Faults that write the confidence too (NaN, out of range) come after, so none is masked.
        # The stop judgement's flag: right most of the time, wrong at random (the planner must cope).
        reached = bool(plane_distance(truth) <= 0.6) != bool(rng.uniform() < 0.1)
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
        guidance = GuidanceSample(
            stamp_s=guidance_stamp, valid=valid, action=action, confidence=confidence, plane_reached=reached
        )
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
        """Every limit, checked with this module's own arithmetic."""
        lim, dt = self.limits, self.dt
        tol = 1e-6
        T = command.target_pose_mm
        _require(np.all(np.isfinite(T)), f'cycle {k}: non-finite command')
        prev = self.prev_move
        base = prev.target_pose_mm if prev is not None else inputs.pose_mm
        v_prev = prev.linear_velocity_mm_s if prev is not None else np.zeros(3)
        w_prev = prev.angular_velocity_deg_s if prev is not None else np.zeros(3)
        step = np.linalg.norm(T[:3, 3] - base[:3, 3])
        turn = angle_deg(T[:3, :3], base[:3, :3])
        v, w = command.linear_velocity_mm_s, command.angular_velocity_deg_s
        _require(step <= lim.max_step_translation_mm * (1 + tol), f'cycle {k}: step {step} mm')
        _require(turn <= lim.max_step_rotation_deg * (1 + tol) + 1e-6, f'cycle {k}: turn {turn} deg')
        _require(
            np.allclose(T[:3, 3] - base[:3, 3], v * dt, atol=1e-9),
            f'cycle {k}: step is not velocity x period',
        )
        _require(
            np.linalg.norm(v) <= lim.max_linear_speed_mm_s * (1 + tol),
            f'cycle {k}: speed {np.linalg.norm(v)}',
        )
        _require(np.linalg.norm(w) <= lim.max_angular_speed_deg_s * (1 + tol), f'cycle {k}: angular speed')
        _require(
            np.linalg.norm(v - v_prev) <= lim.max_linear_acceleration_mm_s2 * dt * (1 + tol) + 1e-9,
            f'cycle {k}: acceleration {np.linalg.norm(v - v_prev) / dt}',
        )
        _require(
            np.linalg.norm(w - w_prev) <= lim.max_angular_acceleration_deg_s2 * dt * (1 + tol) + 1e-9,
            f'cycle {k}: angular acceleration',
        )
        excess = np.abs(T[:3, 3] - self.workspace_centre) - np.asarray(lim.workspace_half_extent_mm)
        _require(np.all(excess <= 1e-9), f'cycle {k}: command outside the workspace box by {excess.max()} mm')
        cone = angle_deg(T[:3, :3], self.workspace_rotation)
        _require(cone <= lim.max_rotation_from_start_deg + 1e-6, f'cycle {k}: {cone} deg from the start')
        if prev is not None:
            distance = np.linalg.norm(inputs.pose_mm[:3, 3] - prev.target_pose_mm[:3, 3])
            _require(
                distance <= lim.max_tracking_error_mm * (1 + tol), f'cycle {k}: moved with tracking error'
            )

    def run(self):
        """Run every cycle; return the counts. Raises EnvelopeViolation at the first violation."""
        from echo_guidance.control import ControlState, Verdict

        hold_faults_of_mode = (
            HOLD_FAULTS
            if self.mode != 'search'
            else tuple(kind for kind in HOLD_FAULTS if kind != 'low_confidence')
        )
        planner = self.controller.planner
        for k in range(self.cycles):
            active = self.active(k)
            if 'push' in active and active['push'].start == k:
                self.arm.pose_mm[:3, 3] += self.rng.normal(0, 1, 3) * (1 + 8 * active['push'].value)
                self.pushed = True
            inputs = self.inputs(k, active)
            moves_before = self.arm.commands
            report = self.controller.cycle(inputs)
            decision = report.decision
            stop_faults = [kind for kind in active if kind in STOP_FAULTS]
            hold_faults = [kind for kind in active if kind in hold_faults_of_mode]
            if report.state is ControlState.ARMED and self.workspace_centre is None:
                self.workspace_centre = inputs.pose_mm[:3, 3].copy()
                self.workspace_rotation = inputs.pose_mm[:3, :3].copy()
            if stop_faults:
                _require(
                    decision.verdict is Verdict.STOP,
                    f'cycle {k}: faults {stop_faults} but decision {decision.describe()}',
                )
            if hold_faults:
                _require(
                    decision.verdict is not Verdict.MOVE,
                    f'cycle {k}: faults {hold_faults} but decision {decision.describe()}',
                )
            if decision.verdict is Verdict.MOVE:
                _require(
                    not self.needs_release, f'cycle {k}: moved after a stop without a fresh deadman press'
                )
                _require(self.workspace_centre is not None, f'cycle {k}: moved before arming')
                self.check_move(k, inputs, decision.command)
                _require(self.arm.commands == moves_before + 1, f'cycle {k}: move decided but not sent')
                self.prev_move = decision.command
                self.counts['moves'] += 1
                if planner.searching:
                    self.counts['search'] += 1
                elif planner._around is not None:
                    self.counts['look_around'] += 1
            else:
                _require(
                    self.arm.commands == moves_before,
                    f'cycle {k}: the arm got a command on {decision.verdict}',
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
                _require(np.all(excess <= 1e-6), f'cycle {k}: the probe left the workspace box')
            if 'stall' in active:
                self.arm.target_mm = self.arm.pose_mm.copy()  # the arm ignores its commands this cycle
            self.backend.advance(self.dt)
            self.t += self.dt
        return self.counts


def run_faults(sequences, modes=MODES, first_seed=0, progress=None):
    """Run ``sequences`` sequences per mode; return the report dict (violations listed, never raised)."""
    report = {'modes': {}, 'violations': [], 'faults_by_kind': {}, 'sequences': 0, 'faults': 0}
    started = time.monotonic()
    for mode in modes:
        totals = {'moves': 0, 'stops': 0, 'holds': 0, 'faults': 0, 'look_around': 0, 'search': 0}
        kinds = {kind: 0 for kind in ALL_KINDS}
        for seed in range(first_seed, first_seed + sequences):
            sequence = Sequence(seed, mode)
            for fault in sequence.faults:
                kinds[fault.kind] += 1
            try:
                counts = sequence.run()
            except EnvelopeViolation as error:
                report['violations'].append({'mode': mode, 'seed': seed, 'violation': str(error)})
                continue
            for key in totals:
                totals[key] += counts[key]
        report['modes'][mode] = {'sequences': sequences, **totals, 'faults_by_kind': kinds}
        report['sequences'] += sequences
        report['faults'] += totals['faults']
        for kind, n in kinds.items():
            report['faults_by_kind'][kind] = report['faults_by_kind'].get(kind, 0) + n
        if progress:
            progress(
                f'{mode}: {sequences} sequences, {totals["faults"]} faults, '
                f'{time.monotonic() - started:.0f} s'
            )
    report['injected'] = sum(report['faults_by_kind'].values())
    report['wall_s'] = time.monotonic() - started
    return report


def markdown(report):
    """The report as Markdown: per mode, then per fault kind."""
    lines = [
        f'{report["sequences"]} sequences, {report["injected"]} injected faults, '
        f'{len(report["violations"])} envelope violations ({report["wall_s"]:.0f} s).',
        '',
        '| mode | sequences | faults | motion cycles | stops | holds | look-around moves | search moves |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for mode, m in report['modes'].items():
        lines.append(
            f'| {mode} | {m["sequences"]} | {m["faults"]} | {m["moves"]} | {m["stops"]} | {m["holds"]} | '
            f'{m["look_around"]} | {m["search"]} |'
        )
    lines += [
        '',
        '| fault kind | ' + ' | '.join(report['modes']) + ' | all |',
        '|---|' + '---|' * (len(report['modes']) + 1),
    ]
    for kind in ALL_KINDS:
        per_mode = [str(m['faults_by_kind'][kind]) for m in report['modes'].values()]
        lines.append(f'| {kind} | ' + ' | '.join(per_mode) + f' | {report["faults_by_kind"][kind]} |')
    return '\n'.join(lines)


def register_bench(subparsers):
    """Add ``bench faults``."""
    from echo_guidance.cli_options import add_output_dir

    parser = subparsers.add_parser(
        'faults',
        help='randomised fault injection against the arm controller in every motion mode (0 violations)',
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        '--sequences', type=int, default=1000, help='sequences per motion mode (default 1000)'
    )
    parser.add_argument(
        '--modes', default=','.join(MODES), help=f'comma-separated motion modes (default {",".join(MODES)})'
    )
    parser.add_argument('--seed', type=int, default=0, help='first sequence seed (default 0)')
    add_output_dir(
        parser, 'where results.json and results.md go (default out/bench/faults)', default='out/bench/faults'
    )
    parser.set_defaults(handler=_run)


def _run(args):
    import sys

    modes = [m.strip() for m in args.modes.split(',') if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes or args.sequences < 1:
        print(
            f'bench faults: modes must be among {", ".join(MODES)} and --sequences >= 1 (got {args.modes}, '
            f'{args.sequences})',
            file=sys.stderr,
        )
        return 2
    report = run_faults(args.sequences, modes, args.seed, progress=lambda text: print(text, flush=True))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'results.json').write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (out / 'results.md').write_text(text + '\n')
    print(text)
    for violation in report['violations'][:10]:
        print(f'VIOLATION {violation}', file=sys.stderr)
    return 1 if report['violations'] else 0
