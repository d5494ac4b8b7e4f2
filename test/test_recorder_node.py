"""The recorder node with real arm-state, capture and pedal nodes, each its own rclpy process.

Covers a pedal-driven demonstration with frames of the wrong encoding and size injected, a SIGKILL
mid-demonstration followed by repair, the disk guard, and an unplugged pedal.
"""

import os
import signal

import numpy as np
import pytest
from recording_helpers import Watcher, node_args, start_arm, start_capture, start_recorder

from echo_guidance.bags import DemonstrationBagReader, repair_bag
from echo_guidance.sources.test_pattern import decode_pattern_index

TARGET_REACHED, RECORD_START, RECORD_STOP = 1, 2, 3
RECORDING, STOPPED_DISK_FULL = 1, 2


@pytest.fixture
def watcher(rclpy_context):
    w = Watcher(rclpy_context)
    yield w
    w.close()


def start_pipeline(processes, watcher, output_dir, *recorder_params):
    nodes = [
        start_arm(processes),
        start_capture(processes),
        start_recorder(processes, output_dir, 'status_period_s:=0.1', *recorder_params),
    ]
    watcher.spin_until(watcher.recorder_receiving, 40, 'the recorder receiving frames and poses', nodes)
    return nodes


def read_bag(path):
    with DemonstrationBagReader(path) as bag:
        indexes = [decode_pattern_index(image) for _, image in bag.iter_frames()]
        return bag.info(), indexes, bag.synced_poses(), bag.pedal_events()


def test_pedal_demonstration_keeps_going_past_frames_of_the_wrong_encoding_and_size(
    processes, watcher, tmp_path
):
    nodes = start_pipeline(processes, watcher, tmp_path / 'bags')
    watcher.send_pedal(RECORD_START)
    watcher.spin_until(
        lambda: (watcher.last_status() or 0) and watcher.last_status().state == RECORDING,
        10,
        'recording to start',
        nodes,
    )
    watcher.spin_until(lambda: watcher.last_status().frames_recorded >= 10, 10, '10 frames', nodes)
    watcher.send_image(bytes(640 * 480 * 3), 640, 480, encoding='rgb8')
    watcher.spin_until(
        lambda: 'rgb8' in watcher.last_status().message, 5, 'the encoding error in the status', nodes
    )
    watcher.send_image(bytes(320 * 240), 320, 240)
    watcher.spin_until(
        lambda: 'size 320x240, expected 640x480' in watcher.last_status().message,
        5,
        'the size error in the status',
        nodes,
    )
    before = watcher.last_status().frames_recorded
    watcher.spin_until(
        lambda: watcher.last_status().frames_recorded >= before + 10, 10, 'frames after the errors', nodes
    )
    watcher.send_pedal(TARGET_REACHED)
    watcher.spin_for(0.2)
    watcher.send_pedal(RECORD_STOP)
    watcher.spin_until(
        lambda: watcher.last_status().state == 0 and 'saved' in watcher.last_status().message,
        10,
        'the bag to be closed',
        nodes,
    )
    status = watcher.last_status()
    info, indexes, synced, pedals = read_bag(status.bag_path)
    assert info['state'] == 'complete'
    assert len(indexes) == status.frames_recorded >= 20
    assert indexes == list(range(indexes[0], indexes[0] + len(indexes))), 'frames lost around the bad ones'
    assert len(synced.valid) == len(indexes)
    # Every frame has its pose, unless the scripted arm, starved of CPU on a loaded machine, skipped
    # samples (its diagnostics say so): frames in that gap are flagged, never paired with stale poses.
    skipped = watcher.diagnostic_values('arm').get('backend_samples_skipped', '0')
    assert synced.valid.all() or skipped != '0', f'frames flagged without the arm skipping: {synced}'
    assert [p['name'] for p in pedals] == ['RECORD_START', 'TARGET_REACHED', 'RECORD_STOP']
    assert 'rejected' in processes.started[-1].output() and 'rgb8' in processes.started[-1].output()
    # Diagnostics come once a second: wait for one sent after the second rejection.
    watcher.spin_until(
        lambda: watcher.diagnostic_values('recorder').get('frames_rejected') == '2',
        5,
        'diagnostics counting both rejected frames',
        nodes,
    )


