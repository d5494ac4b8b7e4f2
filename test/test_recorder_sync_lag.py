"""The recorder when it processes its queue late: frames wait for poses in arrival time, not processing time.

A recorder on a loaded machine can handle a pose seconds after the middleware received it (issue 17:
"pose lag 3.1 s, 25 of 743 frames unsynced" with franky-sim). These tests drive the plain-Python
recorder with explicit arrival times (``received_s``) and processing times (``now_s``) and read the
bags back with the independent ``rosbags`` reader.
"""

import pathlib

import numpy as np
import pytest

from echo_guidance.arm.trajectory import action_matrix
from echo_guidance.nodes.recorder import arrival_s, publication_sequence
from echo_guidance.recording.recorder import (
    DemonstrationRecorder,
    RecorderConfig,
    RecorderState,
    SequenceGapCounter,
)
from echo_guidance.sync import PoseBuffer, PoseSampleError

W, H = 32, 24
T0 = 2000.0
RATE = 370.0  # franky-sim's rate on the loaded 2-core machine


def pose_at(t):
    return action_matrix([500 + 10 * np.sin(t), 5 * np.cos(t), 150, 0, 10 * np.sin(t), 0])


def make_recorder(tmp_path, **settings):
    config = RecorderConfig(
        output_dir=str(tmp_path / 'bags'),
        image_width=W,
        image_height=H,
        min_free_bytes=0,
        fsync_interval_s=1.0,
        sync_tolerance_s=0.02,
        max_pending_s=3.0,
        **settings,
    )
    session = {'subject_id': 'S-1', 'target_plane': 'PLAX', 'flange_to_probe': np.eye(4)}
    return DemonstrationRecorder(config, session)


def frame(recorder, t, now_s, received_s):
    data = np.full((H, W), int(t * 30) % 256, np.uint8).tobytes()
    return recorder.on_image(data, 'mono8', W, H, W, t, int(round(t * 1e9)), now_s, received_s=received_s)


def run_lagging(recorder, seconds, lag_of, pose_stamps=None):
    """Poses at RATE and frames at 30 Hz arrive on time; the recorder handles each ``lag_of(t)`` s late.

    Returns (frame stamps, largest backlog seen). Messages are handled in arrival order, each at
    arrival + lag (``lag_of`` must keep that order: its slope stays above -1).
    """
    pose_stamps = pose_stamps if pose_stamps is not None else T0 + np.arange(0, seconds, 1 / RATE)
    frames = T0 + 0.01 + np.arange(0, seconds - 0.05, 1 / 30)
    events = [(t, 'pose') for t in pose_stamps] + [(t, 'frame') for t in frames]
    backlog = 0.0
    for t, kind in sorted(events):
        now = t + lag_of(t)
        if kind == 'pose':
            recorder.on_pose(t, int(round(t * 1e9)), pose_at(t), now, received_s=t)
            backlog = max(backlog, recorder.pose_backlog_s(now))
        else:
            frame(recorder, t, now, received_s=t)
        recorder.poll(now)
    return frames, backlog


def synced(bag):
    """The valid flags of the bag's synced poses, read with the independent rosbags reader."""
    from rosbags.highlevel import AnyReader

    with AnyReader([pathlib.Path(bag)]) as reader:
        connections = [c for c in reader.connections if c.topic == '/recorder/synced_pose']
        messages = reader.messages(connections)
        return np.array([reader.deserialize(raw, c.msgtype).valid for c, _, raw in messages])


def test_frames_keep_their_poses_when_the_recorder_is_seconds_behind(tmp_path):
    recorder = make_recorder(tmp_path)
    recorder.start(T0 - 0.1)
    # The backlog grows to 5 s (more than max_pending_s = 3 s) and is then worked off.
    lag = lambda t: min(t - T0, 5.0) if t < T0 + 6 else max(0.0, 5.0 - 0.5 * (t - T0 - 6))  # noqa: E731
    frames, backlog = run_lagging(recorder, 12.0, lag)
    assert backlog == pytest.approx(5.0, abs=0.01)
    recorder.stop(T0 + 14.0)
    recorder.poll(T0 + 14.5)
    assert recorder.status.state == RecorderState.IDLE
    valid = synced(recorder.last_closed_bag)
    assert len(valid) == len(frames) and valid.all()
    assert recorder.status.frames_unsynced == 0


