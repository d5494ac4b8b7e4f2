"""The demo's arithmetic without ROS: errors against ground truth, timing, path, outcome, plot, steps."""

import json

import numpy as np
import pytest

from echo_guidance.demo.run import state_record
from echo_guidance.demo.summary import (
    StateRecord,
    format_summary,
    plane_reached_held,
    plot_run,
    summarise_run,
)
from echo_guidance.geometry import action_to_matrix, interpolate_pose

TARGET = action_to_matrix(np.array([480.0, -20.0, 210.0, 170.0, 10.0, 95.0]))
# Start: 10 mm along the target's own x axis and 30 degrees about its z axis.
START = TARGET @ action_to_matrix(np.array([10.0, 0.0, 0.0, 0.0, 0.0, 30.0]))


def trajectory(end=TARGET, move=(1.2, 3.2), until=4.0, rate=100.0):
    """Stationary at START, a straight move (linear + SLERP) to ``end`` during ``move``, then still."""
    stamps = np.round(np.arange(0.0, until + 1e-9, 1.0 / rate), 6)
    poses = [
        START if t <= move[0] else end if t >= move[1] else interpolate_pose(t, move[0], START, move[1], end)
        for t in stamps
    ]
    return 1000.0 + stamps, np.array(poses)  # a clock that does not start at zero


def states(reached_at=3.5, until=4.0):
    records = [
        StateRecord(1000.0, 'idle', 'stop', 'deadman_released'),
        StateRecord(1001.05, 'armed', 'hold', 'guidance_missing'),
        StateRecord(1001.1, 'moving', 'move', ''),
    ]
    if reached_at is not None:
        t = reached_at
        while t <= until + 1e-9:
            records.append(StateRecord(1000.0 + t, 'plane_reached', 'hold', 'plane_reached'))
            t += 0.2
    return records


def test_errors_timing_and_path_of_a_known_trajectory():
    stamps, poses = trajectory()
    summary = summarise_run('PLAX', stamps, poses, TARGET, states(), press_stamps_s=[1001.0])
    assert summary.start_error_mm == pytest.approx(10.0, abs=1e-9)
    assert summary.start_error_deg == pytest.approx(30.0, abs=1e-9)
    assert summary.final_error_mm == pytest.approx(0.0, abs=1e-9)
    assert summary.final_error_deg == pytest.approx(0.0, abs=1e-6)
    # A straight line and a rotation about one fixed axis: the path is exactly the start error.
    assert summary.path_mm == pytest.approx(10.0, abs=1e-6)
    assert summary.path_deg == pytest.approx(30.0, abs=1e-6)
    assert summary.press_s == pytest.approx(1.0)
    # Rotation runs at 15 deg/s from 1.2 s: it passes 0.5 deg after 1/30 s, i.e. at sample 1.24 s.
    assert summary.first_motion_s == pytest.approx(1.24, abs=1e-9)
    assert summary.reached_s == pytest.approx(3.5)
    assert summary.press_to_reached_s == pytest.approx(2.5)
    assert summary.motion_to_reached_s == pytest.approx(3.5 - 1.24)
    assert summary.duration_s == pytest.approx(4.0)
    assert summary.reached and summary.within_tolerance and summary.outcome == 'PLANE REACHED'
    assert summary.errors_mm[0] == pytest.approx(10.0)
    assert summary.errors_deg[-1] == pytest.approx(0, abs=1e-6)
    text = '\n'.join(format_summary(summary, [('model', 'm@1'), ('>bags', 'b')]))
    for expected in ('model', 'PLAX', 'PLANE REACHED', '10.0 mm, 30.0 deg', '0.0 mm, 0.0 deg', '2.5 s after'):
        assert expected in text
    assert text.index('model') < text.index('outcome') < text.index('bags')
    json.dumps(summary.as_dict())


def test_the_press_that_counts_is_the_last_before_arming():
    stamps, poses = trajectory()
    summary = summarise_run('PLAX', stamps, poses, TARGET, states(), press_stamps_s=[999.5, 1001.0, 1003.9])
    assert summary.press_s == pytest.approx(1.0)


def test_a_reach_declared_away_from_the_true_plane_is_not_reached():
    off = TARGET @ action_to_matrix(np.array([6.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    stamps, poses = trajectory(end=off)
    summary = summarise_run('PSAX-AV', stamps, poses, TARGET, states(), press_stamps_s=[1001.0])
    assert summary.controller_reached and not summary.within_tolerance and not summary.reached
    assert summary.final_error_mm == pytest.approx(6.0)
    assert summary.outcome == 'NOT REACHED'
    assert 'declared the plane reached' in summary.outcome_line() and '6.0 mm' in summary.outcome_line()


def test_no_reach_and_the_final_state_is_reported():
    stamps, poses = trajectory()
    records = states(reached_at=None) + [StateRecord(1003.9, 'fault', 'stop', 'node_dead', 'guidance silent')]
    summary = summarise_run('PSAX-MV', stamps, poses, TARGET, records, press_stamps_s=[1001.0])
    assert not summary.reached and summary.reached_s is None and summary.press_to_reached_s is None
    line = summary.outcome_line()
    assert line.startswith('NOT REACHED') and 'fault' in line
    assert 'node_dead' in line and 'guidance silent' in line


def test_a_reach_left_again_does_not_count():
    records = states() + [StateRecord(1004.5, 'stopped', 'stop', 'deadman_released')]
    stamps, poses = trajectory(until=5.0)
    summary = summarise_run('PLAX', stamps, poses, TARGET, records, press_stamps_s=[1001.0])
    assert not summary.controller_reached and not summary.reached


def test_plane_reached_must_be_held():
    records = states(reached_at=3.5, until=4.0)
    assert not plane_reached_held(records, 1.0)
    assert plane_reached_held(records, 0.35)
    assert not plane_reached_held(records + [StateRecord(1004.3, 'stopped')], 0.1)
    assert not plane_reached_held([], 0.1)


def test_bad_inputs_are_named():
    stamps, poses = trajectory()
    with pytest.raises(ValueError, match='no controller state'):
        summarise_run('PLAX', stamps, poses, TARGET, [])
    with pytest.raises(ValueError, match='N >= 1'):
        summarise_run('PLAX', [], np.zeros((0, 4, 4)), TARGET, states())
    with pytest.raises(ValueError, match='stamps'):
        summarise_run('PLAX', stamps[:-1], poses, TARGET, states())


def test_state_messages_parse():
    record = state_record(json.dumps({'stamp': 12.5, 'state': 'moving', 'verdict': 'move', 'reason': ''}))
    assert record == StateRecord(12.5, 'moving', 'move', '', '')
    assert state_record('not json') is None and state_record('{"state": "idle"}') is None


def test_the_plot_is_written(tmp_path):
    stamps, poses = trajectory()
    summary = summarise_run('PLAX', stamps, poses, TARGET, states(), press_stamps_s=[1001.0])
    path = plot_run(summary, poses, TARGET, tmp_path / 'run.png', title='test')
    data = path.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and 10_000 < len(data) < 300_000
