"""The recorder as plain Python, with the real bag writer, reader and pose buffer (no ROS).

Covers: a whole demonstration read back against the analytic trajectory; frames waiting for a
later pose; stale and missing poses flagged, never paired; wrong encoding and size refused with
earlier data intact; the disk guard (quota stand-in) stopping cleanly; an unplugged pedal.
"""

import numpy as np
import pytest

from echo_guidance.arm.calibration import FlangeToProbeCalibration
from echo_guidance.arm.trajectory import SinusoidTrajectory
from echo_guidance.bags import DemonstrationBagReader
from echo_guidance.recording.recorder import (
    DEVICE_FAULT,
    RECORD_START,
    RECORD_STOP,
    TARGET_REACHED,
    DemonstrationRecorder,
    RecorderConfig,
    RecorderError,
    RecorderState,
)

W, H = 64, 48
CALIBRATION = FlangeToProbeCalibration.from_config(
    {'translation_mm': [0.0, 0.0, 120.0], 'rpy_deg': [0, 0, 90]}
)
TRAJECTORY = SinusoidTrajectory(epoch_s=1000.0)
T0 = 1000.0


def make_recorder(tmp_path, log=None, **overrides):
    settings = {'min_free_bytes': 0, 'fsync_interval_s': 1.0, **overrides}
    config = RecorderConfig(output_dir=str(tmp_path / 'bags'), image_width=W, image_height=H, **settings)
    session = {
        'operator_id': 'op1',
        'subject_id': 'S-007',
        'target_plane': 'PLAX',
        'probe_model': 'sim',
        'flange_to_probe': CALIBRATION.matrix_mm,
        'software_version': 'test',
    }
    return DemonstrationRecorder(config, session, log=log)


def image(index, width=W, height=H):
    frame = np.full((height, width), index % 256, dtype=np.uint8)
    return frame.tobytes()


def feed_poses(recorder, start_s, end_s, rate_hz=1000.0, skip=None):
    """Feed trajectory samples on the grid in [start_s, end_s); ``skip(t)`` drops some."""
    k0, k1 = int(round(start_s * rate_hz)), int(round(end_s * rate_hz))
    for k in range(k0, k1):
        t = k / rate_hz
        if skip is not None and skip(t):
            continue
        recorder.on_pose(t, int(round(t * 1e9)), TRAJECTORY.probe_pose(t, CALIBRATION), now_s=t + 0.0005)


def feed_frame(recorder, t, index, **kwargs):
    width, height = kwargs.pop('width', W), kwargs.pop('height', H)
    encoding = kwargs.pop('encoding', 'mono8')
    data = kwargs.pop('data', image(index, width, height))
    return recorder.on_image(data, encoding, width, height, width, t, int(round(t * 1e9)), now_s=t + 0.003)


def read(path):
    with DemonstrationBagReader(path) as bag:
        return bag.info(), bag.frames(), bag.synced_poses(), bag.probe_poses(), bag.pedal_events()


