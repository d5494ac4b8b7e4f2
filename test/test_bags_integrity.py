"""Checksums, one verdict per tool for damaged bags, resynchronising repair, consistent repaired bags."""

import shutil
import struct

import numpy as np
import pytest
import yaml
from bags_helpers import T0_NS, frame, frame_index, make_session, pose, write_demo

from echo_guidance.bags import (
    CorruptBagError,
    DemonstrationBagReader,
    DemonstrationBagWriter,
    _mcap,
    repair_bag,
    schema,
)
from echo_guidance.bags.check import check_bag
from echo_guidance.cli import main


def _bag(tmp_path, frames=6, name='bag'):
    path = tmp_path / name
    with DemonstrationBagWriter(path, make_session(), fsync_interval_s=None) as writer:
        write_demo(writer, frames)
    return path


def _mcap_file(bag):
    return next(bag.glob('*.mcap'))


def _records(mcap):
    data = mcap.read_bytes()
    return data, list(_mcap.walk(data, len(data)))


def test_written_bags_carry_checksums_that_the_mcap_library_validates(tmp_path):
    from mcap.stream_reader import CRCValidationError, StreamReader

    mcap = _mcap_file(_bag(tmp_path))
    data, records = _records(mcap)
    data_end = next(r for r in records if r.opcode == _mcap.OP_DATA_END)
    footer = next(r for r in records if r.opcode == _mcap.OP_FOOTER)
    assert data_end.body.data_section_crc != 0 and footer.body.summary_crc != 0
    with open(mcap, 'rb') as stream:
        assert sum(1 for _ in StreamReader(stream, validate_crcs=True).records) == len(records)
    damaged = bytearray(data)
    damaged[data_end.offset // 2] ^= 0x10
    mcap.write_bytes(damaged)
    with open(mcap, 'rb') as stream, pytest.raises(CRCValidationError):
        list(StreamReader(stream, validate_crcs=True).records)


def test_info_and_check_never_call_a_changed_file_intact(tmp_path, capsys):
    bag = _bag(tmp_path, frames=3)
    mcap = _mcap_file(bag)
    original = mcap.read_bytes()
    # Every 251st byte, plus both magics, the DataEnd record and the footer: all are verified.
    ends = set(range(8)) | set(range(len(original) - 50, len(original)))
    positions = sorted(set(range(0, len(original), 251)) | ends)
    for position in positions:
        damaged = bytearray(original)
        damaged[position] ^= 0x04
        mcap.write_bytes(damaged)
        assert main(['bag', 'info', str(bag)]) == 3, position
        assert main(['bag', 'check', str(bag)]) == 3, position
        out = capsys.readouterr()
        assert 'DAMAGED' in out.err and f'echo-guidance bag repair {bag}' in out.err
        assert 'DAMAGED at byte' in out.out and 'PROBLEM: CorruptBagError' in out.out
    mcap.write_bytes(original)
    assert main(['bag', 'info', str(bag)]) == 0
    assert 'integrity:      data and summary checksums verified' in capsys.readouterr().out


def test_repair_resynchronises_past_damage_and_keeps_the_second_half(tmp_path):
    bag = _bag(tmp_path, frames=60)
    mcap = _mcap_file(bag)
    data, records = _records(mcap)
    messages = [r for r in records if r.opcode == _mcap.OP_MESSAGE]
    middle = len(data) // 2
    damaged = bytearray(data)
    damaged[middle : middle + 3000] = bytes(3000)  # a zeroed region across several records
    mcap.write_bytes(damaged)
    touched = [r for r in messages if r.end > middle and r.offset < middle + 3000]
    assert main(['bag', 'info', str(bag)]) == 3

    report = repair_bag(bag)
    assert report.action == 'rewritten'
    assert report.damaged_regions and report.damaged_regions[0][0] >= middle - 200
    kept = sum(report.message_counts.values()) - report.synced_poses_added
    # Every untouched message is kept; a touched one only where its rest still decodes.
    assert len(messages) - len(touched) <= kept < len(messages)
    with DemonstrationBagReader(bag) as reader:
        indices = [frame_index(image) for _, image in reader.iter_frames()]
    lost_frames = 60 - len(indices)
    assert 0 < lost_frames <= 2 and indices[-1] == 59  # the frames after the damage are all there
    assert indices == sorted(indices)
    result = check_bag(bag)
    assert result.ok, result.problems
    assert result.exit_code == 0


def test_repair_with_out_leaves_the_input_untouched(tmp_path):
    from rosbags.highlevel import AnyReader

    bag = _bag(tmp_path)
    mcap = _mcap_file(bag)
    data = bytearray(mcap.read_bytes())
    data[len(data) // 3] ^= 0xFF
    mcap.write_bytes(data)
    before = {p.name: p.read_bytes() for p in bag.iterdir()}
    out = tmp_path / 'repaired'
    assert main(['bag', 'repair', str(bag), '--out', str(out)]) == 0
    assert {p.name: p.read_bytes() for p in bag.iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == ['metadata.yaml', 'repaired_0.mcap']
    with AnyReader([out]) as reader:
        topics = [c.topic for c, _, raw in reader.messages() if reader.deserialize(raw, c.msgtype)]
    assert topics.count('/us/image') >= 5
    assert main(['bag', 'check', str(out)]) == 0


def test_frames_waiting_for_a_pose_at_the_cut_get_an_invalid_synced_pose_in_order(tmp_path, capsys):
    live = tmp_path / 'live'
    writer = DemonstrationBagWriter(live, make_session(), fsync_interval_s=None)
    write_demo(writer, 4)
    # Three frames newer than the newest pose: the recorder keeps them waiting for a pose sample.
    last_pose = T0_NS + 15 * 1_000_000
    for i in range(4, 7):
        writer.write_image(frame(i), last_pose + (i - 3) * 300_000)
    crashed = tmp_path / 'crashed'
    shutil.copytree(live, crashed)
    writer.close()
    (crashed / 'live_0.mcap').rename(crashed / 'crashed_0.mcap')
    report = repair_bag(crashed)
    assert report.synced_poses_added == 3
    assert main(['bag', 'check', str(crashed)]) == 0
    out = capsys.readouterr().out
    assert '3 of 7 frames have no valid synchronised pose' in out  # the 3 cut off
    with DemonstrationBagReader(crashed) as reader:
        synced = reader.synced_poses()
        frames = reader.frames()
    np.testing.assert_array_equal(synced.stamps_ns, frames.stamps_ns)
    assert not synced.valid[-3:].any()
    np.testing.assert_allclose(synced.gap_before_s[-3:], [0.0003, 0.0006, 0.0009])
    np.testing.assert_array_equal(synced.gap_after_s[-3:], [-1.0, -1.0, -1.0])
    # Repairing the repaired bag changes nothing.
    assert repair_bag(crashed).action == 'none'


def test_check_summarises_findings_about_many_frames(tmp_path, capsys):
    bag = tmp_path / 'many'
    with DemonstrationBagWriter(bag, make_session()) as writer:
        for i in range(40):
            writer.write_probe_pose(pose(i), T0_NS + i * 1_000_000)
            writer.write_image(frame(i), T0_NS + i * 1_000_000 + 500)
            if i % 4 == 0:
                writer.write_synced_pose(None, T0_NS + i * 1_000_000 + 500, False, -1.0, -1.0)
    assert main(['bag', 'check', str(bag)]) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if 'frame' in line]
    assert len(lines) <= 4, out
    assert 'PROBLEM: 30 frame(s) have no /recorder/synced_pose message with their stamp (first: frame 1 ' in (
        out
    )
    assert '10 of 10 frames have no valid synchronised pose' in out
    assert out.count(' ns') < 30


def test_metadata_yaml_that_disagrees_with_the_mcap_file_is_rebuilt(tmp_path):
    bag = _bag(tmp_path)
    path = bag / 'metadata.yaml'
    document = yaml.safe_load(path.read_text())
    document['rosbag2_bagfile_information']['topics_with_message_count'][2]['message_count'] -= 1
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.raises(CorruptBagError, match=r'does not match the MCAP file.*message_count.*bag repair'):
        DemonstrationBagReader(bag)
    before = _mcap_file(bag).read_bytes()
    report = repair_bag(bag)
    assert report.action == 'metadata_rebuilt' and _mcap_file(bag).read_bytes() == before
    with DemonstrationBagReader(bag) as reader:
        assert reader.message_counts['/arm/probe_pose'] == 24


def test_exit_statuses(tmp_path, capsys):
    bag = _bag(tmp_path)
    assert main(['bag', 'info', str(bag)]) == 0
    assert main(['bag', 'check', str(bag)]) == 0
    assert main(['bag', 'repair', str(bag)]) == 0
    assert main(['bag', 'info', str(tmp_path / 'nope')]) == 4
    assert main(['bag', 'check', str(tmp_path / 'nope')]) == 4
    mcap = _mcap_file(bag)
    mcap.write_bytes(mcap.read_bytes()[:-100])
    assert main(['bag', 'info', str(bag)]) == 3
    mcap.write_bytes(b'not an mcap file at all' * 50)
    assert main(['bag', 'repair', str(bag)]) == 4
    err = capsys.readouterr().err
    assert 'NOT USABLE' in err and 'nothing can be recovered' in err


def test_bags_written_without_a_data_checksum_are_walked(tmp_path, monkeypatch, capsys):
    import mcap.writer

    real_init = mcap.writer.Writer.__init__

    def without_data_crc(self, *args, **kwargs):
        kwargs['enable_data_crcs'] = False
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(mcap.writer.Writer, '__init__', without_data_crc)
    bag = _bag(tmp_path)
    monkeypatch.undo()
    mcap_path = _mcap_file(bag)
    data, records = _records(mcap_path)
    assert next(r for r in records if r.opcode == _mcap.OP_DATA_END).body.data_section_crc == 0
    # Marked as written with checksums: a zero DataEnd checksum is then damage.
    assert main(['bag', 'info', str(bag)]) == 3
    assert 'holds no data checksum although this file was written with one' in capsys.readouterr().err
    # An older bag (no mark) is walked record by record instead.
    metadata = next(r for r in records if r.opcode == _mcap.OP_METADATA)
    marked = bytearray(data)
    at = data.index(b'checksums', metadata.offset)
    marked[at : at + 9] = b'checksumz'
    mcap_path.write_bytes(marked)
    assert main(['bag', 'info', str(bag)]) == 0
    assert 'no data checksum (written before checksums were added)' in capsys.readouterr().out
    message = next(r for r in records if r.opcode == _mcap.OP_MESSAGE)
    marked[message.offset + 1 : message.offset + 9] = struct.pack('<Q', 10**12)
    mcap_path.write_bytes(marked)
    assert main(['bag', 'info', str(bag)]) == 3
    assert f'damaged at byte {message.offset}' in capsys.readouterr().err


def test_dataset_builder_names_the_bag_the_offset_and_the_repair(tmp_path):
    from echo_guidance.data.from_bags import BagDataError, read_bag_demonstrations

    bag = _bag(tmp_path)
    mcap = _mcap_file(bag)
    mcap.write_bytes(mcap.read_bytes()[:5000])
    with pytest.raises(BagDataError) as caught:
        read_bag_demonstrations(bag, 16)
    text = str(caught.value)
    assert str(bag) in text and 'damaged at byte' in text and f'echo-guidance bag repair {bag}' in text


def test_repaired_bag_keeps_the_format_layout(tmp_path):
    bag = _bag(tmp_path)
    mcap = _mcap_file(bag)
    data, records = _records(mcap)
    channel = next(r for r in records if r.opcode == _mcap.OP_CHANNEL)
    damaged = bytearray(data)
    damaged[channel.offset : channel.offset + 16] = bytes(16)  # a channel record lost
    mcap.write_bytes(damaged)
    report = repair_bag(bag)
    assert report.action == 'rewritten' and sum(report.message_counts.values()) == 1 + 6 * 7
    data, records = _records(mcap)
    topics = [r.body.topic for r in records if r.opcode == _mcap.OP_CHANNEL][:6]
    assert topics == list(schema.TOPIC_TYPES)
    marks = [r.body.metadata for r in records if r.opcode == _mcap.OP_METADATA]
    assert marks[0]['schema_version'] == schema.SCHEMA_VERSION and marks[0]['checksums'] == 'data,summary'
