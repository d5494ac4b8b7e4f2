"""Safety limits, envelope, planner, state machine and arm interface: the behaviours one by one."""

import math

import numpy as np
import pytest

from echo_guidance.arm.interface import ArmInterface, CommandRefusedError
from echo_guidance.arm.kinematic import KinematicArm, KinematicArmBackend
from echo_guidance.control import (
    ArmController,
    ControlInputs,
    ControlState,
    ControlStateMachine,
    GuidanceSample,
    LimitsError,
    MotionCommand,
    PlannerConfig,
    PoseHistory,
    SafetyEnvelope,
    SafetyLimits,
    Verdict,
)
from echo_guidance.control.envelope import Decision
from echo_guidance.control.planner import Proposal
from echo_guidance.geometry import action_to_matrix, plane_distance, relative_action

START = action_to_matrix(np.array([500.0, 0.0, 200.0, 180.0, 0.0, 90.0]))


def nominal(now=1.0, pose=START, action=(10.0, 0.0, 0.0, 0.0, 0.0, 0.0), **changes):
    values = dict(
        now_s=now,
        pose_mm=pose,
        pose_stamp_s=now,
        wrench=np.zeros(6),
        wrench_stamp_s=now,
        deadman_held=True,
        deadman_stamp_s=now,
        frame_stamp_s=now,
        guidance=GuidanceSample(stamp_s=now, valid=True, action=np.array(action, float), confidence=0.9),
    )
    values.update(changes)
    return ControlInputs(**values)


def push_along_x(pose, base, v, w):
    return Proposal(np.array([1000.0, 0.0, 0.0]), np.zeros(3))


# ----------------------------------------------------------------------------------------- limits


def test_default_limits_are_valid_and_described():
    limits = SafetyLimits()
    assert limits.period_s == pytest.approx(0.02)
    assert limits.step_speed_mm_s == pytest.approx(20.0)
    names = [name for name, *_ in SafetyLimits.describe_fields()]
    assert 'max_contact_force_n' in names and 'workspace_half_extent_mm' in names
    assert SafetyLimits.from_mapping(limits.to_mapping()) == limits


@pytest.mark.parametrize(
    ('mapping', 'message'),
    [
        ({'max_linear_speed_mm_s': -1.0}, r'limits\.max_linear_speed_mm_s = -1 mm/s is out of range'),
        ({'max_linear_speed_mm_s': 'fast'}, r'limits\.max_linear_speed_mm_s must be a number'),
        ({'max_linear_speed_mm_s': math.nan}, r'limits\.max_linear_speed_mm_s must be finite'),
        ({'max_linear_speed_mm_s': True}, r'limits\.max_linear_speed_mm_s must be a number'),
        ({'max_speed': 1.0}, r"unknown safety limit key\(s\) \['limits\.max_speed'\]"),
        ({'workspace_half_extent_mm': [1.0, 2.0]}, r'limits\.workspace_half_extent_mm must be a list of 3'),
        ({'workspace_half_extent_mm': [1.0, 2.0, 0.0]}, r'limits\.workspace_half_extent_mm\[2\] = 0'),
        ({'require_wrench': 'yes'}, r'limits\.require_wrench must be true or false'),
        ({'pose_max_age_s': 2.0}, r'pose_max_age_s = 2 s exceeds liveness_timeout_s'),
    ],
)
def test_malformed_limits_are_refused_naming_the_key(mapping, message):
    with pytest.raises(LimitsError, match=message):
        SafetyLimits.from_mapping(mapping, source='arm_control.yaml', key_prefix='limits.')


def test_planner_settings_are_checked():
    assert PlannerConfig.from_mapping({'reach_cycles': 3}).reach_cycles == 3
    with pytest.raises(LimitsError, match='planner.reach_cycles must be a whole number'):
        PlannerConfig.from_mapping({'reach_cycles': 2.5}, key_prefix='planner.')
    with pytest.raises(LimitsError, match='filter_alpha'):
        PlannerConfig(filter_alpha=0.0)


# --------------------------------------------------------------------------------------- envelope


def armed_envelope(limits=None):
    envelope = SafetyEnvelope(limits or SafetyLimits())
    envelope.set_start_pose(START)
    return envelope