def test_a_demonstration_round_trips_with_exact_synchronised_poses(tmp_path):
    logs = []
    recorder = make_recorder(tmp_path, log=lambda level, message: logs.append((level, message)))
    feed_poses(recorder, T0, T0 + 0.1)  # poses before the start fill the buffer only
    recorder.on_pedal_event(RECORD_START, T0 + 0.1, int((T0 + 0.1) * 1e9), source='pedal0', now_s=T0 + 0.1)
    assert recorder.status.state == RecorderState.RECORDING
    frame_times = [T0 + 0.1 + 0.0123 + i / 30 for i in range(30)]
    t = T0 + 0.1
    for i, frame_time in enumerate(frame_times):
        feed_poses(recorder, t, frame_time + 0.0004)  # the frame arrives when a pose after it exists
        t = round((frame_time + 0.0004) * 1000) / 1000
        assert feed_frame(recorder, frame_time, i)
    feed_poses(recorder, t, T0 + 1.2)
    recorder.on_pedal_event(TARGET_REACHED, T0 + 1.2, int((T0 + 1.2) * 1e9), now_s=T0 + 1.2)
    recorder.on_pedal_event(RECORD_STOP, T0 + 1.25, int((T0 + 1.25) * 1e9), now_s=T0 + 1.25)
    recorder.poll(T0 + 1.3)
    assert recorder.status.state == RecorderState.IDLE and not recorder.recording
    info, frames, synced, poses, pedals = read(recorder.last_closed_bag)
    assert info['state'] == 'complete'
    assert info['session']['target_plane'] == 'PLAX' and info['session']['subject_id'] == 'S-007'
    np.testing.assert_allclose(info['session']['flange_to_probe'], CALIBRATION.matrix_mm, atol=1e-6)
    assert len(frames.images) == 30 and [int(f[0, 0]) for f in frames.images] == list(range(30))
    np.testing.assert_array_equal(synced.stamps_ns, frames.stamps_ns)
    assert synced.valid.all()
    for pose, stamp in zip(synced.poses_mm, synced.stamps_ns):
        truth = TRAJECTORY.probe_pose(stamp * 1e-9, CALIBRATION)
        assert np.linalg.norm(pose[:3, 3] - truth[:3, 3]) < 1e-3
    assert len(poses.stamps_ns) == recorder.status.poses_recorded == 1100
    assert [p['name'] for p in pedals] == ['RECORD_START', 'TARGET_REACHED', 'RECORD_STOP']
    assert recorder.status.frames_recorded == 30 and recorder.status.frames_unsynced == 0
    assert any('saved' in message for _, message in logs)


def test_frame_newer_than_the_newest_pose_waits_for_the_next_pose(tmp_path):
    recorder = make_recorder(tmp_path)
    feed_poses(recorder, T0, T0 + 0.01)
    recorder.start(T0 + 0.01)
    frame_time = T0 + 0.0105  # newest pose is T0 + 0.009
    assert feed_frame(recorder, frame_time, 0)
    assert recorder.poll(T0 + 0.012).frames_pending == 1
    feed_poses(recorder, T0 + 0.01, T0 + 0.012)
    assert recorder.poll(T0 + 0.013).frames_pending == 0
    recorder.stop(T0 + 0.02)
    _, _, synced, _, _ = read(recorder.last_closed_bag)
    assert synced.valid.tolist() == [True]
    truth = TRAJECTORY.probe_pose(frame_time, CALIBRATION)
    assert np.linalg.norm(synced.poses_mm[0][:3, 3] - truth[:3, 3]) < 1e-3


def test_stale_and_missing_poses_flag_the_frame_and_never_pair_it(tmp_path):
    recorder = make_recorder(tmp_path, sync_tolerance_s=0.005, max_pending_s=0.05)
    recorder.start(T0)
    # Poses stop 100 ms before the frame and resume 100 ms after it: stale on both sides.
    feed_poses(recorder, T0, T0 + 0.2)
    stale_frame = T0 + 0.3
    assert feed_frame(recorder, stale_frame, 1)
    feed_poses(recorder, T0 + 0.4, T0 + 0.41)
    # A frame after which no pose ever comes (the arm stopped): flagged after max_pending_s.
    lonely_frame = T0 + 0.5
    assert feed_frame(recorder, lonely_frame, 2)
    assert recorder.poll(lonely_frame + 0.01).frames_pending == 1
    recorder.poll(lonely_frame + 0.1)
    assert recorder.status.frames_pending == 0 and recorder.status.frames_unsynced == 2
    # And a good frame still gets its pose afterwards.
    feed_poses(recorder, T0 + 0.6, T0 + 0.62)
    assert feed_frame(recorder, T0 + 0.61, 3)
    recorder.stop(T0 + 0.7)
    recorder.poll(T0 + 0.8)
    _, frames, synced, _, _ = read(recorder.last_closed_bag)
    assert len(frames.images) == 3
    assert synced.valid.tolist() == [False, False, True]
    assert np.isnan(synced.poses_mm[0]).all() and np.isnan(synced.poses_mm[1]).all()
    assert synced.gap_before_s[0] == pytest.approx(0.101, abs=1e-6)


