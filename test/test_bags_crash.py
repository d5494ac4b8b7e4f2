"""Crash safety: a writer killed with SIGKILL, cut-off files and their repair."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from bags_helpers import T0_NS, frame, frame_index, make_session, pose, write_demo

from echo_guidance.bags import (
    CorruptBagError,
    DemonstrationBagReader,
    DemonstrationBagWriter,
    repair_bag,
    schema,
)
from echo_guidance.bags.check import check_bag

REPO = Path(__file__).resolve().parent.parent

# The child writes pose samples, a frame and its synced pose per step, and after each step
# (everything flushed by the writer) acknowledges the counts on stdout. It does not wait, so the
# kill lands while it is writing; it runs ahead at most until the stdout pipe is full.
CHILD = textwrap.dedent("""
    import sys
    sys.path[:0] = [sys.argv[2], sys.argv[3]]
    from bags_helpers import T0_NS, frame, make_session, pose
    from echo_guidance.bags import DemonstrationBagWriter
    writer = DemonstrationBagWriter(sys.argv[1], make_session(), fsync_interval_s=None)
    poses = 0
    for i in range(100000):
        for _ in range(3):
            writer.write_probe_pose(pose(poses), T0_NS + poses * 1_000_000)
            poses += 1
        stamp = T0_NS + poses * 1_000_000 - 500_000
        writer.write_image(frame(i), stamp)
        writer.write_synced_pose(pose(poses - 1), stamp, True, 0.0005, 0.0005)
        print(f'ACK {i + 1} {poses}', flush=True)