def test_only_the_envelope_creates_motion_commands():
    with pytest.raises(PermissionError, match='only by SafetyEnvelope'):
        MotionCommand(object(), START, np.zeros(3), np.zeros(3), 0.02, 0.0, 1)
    interface = ArmInterface(KinematicArmBackend(KinematicArm(START), clock=lambda: 0.0), clock=lambda: 0.0)
    with pytest.raises(CommandRefusedError, match='only MotionCommands'):
        interface.execute(START)


@pytest.mark.parametrize(
    ('changes', 'verdict', 'reason'),
    [
        (dict(estop=True), Verdict.STOP, 'estop'),
        (dict(dead_nodes=('/guidance: no publisher',)), Verdict.STOP, 'node_dead'),
        (dict(arm_errors=('reflex',)), Verdict.STOP, 'arm_error'),
        (dict(starting_inputs=('/guidance: no publisher yet',)), Verdict.STOP, 'inputs_starting'),
        (dict(pose_mm=None, pose_stamp_s=None), Verdict.STOP, 'pose_missing'),
        (dict(pose_stamp_s=0.85), Verdict.STOP, 'pose_stale'),
        (dict(pose_stamp_s=1.2), Verdict.STOP, 'pose_from_future'),
        (dict(pose_mm=np.full((4, 4), np.nan)), Verdict.STOP, 'pose_invalid'),
        (dict(wrench=None, wrench_stamp_s=None), Verdict.STOP, 'wrench_missing'),
        (dict(wrench_stamp_s=0.5), Verdict.STOP, 'wrench_stale'),
        (dict(wrench=np.array([np.nan, 0, 0, 0, 0, 0])), Verdict.STOP, 'wrench_invalid'),
        (dict(wrench=np.array([0, 0, 26.0, 0, 0, 0])), Verdict.STOP, 'force_limit'),
        (dict(wrench=np.array([0, 0, 0, 0, 3.5, 0])), Verdict.STOP, 'torque_limit'),
        (dict(pose_mm=START @ action_to_matrix([0, 0, 70.0, 0, 0, 0])), Verdict.STOP, 'outside_workspace'),
        (dict(deadman_held=None, deadman_stamp_s=None), Verdict.STOP, 'deadman_missing'),
        (dict(deadman_stamp_s=0.7), Verdict.STOP, 'deadman_timeout'),
        (dict(deadman_held=False), Verdict.STOP, 'deadman_released'),
        (dict(frame_stamp_s=None), Verdict.HOLD, 'frame_missing'),
        (dict(frame_stamp_s=0.6), Verdict.HOLD, 'frame_stale'),
        (dict(guidance=None), Verdict.HOLD, 'guidance_missing'),
        (dict(guidance=GuidanceSample(0.4, True, np.zeros(6), 0.9)), Verdict.HOLD, 'guidance_stale'),
        (dict(guidance=GuidanceSample(1.5, True, np.zeros(6), 0.9)), Verdict.HOLD, 'guidance_from_future'),
        (
            dict(guidance=GuidanceSample(1.0, False, np.zeros(6), 0.9, status='bad')),
            Verdict.HOLD,
            'guidance_invalid',
        ),
        (dict(guidance=GuidanceSample(1.0, True, np.array([np.nan] * 6), 0.9)), Verdict.HOLD, 'guidance_nan'),
        (dict(guidance=GuidanceSample(1.0, True, np.zeros(6), math.inf)), Verdict.HOLD, 'guidance_nan'),
        (
            dict(guidance=GuidanceSample(1.0, True, np.array([200.0, 0, 0, 0, 0, 0]), 0.9)),
            Verdict.HOLD,
            'guidance_out_of_range',
        ),
        (dict(guidance=GuidanceSample(1.0, True, np.zeros(6), 0.2)), Verdict.HOLD, 'low_confidence'),
    ],
)
def test_each_fault_gives_its_reason(changes, verdict, reason):
    envelope = armed_envelope()
    decision = envelope.decide(nominal(**changes), push_along_x)
    assert (decision.verdict, decision.reason) == (verdict, reason), decision.describe()
    assert decision.command is None
    assert envelope.decide(nominal(), push_along_x).verdict is Verdict.MOVE