def test_the_old_rule_would_have_flagged_them(tmp_path):
    """Without arrival times (received_s = now_s) the same lag flags frames: the test above can fail."""
    recorder = make_recorder(tmp_path)
    recorder.start(T0 - 0.1)
    pose_stamps = T0 + np.arange(0, 8.0, 1 / RATE)
    frames = T0 + 0.01 + np.arange(0, 7.9, 1 / 30)
    lag = lambda t: min(t - T0, 5.0)  # noqa: E731
    # Poses are handled late (processing time), frames at once: they wait longer than 3 s.
    events = [(t + lag(t), t, 'pose') for t in pose_stamps] + [(t, t, 'frame') for t in frames]
    for now, t, kind in sorted(events):
        if kind == 'pose':
            recorder.on_pose(t, int(round(t * 1e9)), pose_at(t), now)
        else:
            frame(recorder, t, now, received_s=None)
        recorder.poll(now)
    recorder.stop(T0 + 14)
    recorder.poll(T0 + 20)
    assert recorder.status.frames_unsynced > 0


def test_a_frame_is_given_up_when_poses_that_arrived_later_bring_none_after_it(tmp_path):
    """Pose stamps stuck 10 s in the past (a wrong clock): poses keep arriving, never after the frame."""
    recorder = make_recorder(tmp_path)
    recorder.start(T0)
    for k in range(int(5 * RATE)):
        arrival = T0 + k / RATE
        t = arrival - 10.0
        recorder.on_pose(t, int(round(t * 1e9)), pose_at(t), arrival, received_s=arrival)
        if k == 10:
            frame(recorder, arrival, arrival, received_s=arrival)
        recorder.poll(arrival)
        if k == int(2.9 * RATE):
            assert recorder.status.frames_pending == 1
    assert recorder.status.frames_pending == 0 and recorder.status.frames_unsynced == 1
    recorder.stop(T0 + 5.1)
    assert synced(recorder.last_closed_bag).tolist() == [False]


def test_a_frame_is_given_up_when_no_pose_arrives_any_more(tmp_path):
    recorder = make_recorder(tmp_path)
    recorder.start(T0)
    for k in range(20):
        t = T0 + k / RATE
        recorder.on_pose(t, int(round(t * 1e9)), pose_at(t), t, received_s=t)
    frame(recorder, T0 + 0.1, T0 + 0.1, received_s=T0 + 0.1)
    recorder.stop(T0 + 0.2)
    recorder.poll(T0 + 3.0)
    assert recorder.recording and recorder.status.frames_pending == 1  # still waiting, < 3 s
    recorder.poll(T0 + 3.2)
    assert not recorder.recording and recorder.status.state == RecorderState.IDLE
    assert synced(recorder.last_closed_bag).tolist() == [False]


def test_stop_waits_for_the_late_poses_of_the_last_frames(tmp_path):
    recorder = make_recorder(tmp_path)
    recorder.start(T0 - 0.1)
    lag = 4.0
    pose_stamps = T0 + np.arange(0, 3.0, 1 / RATE)
    frames = T0 + 0.01 + np.arange(0, 2.9, 1 / 30)
    stop_at = T0 + 3.0
    events = [(t + lag, t, 'pose') for t in pose_stamps] + [(t + lag, t, 'frame') for t in frames]
    events.append((stop_at, stop_at, 'stop'))
    for now, t, kind in sorted(events):
        if kind == 'pose':
            recorder.on_pose(t, int(round(t * 1e9)), pose_at(t), now, received_s=t)
        elif kind == 'frame':
            frame(recorder, t, now, received_s=t)
        else:
            recorder.stop(now)
        recorder.poll(now)
    assert not recorder.recording
    valid = synced(recorder.last_closed_bag)
    # Frames handled after the stop request are not taken (the documented stop rule), but every
    # frame taken gets its pose, though the poses came 4 s late.
    assert len(valid) == recorder.status.frames_recorded and valid.all()