def test_repaired_bag_holds_every_frame_acknowledged_before_sigkill(processes, watcher, tmp_path):
    nodes = start_pipeline(processes, watcher, tmp_path / 'bags')
    bag_path = watcher.call(watcher.start_client).message
    watcher.spin_until(
        lambda: watcher.statuses and watcher.last_status().frames_recorded >= 15,
        15,
        '15 acknowledged frames',
        nodes,
    )
    # Acknowledged = counted in a published RecorderStatus (the writer flushed those frames).
    acknowledged = max(s.frames_recorded for s in watcher.statuses if s.bag_path == bag_path)
    recorder = nodes[-1]
    os.kill(recorder.popen.pid, signal.SIGKILL)
    recorder.popen.wait(10)
    report = repair_bag(bag_path)
    assert report.action in ('rewritten', 'metadata_rebuilt')
    info, indexes, synced, _ = read_bag(bag_path)
    assert info['state'] == 'repaired'
    assert len(indexes) >= acknowledged
    assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))
    # Synced poses are written when the pose after a frame arrives, so the newest frames may lack
    # one at the kill: repair gives those one with valid = false (counted in the report). Those that
    # reached the disk belong to recorded frames and are valid.
    with DemonstrationBagReader(bag_path) as bag:
        frame_stamps = set(int(s) for s in bag.frames().stamps_ns)
    assert set(int(s) for s in synced.stamps_ns) == frame_stamps
    assert int((~synced.valid).sum()) == report.synced_poses_added


def test_disk_guard_stops_the_node_cleanly_with_a_clear_message(processes, watcher, tmp_path):
    # A 4 MB budget for the bags with a 2.5 MB guard: a few 300 kB frames fit, then it must stop.
    nodes = start_pipeline(
        processes, watcher, tmp_path / 'bags', 'disk_quota_bytes:=4000000', 'min_free_bytes:=2500000'
    )
    bag_path = watcher.call(watcher.start_client).message
    watcher.spin_until(lambda: watcher.last_status().state == STOPPED_DISK_FULL, 15, 'the disk guard', nodes)
    status = watcher.last_status()
    assert 'below the guard' in status.message and 'min_free_bytes' in status.message
    assert 'closed and complete' in status.message
    info, indexes, synced, _ = read_bag(bag_path)
    assert info['state'] == 'complete' and 0 < len(indexes) == status.frames_recorded
    assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))
    refused = watcher.call(watcher.start_client)
    assert not refused.success and 'cannot start recording: only' in refused.message
    assert nodes[-1].popen.poll() is None, 'the recorder must keep running'


def test_unplugged_pedal_is_reported_and_the_recording_continues(processes, watcher, tmp_path):
    from echo_guidance.pedal.device_sim import PtyPedalDevice

    with PtyPedalDevice(heartbeat_hz=20.0) as device:
        pedal = processes.start(node_args('pedal', f'port:={device.port}'), name='pedal')
        nodes = start_pipeline(processes, watcher, tmp_path / 'bags') + [pedal]
        watcher.spin_until(lambda: watcher.diagnostic_values('pedal'), 20, 'pedal diagnostics', nodes)
        device.rec_start()
        watcher.spin_until(
            lambda: watcher.last_status() and watcher.last_status().state == RECORDING,
            30,  # under a full CI load the first press can take > 10 s to arrive
            'the pedal starting a recording',
            nodes,
        )
        watcher.spin_until(lambda: watcher.last_status().frames_recorded >= 5, 10, 'frames', nodes)
        device.unplug()
        watcher.spin_until(
            lambda: 'pedal fault' in watcher.last_status().message,
            10,
            'the pedal fault in the recorder status',
            nodes,
        )
        at_fault = watcher.last_status().frames_recorded
        watcher.spin_until(
            lambda: watcher.last_status().frames_recorded >= at_fault + 5,
            10,
            'frames after the unplug',
            nodes,
        )
        assert watcher.last_status().state == RECORDING
        stopped = watcher.call(watcher.stop_client)
        assert stopped.success
    watcher.spin_until(lambda: watcher.last_status().state == 0, 10, 'the bag to be closed', nodes)
    info, indexes, synced, pedals = read_bag(stopped.message)
    assert info['state'] == 'complete' and len(indexes) >= at_fault + 5
    assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))
    names = [p['name'] for p in pedals]
    assert names[0] == 'RECORD_START' and 'DEVICE_FAULT' in names
    assert np.all(synced.valid)