def test_clock_going_back_stops():
    envelope = armed_envelope()
    assert envelope.decide(nominal(now=2.0), push_along_x).verdict is Verdict.MOVE
    decision = envelope.decide(nominal(now=1.0), push_along_x)
    assert decision.reason == 'clock_invalid'


def test_speed_ramps_within_the_acceleration_limit_and_stays_below_the_speed_limit():
    limits = SafetyLimits()
    envelope = armed_envelope(limits)
    speeds, now, pose = [], 1.0, START.copy()
    for _ in range(40):
        decision = envelope.decide(nominal(now=now, pose=pose), push_along_x)
        assert decision.verdict is Verdict.MOVE
        speeds.append(np.linalg.norm(decision.command.linear_velocity_mm_s))
        pose = decision.command.target_pose_mm  # an ideal arm
        now += limits.period_s
    steps = np.diff([0.0, *speeds])
    assert np.all(steps <= limits.max_linear_acceleration_mm_s2 * limits.period_s + 1e-9)
    assert max(speeds) == pytest.approx(limits.max_linear_speed_mm_s)


def test_a_step_toward_the_box_edge_is_shortened_and_never_crosses_it():
    limits = SafetyLimits(workspace_half_extent_mm=(2.0, 2.0, 2.0), max_linear_acceleration_mm_s2=5000.0)
    envelope = armed_envelope(limits)
    now, pose = 1.0, START.copy()
    for _ in range(200):
        decision = envelope.decide(nominal(now=now, pose=pose), push_along_x)
        if decision.verdict is Verdict.MOVE:
            pose = decision.command.target_pose_mm
        else:
            assert decision.reason == 'workspace_edge'
        assert np.all(np.abs(pose[:3, 3] - START[:3, 3]) <= 2.0 + 1e-9)
        now += limits.period_s
    assert pose[0, 3] - START[0, 3] > 1.0  # it did move toward the edge


def test_hold_resets_motion_so_the_next_move_starts_from_rest():
    limits = SafetyLimits()
    envelope = armed_envelope(limits)
    envelope.decide(nominal(now=1.0), push_along_x)
    envelope.decide(nominal(now=1.02), push_along_x)
    assert envelope.moving
    assert envelope.decide(nominal(now=1.04, frame_stamp_s=None), push_along_x).verdict is Verdict.HOLD
    assert not envelope.moving
    decision = envelope.decide(nominal(now=1.06), push_along_x)
    assert (
        np.linalg.norm(decision.command.linear_velocity_mm_s) <= limits.max_linear_acceleration_mm_s2 * 0.02
    )


def test_a_failing_planner_stops_instead_of_moving():
    def broken(*args):
        raise RuntimeError('planner bug')

    decision = armed_envelope().decide(nominal(), broken)
    assert (decision.verdict, decision.reason) == (Verdict.STOP, 'internal_error')


# -------------------------------------------------------------------------------- state machine


def decision(verdict, reason='x'):
    return Decision(verdict, reason)


def test_state_machine_needs_a_fresh_press_and_latches_faults():
    sm = ControlStateMachine()
    assert sm.update(decision(Verdict.HOLD), False, False) is ControlState.IDLE  # held from the start
    assert sm.update(decision(Verdict.STOP, 'deadman_released'), True, False) is ControlState.IDLE
    assert sm.update(decision(Verdict.HOLD), False, False) is ControlState.ARMED
    assert sm.update(decision(Verdict.MOVE, 'moving'), False, False) is ControlState.MOVING
    assert sm.update(decision(Verdict.HOLD, 'plane_reached'), False, False) is ControlState.PLANE_REACHED
    assert not sm.motion_enabled
    assert sm.update(decision(Verdict.STOP, 'deadman_released'), True, False) is ControlState.STOPPED
    assert sm.update(decision(Verdict.HOLD), False, False) is ControlState.ARMED
    # A fault latches; a release during the fault does not count.
    assert sm.update(decision(Verdict.STOP, 'pose_stale'), True, False) is ControlState.FAULT
    assert sm.update(decision(Verdict.HOLD), False, False) is ControlState.FAULT
    assert sm.update(decision(Verdict.STOP, 'deadman_released'), True, False) is ControlState.IDLE
    assert sm.update(decision(Verdict.HOLD), False, False) is ControlState.ARMED
    # The e-stop: a release while it is active does not count either.
    assert sm.update(decision(Verdict.STOP, 'estop'), True, True) is ControlState.STOPPED
    assert sm.update(decision(Verdict.HOLD), False, False) is ControlState.STOPPED
    assert sm.update(decision(Verdict.STOP, 'deadman_released'), True, False) is ControlState.IDLE
    assert [t[2].value for t in sm.transitions][:3] == ['armed', 'moving', 'plane_reached']