def test_wrong_encoding_or_size_is_refused_and_earlier_frames_stay(tmp_path):
    logs = []
    recorder = make_recorder(tmp_path, log=lambda level, message: logs.append((level, message)))
    recorder.start(T0)
    feed_poses(recorder, T0, T0 + 0.3)
    assert feed_frame(recorder, T0 + 0.05, 0)
    assert not feed_frame(recorder, T0 + 0.1, 1, encoding='rgb8', data=bytes(W * H * 3))
    assert 'encoding' in recorder.status.message and "'rgb8'" in recorder.status.message
    assert not feed_frame(recorder, T0 + 0.15, 2, width=W * 2)
    assert f'size {2 * W}x{H}, expected {W}x{H}' in recorder.status.message
    assert not feed_frame(recorder, T0 + 0.17, 3, data=bytes(10))
    assert 'buffer holds 10 bytes' in recorder.status.message
    assert feed_frame(recorder, T0 + 0.2, 4)
    recorder.stop(T0 + 0.3)
    assert recorder.status.frames_rejected == 3 and recorder.status.frames_recorded == 2
    assert sum(level == 'error' for level, _ in logs) == 3
    _, frames, synced, _, _ = read(recorder.last_closed_bag)
    assert [int(f[0, 0]) for f in frames.images] == [0, 4] and synced.valid.all()


def test_disk_guard_stops_cleanly_before_the_quota_is_used_up(tmp_path):
    logs = []
    # A 200 kB budget with a 150 kB guard: room for a few 3 kB frames and the 1 kHz poses.
    recorder = make_recorder(
        tmp_path,
        log=lambda level, message: logs.append((level, message)),
        disk_quota_bytes=200_000,
        min_free_bytes=150_000,
    )
    recorder.start(T0)
    written = 0
    for i in range(200):
        t = T0 + i / 30
        feed_poses(recorder, t - 1 / 30 if i else T0, t + 0.001)
        if not feed_frame(recorder, t, i):
            break
        written += 1
    assert recorder.status.state == RecorderState.STOPPED_DISK_FULL
    assert 0 < written < 200
    message = recorder.status.message
    assert 'below the guard' in message and 'min_free_bytes' in message and 'closed and complete' in message
    info, frames, synced, _, _ = read(recorder.last_closed_bag or recorder.status.bag_path)
    assert info['state'] == 'complete'
    assert [int(f[0, 0]) for f in frames.images] == list(range(written))
    assert len(synced.valid) == written
    with pytest.raises(RecorderError, match='cannot start recording: only'):
        recorder.start(T0 + 100)


def test_unplugged_pedal_is_reported_and_recording_continues(tmp_path):
    recorder = make_recorder(tmp_path)
    recorder.on_pedal_event(RECORD_START, T0, int(T0 * 1e9), source='/dev/ttyUSB0', now_s=T0)
    feed_poses(recorder, T0, T0 + 0.3)
    assert feed_frame(recorder, T0 + 0.05, 0)
    recorder.on_pedal_event(
        DEVICE_FAULT,
        T0 + 0.1,
        int((T0 + 0.1) * 1e9),
        source='/dev/ttyUSB0',
        detail='unplugged',
        now_s=T0 + 0.1,
    )
    assert recorder.status.state == RecorderState.RECORDING
    assert 'unplugged' in recorder.status.pedal_fault
    assert feed_frame(recorder, T0 + 0.15, 1)
    path = recorder.stop(T0 + 0.3, 'stop service')
    _, frames, _, _, pedals = read(path)
    assert len(frames.images) == 2
    assert [p['name'] for p in pedals] == ['RECORD_START', 'DEVICE_FAULT']
    assert pedals[1]['detail'] == 'unplugged'


def test_bad_requests_are_refused_with_reasons(tmp_path):
    recorder = make_recorder(tmp_path)
    with pytest.raises(RecorderError, match='unknown target plane'):
        recorder.start(T0, target_plane='A2C')
    recorder.start(T0)
    with pytest.raises(RecorderError, match='already recording'):
        recorder.start(T0 + 1)
    with pytest.raises(ValueError, match='image_encoding must be mono8'):
        RecorderConfig(image_encoding='rgb8')
    with pytest.raises(ValueError, match='pose_buffer_s'):
        RecorderConfig(pose_buffer_s=0.1, max_pending_s=0.5)