def test_lost_poses_are_counted_per_publisher():
    counter = SequenceGapCounter()
    assert [counter.on_sample(b'a', n) for n in (1, 2, 3, 7, 8)] == [0, 0, 0, 3, 0]
    assert counter.on_sample(b'b', 100) == 0 and counter.on_sample(b'b', 102) == 1
    assert counter.on_sample(b'a', 1) == 0  # a restarted publisher starts afresh
    assert counter.on_sample(b'a', None) == 0
    assert counter.lost == 4


def test_message_info_gives_the_arrival_time_and_sequence():
    info = {
        'received_timestamp': 1_000_000_000_000,
        'publication_sequence_number': 42,
        'publisher_gid': {'data': b'\x01\x02'},
    }
    assert arrival_s(info, now_s=50.0, wall_ns=1_000_250_000_000) == pytest.approx(49.75)
    assert arrival_s(None, now_s=50.0) == 50.0
    assert arrival_s({'received_timestamp': 0}, now_s=50.0) == 50.0
    assert publication_sequence(info) == (b'\x01\x02', 42)
    assert publication_sequence({'publication_sequence_number': None}) is None


def test_checked_poses_skip_only_the_rigidity_check():
    checked, unchecked = PoseBuffer(1.0, 0.01), PoseBuffer(1.0, 0.01)
    for k in range(10):
        t = T0 + k * 0.003
        checked.add(t, pose_at(t), checked=True)
        unchecked.add(t, pose_at(t))
    a, b = checked.pose_at(T0 + 0.0125), unchecked.pose_at(T0 + 0.0125)
    assert a.valid and b.valid
    np.testing.assert_array_equal(a.T_mm, b.T_mm)
    with pytest.raises(PoseSampleError, match='not newer'):
        checked.add(T0, pose_at(T0), checked=True)
    with pytest.raises(PoseSampleError, match='not rigid|rotation'):
        unchecked.add(T0 + 1, np.diag([2.0, 1.0, 1.0, 1.0]))


# --- the node ----------------------------------------------------------------------------------------


def test_recorder_node_takes_arrival_times_and_sequence_numbers_from_dds(processes, rclpy_context, tmp_path):
    """The node's pose and image callbacks get rclpy's MessageInfo (a default argument would lose it)."""
    from recording_helpers import Watcher, start_arm, start_capture, start_recorder

    watcher = Watcher(rclpy_context)
    try:
        nodes = [
            start_arm(processes),
            start_capture(processes),
            start_recorder(processes, tmp_path / 'bags', 'status_period_s:=0.1'),
        ]
        watcher.spin_until(watcher.recorder_receiving, 40, 'the recorder receiving frames and poses', nodes)
        watcher.call(watcher.start_client)
        watcher.spin_for(3.0)
        watcher.call(watcher.stop_client)
        saved = lambda: 'saved' in watcher.last_status().message  # noqa: E731
        watcher.spin_until(saved, 15, 'the bag to be closed', nodes)
        watcher.spin_for(1.2)  # one more diagnostics period
        values = watcher.diagnostic_values('recorder')
        arm = watcher.diagnostic_values('arm')
    finally:
        watcher.close()
    # Every pose of the 1 kHz arm arrived (publication numbers without a gap), each with its arrival time.
    assert values['poses_lost'] == '0', values
    assert values['pose_backlog_ms'] != 'none' and float(values['pose_backlog_ms']) < 1000.0
    status = watcher.last_status()
    rows = synced(status.bag_path)
    assert len(rows) == status.frames_recorded >= 60
    if arm.get('backend_samples_skipped') == '0':  # the arm itself was not starved into skipping samples
        assert rows.all()