def test_a_starting_graph_stops_without_a_fault_and_a_press_held_through_it_does_not_arm():
    envelope = armed_envelope()
    starting = envelope.decide(nominal(starting_inputs=('/guidance: no publisher yet',)), push_along_x)
    assert (starting.verdict, starting.reason) == (Verdict.STOP, 'inputs_starting')
    assert not starting.is_fault and starting.command is None
    assert '/guidance: no publisher yet' in starting.detail
    # A dead node outranks it: once heard from, a topic that goes away is a fault at once.
    both = nominal(
        starting_inputs=('/us/frame_info: no publisher yet',), dead_nodes=('/guidance: no publisher',)
    )
    assert envelope.decide(both, push_along_x).reason == 'node_dead'

    sm = ControlStateMachine()
    assert sm.update(starting, True, False) is ControlState.IDLE  # released while starting
    assert sm.update(decision(Verdict.HOLD), False, False) is ControlState.IDLE  # held: does not arm
    assert sm.update(decision(Verdict.STOP, 'deadman_released'), True, False) is ControlState.IDLE
    assert sm.update(decision(Verdict.HOLD), False, False) is ControlState.ARMED  # a fresh press does
    assert not any(t[2] is ControlState.FAULT for t in sm.transitions)


# ------------------------------------------------------------------------ planner and controller


def test_pose_history_interpolates_and_refuses_gaps():
    history = PoseHistory(span_s=1.0, max_gap_s=0.1)
    history.add(0.0, START)
    history.add(0.05, START @ action_to_matrix([2.0, 0, 0, 0, 0, 0]))
    middle = history.at(0.025)
    assert relative_action(START, middle)[0] == pytest.approx(1.0)
    assert history.at(-0.1) is None and history.at(0.5) is None
    history.add(0.5, START)
    assert history.at(0.3) is None  # 0.45 s between samples


def simulate(controller, backend, target, clock, cycles, dt, deadman=lambda k: k > 0):
    for k in range(cycles):
        state = backend.state()
        action = relative_action(state.pose_mm, target)
        report = controller.cycle(
            ControlInputs(
                now_s=clock[0],
                pose_mm=state.pose_mm,
                pose_stamp_s=state.stamp_s,
                wrench=state.wrench,
                wrench_stamp_s=state.wrench_stamp_s,
                deadman_held=deadman(k),
                deadman_stamp_s=clock[0],
                frame_stamp_s=clock[0],
                # A stop judgement that is right: within 3 mm / 3 deg of the target.
                guidance=GuidanceSample(clock[0], True, action, 0.9, plane_distance(action) <= 0.6),
            )
        )
        if report.state is ControlState.PLANE_REACHED:
            return report, k
        backend.advance(dt)
        clock[0] += dt
    return report, cycles


def test_controller_reaches_a_target_and_holds():
    limits = SafetyLimits()
    clock = [0.0]
    backend = KinematicArmBackend(KinematicArm(START), clock=lambda: clock[0])
    controller = ArmController(limits, PlannerConfig(), ArmInterface(backend, clock=lambda: clock[0]))
    target = START @ action_to_matrix([20.0, -10.0, 5.0, 10.0, -15.0, 20.0])
    report, cycles = simulate(controller, backend, target, clock, 1000, limits.period_s)
    assert report.state is ControlState.PLANE_REACHED, report
    error = relative_action(backend.arm.pose_mm, target)
    assert np.linalg.norm(error[:3]) < 2.5 and np.all(np.abs(error[3:]) < 2.5)
    commands = backend.arm.commands
    simulate(controller, backend, target, clock, 20, limits.period_s)  # keeps holding
    assert backend.arm.commands == commands


