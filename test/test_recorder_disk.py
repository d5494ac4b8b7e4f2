"""A real small filesystem (a 3 MB tmpfs): the guard stops cleanly; without it, ENOSPC loses nothing earlier.

Mounting needs root; without it these tests are skipped (the quota stand-in is tested in
test_recorder_logic.py and test_recorder_node.py).
"""

import shutil
import subprocess

import numpy as np
import pytest

from echo_guidance.arm.calibration import FlangeToProbeCalibration
from echo_guidance.bags import DemonstrationBagReader, repair_bag
from echo_guidance.recording.recorder import DemonstrationRecorder, RecorderConfig, RecorderState

W, H = 640, 480
CALIBRATION = FlangeToProbeCalibration.from_config(
    {'translation_mm': [0.0, 0.0, 135.0], 'rpy_deg': [0, 0, 0]}
)


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / 'small'
    mount_point.mkdir()
    result = subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f'cannot mount a small tmpfs here: {result.stderr.strip()}')
    try:
        yield mount_point
    finally:
        subprocess.run(['umount', '-l', str(mount_point)], check=False)


def record_until_stopped(recorder, max_frames=100):
    """Feed 30 fps frames with 1 kHz poses until the recorder stops taking frames; return frames written."""
    recorder.start(100.0)
    written = 0
    pose = np.eye(4)
    for i in range(max_frames):
        t = 100.0 + i / 30
        for k in range(33):
            stamp = t - 0.033 + k * 0.001 + 0.0015
            pose[0, 3] = stamp
            recorder.on_pose(stamp, int(round(stamp * 1e9)), pose, stamp)
        image = np.full((H, W), i, dtype=np.uint8).tobytes()
        if not recorder.on_image(image, 'mono8', W, H, W, t, int(round(t * 1e9)), t + 0.002):
            break
        written += 1
        recorder.poll(t + 0.003)
    return written


def test_guard_stops_before_a_small_filesystem_fills(small_disk):
    logs = []
    config = RecorderConfig(
        output_dir=str(small_disk), image_width=W, image_height=H, min_free_bytes=1_000_000
    )
    recorder = DemonstrationRecorder(
        config,
        {'target_plane': 'PLAX', 'flange_to_probe': CALIBRATION.matrix_mm},
        log=lambda level, message: logs.append((level, message)),
    )
    written = record_until_stopped(recorder)
    assert recorder.status.state == RecorderState.STOPPED_DISK_FULL
    assert 0 < written < 10
    assert 'below the guard' in recorder.status.message and 'closed and complete' in recorder.status.message
    assert shutil.disk_usage(small_disk).free >= 500_000
    with DemonstrationBagReader(recorder.last_closed_bag) as bag:
        assert bag.state == 'complete'
        assert [int(f[0, 0]) for f in bag.frames().images] == list(range(written))


def test_without_the_guard_a_full_disk_stops_the_recording_and_repair_recovers_every_frame(
    small_disk, tmp_path
):
    logs = []
    config = RecorderConfig(output_dir=str(small_disk), image_width=W, image_height=H, min_free_bytes=0)
    recorder = DemonstrationRecorder(
        config,
        {'target_plane': 'PLAX', 'flange_to_probe': CALIBRATION.matrix_mm},
        log=lambda level, message: logs.append((level, message)),
    )
    written = record_until_stopped(recorder)
    assert recorder.status.state == RecorderState.STOPPED_DISK_FULL
    assert 'disk full' in recorder.status.message and 'echo-guidance bag repair' in recorder.status.message
    assert any(level == 'error' and 'disk full' in message for level, message in logs)
    # Repair a copy on a disk with room: every acknowledged frame is there.
    copy = tmp_path / 'copy'
    shutil.copytree(recorder.status.bag_path, copy)
    repair_bag(copy)
    with DemonstrationBagReader(copy) as bag:
        frames = bag.frames().images
    assert len(frames) == written == recorder.status.frames_recorded > 0
    assert [int(f[0, 0]) for f in frames] == list(range(written))