""")


def _mcap_records_in_flight(bag):
    """Return (metadata state, whether the MCAP file ends with the footer magic)."""
    document = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    data = (bag / f'{bag.name}_0.mcap').read_bytes()
    return document['custom_data'][schema.KEY_STATE], data.endswith(b'\x89MCAP0\r\n')


def _decode_all_with_mcap(mcap_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    counts = {}
    with open(mcap_path, 'rb') as stream:
        for _, channel, _, _ in make_reader(
            stream, decoder_factories=[DecoderFactory()]
        ).iter_decoded_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
    return counts


def test_sigkilled_writer_loses_nothing_acknowledged(tmp_path):
    bag = tmp_path / 'killed'
    child = subprocess.Popen(
        [sys.executable, '-c', CHILD, str(bag), str(REPO / 'test'), str(REPO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked_frames = acked_poses = 0
    try:
        for line in child.stdout:
            _, frames, poses = line.split()
            acked_frames, acked_poses = int(frames), int(poses)
            if acked_frames == 40:
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, child.stderr.read()
    assert acked_frames == 40

    state, has_footer = _mcap_records_in_flight(bag)
    assert state == 'in_progress' and not has_footer
    with pytest.raises(CorruptBagError, match='bag repair'):
        DemonstrationBagReader(bag)

    report = repair_bag(bag)
    assert report.action == 'rewritten'
    assert report.message_counts['/us/image'] >= acked_frames
    assert report.message_counts['/arm/probe_pose'] >= acked_poses

    with DemonstrationBagReader(bag) as reader:
        assert reader.state == 'repaired'
        images, stamps = reader.frames()
        indices = [frame_index(image) for image in images]
        assert indices == list(range(len(indices)))  # every frame, in order, none missing
        for i in (0, acked_frames - 1):
            np.testing.assert_array_equal(images[i], frame(i))
        poses, _ = reader.probe_poses()
        np.testing.assert_allclose(poses[acked_poses - 1], pose(acked_poses - 1), atol=1e-9)
        assert reader.session_info()['subject_id'] == 'sim-0003'
    counts = _decode_all_with_mcap(bag / 'killed_0.mcap')
    assert counts['/us/image'] == report.message_counts['/us/image']
    # A frame without its synced pose (killed in between) is reported by check, not hidden.
    result = check_bag(bag)
    assert not [p for p in result.problems if 'synced' not in p], result.problems
    # The original cut-off file is kept.
    backups = list(Path(report.backup_dir).iterdir())
    assert {p.name for p in backups} == {'killed_0.mcap', 'metadata.yaml'}


def _live_bag_copy(tmp_path, frames):
    """Write ``frames`` steps with a writer left open; return a copy of the bag as a crash leaves it."""
    live = tmp_path / 'live'
    writer = DemonstrationBagWriter(live, make_session(), fsync_interval_s=None)
    write_demo(writer, frames)
    crashed = tmp_path / 'crashed'
    shutil.copytree(live, crashed)
    writer.close()
    (crashed / 'live_0.mcap').rename(crashed / 'crashed_0.mcap')
    metadata = (crashed / 'metadata.yaml').read_text().replace('live_0.mcap', 'crashed_0.mcap')
    (crashed / 'metadata.yaml').write_text(metadata)
    return crashed


@pytest.mark.parametrize('cut', [1, 100, 3000])
def test_cut_inside_the_last_record_drops_only_that_record(tmp_path, cut):
    bag = _live_bag_copy(tmp_path, 6)
    mcap = bag / 'crashed_0.mcap'
    original = mcap.read_bytes()
    # The last record is the 6th wrench sample; a cut of 3000 bytes reaches into the 6th frame.
    mcap.write_bytes(original[:-cut])
    report = repair_bag(bag)
    assert report.action == 'rewritten' and report.bytes_discarded > 0
    with DemonstrationBagReader(bag) as reader:
        frames = [frame_index(im) for _, im in reader.iter_frames()]
        assert frames == list(range(6 if cut < 3000 else 5))
        assert reader.message_counts['/arm/wrench'] == 5
        assert reader.message_counts['/arm/probe_pose'] == 24
    assert (Path(report.backup_dir) / 'crashed_0.mcap').read_bytes() == original[:-cut]


def test_zero_filled_tail_after_power_loss_is_discarded(tmp_path):
    bag = _live_bag_copy(tmp_path, 4)
    mcap = bag / 'crashed_0.mcap'
    with open(mcap, 'ab') as stream:
        stream.write(b'\0' * 4096)
    report = repair_bag(bag)
    assert report.bytes_discarded == 4096 and 'opcode 0x00' in report.detail
    with DemonstrationBagReader(bag) as reader:
        assert reader.message_counts['/us/image'] == 4


def test_missing_metadata_yaml_is_rebuilt_from_the_mcap_file(tmp_path):
    bag = _live_bag_copy(tmp_path, 3)
    (bag / 'metadata.yaml').unlink()
    report = repair_bag(bag)
    assert report.message_counts['/us/image'] == 3
    with DemonstrationBagReader(bag) as reader:
        assert reader.session_info()['target_plane'] == 'PSAX-AV'


def test_complete_mcap_with_unfinished_metadata_gets_metadata_only(tmp_path):
    bag = tmp_path / 'b'
    with DemonstrationBagWriter(bag, make_session()) as writer:
        write_demo(writer, 2)
    mcap_before = (bag / 'b_0.mcap').read_bytes()
    text = (
        (bag / 'metadata.yaml')
        .read_text()
        .replace('recording_state: complete', 'recording_state: in_progress')
    )
    (bag / 'metadata.yaml').write_text(text)
    report = repair_bag(bag)
    assert report.action == 'metadata_rebuilt'
    assert (bag / 'b_0.mcap').read_bytes() == mcap_before
    with DemonstrationBagReader(bag) as reader:
        assert reader.message_counts['/us/image'] == 2


def test_repair_is_idempotent(tmp_path):
    bag = _live_bag_copy(tmp_path, 3)
    first = repair_bag(bag)
    files = sorted(p.name for p in bag.rglob('*'))
    content = (bag / 'crashed_0.mcap').read_bytes()
    second = repair_bag(bag)
    assert first.action == 'rewritten' and second.action == 'none' and second.backup_dir is None
    assert sorted(p.name for p in bag.rglob('*')) == files
    assert (bag / 'crashed_0.mcap').read_bytes() == content
    assert second.message_counts == first.message_counts


def test_rosbags_reads_the_repaired_bag(tmp_path):
    from rosbags.highlevel import AnyReader

    bag = _live_bag_copy(tmp_path, 5)
    mcap = bag / 'crashed_0.mcap'
    mcap.write_bytes(mcap.read_bytes()[:-50])
    repair_bag(bag)
    with AnyReader([bag]) as reader:
        topics = [
            c.topic for c, _, raw in reader.messages() if reader.deserialize(raw, c.msgtype) is not None
        ]
    assert topics.count('/us/image') == 5 and topics.count('/arm/wrench') == 4


def test_fsync_settings_still_give_a_readable_bag(tmp_path):
    bag = tmp_path / 'fsync'
    with DemonstrationBagWriter(bag, make_session(), fsync_every_messages=1, fsync_interval_s=0.0) as writer:
        writer.write_image(frame(0), T0_NS)
    with DemonstrationBagReader(bag) as reader:
        assert reader.message_counts['/us/image'] == 1


def test_repair_never_deletes_the_original(tmp_path):
    bag = _live_bag_copy(tmp_path, 2)
    before = (bag / 'crashed_0.mcap').read_bytes()
    report = repair_bag(bag)
    assert (Path(report.backup_dir) / 'crashed_0.mcap').read_bytes() == before
    assert os.path.getsize(bag / 'crashed_0.mcap') > 0


def test_background_fsync_runs_while_writing_and_stops_at_close(tmp_path, monkeypatch):
    import threading
    import time

    from echo_guidance.bags import writer as writer_module

    calls = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        calls.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(writer_module.os, 'fsync', counting_fsync)
    bag = tmp_path / 'bg'
    writer = DemonstrationBagWriter(bag, make_session(), fsync_interval_s=0.01)
    deadline = time.monotonic() + 5.0
    i = 0
    while not any(name.startswith('bag-fsync') for name in calls) and time.monotonic() < deadline:
        writer.write_image(frame(i), T0_NS + i)
        i += 1
        time.sleep(0.002)
    writer.close()
    assert any(name.startswith('bag-fsync') for name in calls)
    assert not [t for t in threading.enumerate() if t.name == 'bag-fsync-bg']
    with DemonstrationBagReader(bag) as reader:
        assert reader.message_counts['/us/image'] == i


class _InterruptibleFile:
    """A binary file whose next write can be cut off after ``cut_after`` bytes by KeyboardInterrupt.

    That is what a signal handler that raises (rclpy's SIGINT handler) does to a large write: the
    bytes before it reach the file, the rest never do, and the MCAP writer has already counted them
    in the data checksum.
    """

    def __init__(self, stream):
        self._stream = stream
        self.cut_after = None

    def write(self, data):
        if self.cut_after is not None and len(data) > self.cut_after:
            self._stream.write(bytes(data)[: self.cut_after])
            self.cut_after = None
            raise KeyboardInterrupt
        return self._stream.write(data)

    def __getattr__(self, name):
        return getattr(self._stream, name)


# Cut 1000 bytes into the next frame's record (3155 bytes): that frame is lost. Cut 5000 bytes into
# the next write larger than that, the summary written by close(): every frame is kept.
@pytest.mark.parametrize(('cut_after', 'frames_kept'), [(1000, 4), (5000, 5)])
def test_a_write_interrupted_midway_leaves_the_bag_unfinished_and_repairable(
    tmp_path, monkeypatch, cut_after, frames_kept
):
    import builtins

    from echo_guidance.bags import writer as writer_module

    files = []

    def interruptible_open(path, mode):
        files.append(_InterruptibleFile(builtins.open(path, mode)))
        return files[-1]

    monkeypatch.setattr(writer_module, 'open', interruptible_open, raising=False)
    bag = tmp_path / 'b'
    with pytest.raises(KeyboardInterrupt):
        with DemonstrationBagWriter(bag, make_session(), fsync_interval_s=None) as writer:
            poses = write_demo(writer, 4)
            (stream,) = files
            stream.cut_after = cut_after
            writer.write_image(frame(4), T0_NS + poses * 1_000_000)
    # Not sealed: a summary written after the cut-off record would give a "complete" bag whose data
    # checksum does not match (found by `bag check`, not by the recorder).
    state, has_footer = _mcap_records_in_flight(bag)
    assert (state, has_footer) == (schema.STATE_IN_PROGRESS, False)
    with pytest.raises(CorruptBagError):
        DemonstrationBagReader(bag).close()
    report = repair_bag(bag)
    assert report.action == 'rewritten'
    with DemonstrationBagReader(bag) as reader:
        assert [frame_index(im) for _, im in reader.iter_frames()] == list(range(frames_kept))
        assert reader.message_counts['/arm/probe_pose'] == 16
    assert check_bag(bag).ok