def test_move_to_stops_when_the_deadman_goes():
    limits = SafetyLimits()
    clock = [0.0]
    backend = KinematicArmBackend(KinematicArm(START), clock=lambda: clock[0])
    interface = ArmInterface(backend, clock=lambda: clock[0])

    def advance(dt):
        backend.advance(dt)
        clock[0] += dt

    goal = START @ action_to_matrix([10.0, 5.0, 0.0, 0.0, 5.0, 0.0])
    result = interface.move_to(goal, limits, enabled=lambda: True, advance=advance)
    assert result.reached, result
    far = START @ action_to_matrix([0.0, 0.0, 100.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match='outside the workspace'):
        interface.move_to(far, limits, enabled=lambda: True, advance=advance)
    enabled = iter([True] * 10 + [False] * 100)
    before = interface.current_pose()
    result = interface.move_to(START, limits, enabled=lambda: next(enabled), advance=advance)
    assert (result.reached, result.reason) == (False, 'deadman_released')
    moved = np.linalg.norm(interface.current_pose()[:3, 3] - before[:3, 3])
    assert 0 < moved < 10 * limits.max_step_translation_mm


def test_interface_refuses_stale_commands_and_commands_to_an_arm_with_errors():
    clock = [1.0]
    arm = KinematicArm(START)
    backend = KinematicArmBackend(arm, clock=lambda: clock[0])
    interface = ArmInterface(backend, clock=lambda: clock[0])
    envelope = armed_envelope()
    command = envelope.decide(nominal(now=1.0), push_along_x).command
    clock[0] = 1.5
    with pytest.raises(CommandRefusedError, match='old'):
        interface.execute(command)
    clock[0] = 1.0
    arm.errors.append('cartesian_reflex')
    with pytest.raises(CommandRefusedError, match='errors'):
        interface.execute(command)
    assert arm.commands == 0 and interface.commands_refused == 2


def test_the_shipped_config_lists_the_defaults():
    """config/arm_control.yaml shows every limit with its default, so the file and the code agree."""
    from echo_guidance.closed_loop.cli import load_controller_config
    from echo_guidance.resources import config_path
    from echo_guidance.up.graph import parameters_in_file

    assert load_controller_config() == (SafetyLimits(), PlannerConfig())
    listed = parameters_in_file(config_path('arm_control.yaml'), 'arm_control')
    for name, *_ in SafetyLimits.describe_fields():
        assert f'limits.{name}' in listed
    for name, *_ in PlannerConfig.describe_fields():
        assert f'planner.{name}' in listed


def test_ros2_control_backend_publishes_flange_targets_and_holds_at_the_measured_pose():
    from echo_guidance.arm.calibration import FlangeToProbeCalibration
    from echo_guidance.arm.command_backends import FrankyCommandBackend, Ros2CartesianBackend

    calibration = FlangeToProbeCalibration.from_config(
        {'translation_mm': [0.0, 0.0, 135.0], 'rpy_deg': [0, 0, 90.0]}
    )
    sent = []
    backend = Ros2CartesianBackend(lambda T, frame: sent.append((T, frame)), calibration, 'flange')
    interface = ArmInterface(backend, clock=lambda: 1.0)
    with pytest.raises(Exception, match='no arm state'):
        interface.current_pose()
    backend.on_pose(1.0, START)
    backend.on_wrench(1.0, [0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    command = armed_envelope().decide(nominal(now=1.0), push_along_x).command
    interface.execute(command)
    target, frame = sent[-1]
    assert frame == 'flange'
    np.testing.assert_allclose(calibration.probe_pose(target), command.target_pose_mm, atol=1e-9)
    interface.hold()
    np.testing.assert_allclose(calibration.probe_pose(sent[-1][0]), START, atol=1e-9)
    with pytest.raises(ValueError, match='only allowed against a simulator on loopback'):
        FrankyCommandBackend('172.16.0.2', calibration, SafetyLimits(), sim_approach=[[0.0, 0, 10, 0, 0, 0]])
