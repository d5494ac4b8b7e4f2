"""Clear errors for damaged or foreign bags, and the disk-space guard."""

import os
import shutil
import subprocess
import uuid

import numpy as np
import pytest
import yaml
from bags_helpers import T0_NS, frame, frame_index, make_session, write_demo

from echo_guidance.bags import (
    CorruptBagError,
    DemonstrationBagReader,
    DemonstrationBagWriter,
    DiskSpaceLow,
    EmptyBagError,
    MissingTopicsError,
    NotABagError,
    UnknownSchemaVersionError,
    repair_bag,
    schema,
)


@pytest.fixture
def good_bag(tmp_path):
    """Return a small finished bag."""
    path = tmp_path / 'good'
    with DemonstrationBagWriter(path, make_session()) as writer:
        write_demo(writer, 3)
    return path


def _edit_metadata(bag, edit):
    path = bag / 'metadata.yaml'
    document = yaml.safe_load(path.read_text())
    edit(document['rosbag2_bagfile_information'])
    path.write_text(yaml.safe_dump(document))


def test_not_a_directory(tmp_path):
    file = tmp_path / 'file.mcap'
    file.write_bytes(b'x')
    with pytest.raises(NotABagError, match='is not a directory'):
        DemonstrationBagReader(file)
    with pytest.raises(NotABagError, match='does not exist'):
        DemonstrationBagReader(tmp_path / 'nothing')


def test_missing_metadata_names_the_repair_command(good_bag):
    (good_bag / 'metadata.yaml').unlink()
    with pytest.raises(NotABagError, match=r'no metadata.yaml.*good_0.mcap.*bag repair'):
        DemonstrationBagReader(good_bag)


@pytest.mark.parametrize(
    'content, expected',
    [
        (b'', 'empty'),
        (os.urandom(5000), 'magic'),
    ],
)
def test_damaged_mcap_file_is_a_corrupt_bag_naming_the_file(good_bag, content, expected):
    (good_bag / 'good_0.mcap').write_bytes(content)
    with pytest.raises(CorruptBagError, match=rf'good_0\.mcap.*{expected}.*echo-guidance bag repair'):
        DemonstrationBagReader(good_bag)


def test_random_bytes_cannot_be_repaired_and_are_not_touched(good_bag):
    junk = os.urandom(5000)
    (good_bag / 'good_0.mcap').write_bytes(b'JUNK' + junk)
    with pytest.raises(CorruptBagError, match='MCAP magic'):
        repair_bag(good_bag)
    assert (good_bag / 'good_0.mcap').read_bytes() == b'JUNK' + junk


def test_truncated_finished_bag_is_corrupt(good_bag):
    mcap = good_bag / 'good_0.mcap'
    mcap.write_bytes(mcap.read_bytes()[:-300])
    with pytest.raises(CorruptBagError, match=r'good_0\.mcap'):
        DemonstrationBagReader(good_bag)
    assert repair_bag(good_bag).message_counts['/us/image'] == 3


def test_garbage_metadata_yaml(good_bag):
    (good_bag / 'metadata.yaml').write_text('{{{ not yaml')
    with pytest.raises(CorruptBagError, match='not valid YAML'):
        DemonstrationBagReader(good_bag)


def _edit_mcap(bag, old, new):
    """Replace bytes of the MCAP file in place (same length; its checksum no longer matches)."""
    mcap = bag / 'good_0.mcap'
    data = mcap.read_bytes()
    assert len(old) == len(new) and old in data
    mcap.write_bytes(data.replace(old, new))


def test_unknown_schema_version(good_bag):
    _edit_metadata(good_bag, lambda m: m['custom_data'].update({schema.KEY_SCHEMA_VERSION: '9'}))
    _edit_mcap(good_bag, b'schema_version\x01\x00\x00\x001', b'schema_version\x01\x00\x00\x009')
    with pytest.raises(UnknownSchemaVersionError, match="'9'") as caught:
        DemonstrationBagReader(good_bag)
    assert caught.value.exit_code == 4


def test_damaged_schema_version_in_metadata_yaml_is_damage_not_an_unknown_version(good_bag):
    _edit_metadata(good_bag, lambda m: m['custom_data'].update({schema.KEY_SCHEMA_VERSION: '99'}))
    with pytest.raises(CorruptBagError, match=r"schema version '99', the MCAP file says '1'.*bag repair"):
        DemonstrationBagReader(good_bag)
    assert repair_bag(good_bag).action == 'metadata_rebuilt'
    with DemonstrationBagReader(good_bag) as reader:
        assert reader.schema_version == '1'


def test_foreign_bag_without_schema_version(good_bag):
    _edit_metadata(good_bag, lambda m: m.update({'custom_data': None}))
    _edit_mcap(good_bag, b'\x0d\x00\x00\x00echo_guidance', b'\x0d\x00\x00\x00echo_guidancf')
    with pytest.raises(NotABagError, match='not a demonstration bag') as caught:
        DemonstrationBagReader(good_bag)
    assert caught.value.exit_code == 4


def test_missing_required_topic(good_bag):
    def drop_images(m):
        m['topics_with_message_count'] = [
            t for t in m['topics_with_message_count'] if t['topic_metadata']['name'] != '/us/image'
        ]

    _edit_metadata(good_bag, drop_images)
    with pytest.raises(MissingTopicsError, match="'/us/image'"):
        DemonstrationBagReader(good_bag)


def test_empty_bag(tmp_path):
    path = tmp_path / 'empty'
    writer = DemonstrationBagWriter(path, make_session())
    shutil.copytree(path, tmp_path / 'crashed_empty')  # killed before the first message
    writer.close()
    with DemonstrationBagReader(path) as reader:  # closed without data: session info only
        assert reader.message_counts['/us/image'] == 0
    bag = tmp_path / 'crashed_empty'
    (bag / 'empty_0.mcap').rename(bag / 'crashed_empty_0.mcap')
    _edit_metadata(bag, lambda m: m.update({'relative_file_paths': ['crashed_empty_0.mcap']}))
    report = repair_bag(bag)
    assert sum(report.message_counts.values()) == 0
    with pytest.raises(EmptyBagError, match='no messages'):
        DemonstrationBagReader(bag)


def test_disk_space_guard_finalises_before_raising(tmp_path):
    """A stand-in disk of 200 kB: free space = capacity - bytes the writer has written."""
    path = tmp_path / 'full'
    capacity = 200_000
    holder = {}

    def free_space(_):
        writer = holder.get('writer')
        return capacity - (writer.bytes_written if writer else 0)

    writer = DemonstrationBagWriter(
        path, make_session(), disk_check_every=1, disk_reserve_bytes=50_000, free_space_fn=free_space
    )
    holder['writer'] = writer
    written = 0
    with pytest.raises(DiskSpaceLow, match=r'bytes free, reserve is 50000 bytes.*finalised') as caught:
        for i in range(1000):
            writer.write_image(frame(i), T0_NS + i * 33_000_000)
            written += 1
    assert caught.value.free_bytes < 50_000 and writer.closed
    assert 30 < written < 60  # 3 kB frames: stopped at ~150 kB
    with DemonstrationBagReader(path) as reader:
        assert reader.state == 'complete'
        assert [frame_index(im) for _, im in reader.iter_frames()] == list(range(written + 1))


def test_disk_space_guard_refuses_to_start(tmp_path):
    with pytest.raises(DiskSpaceLow):
        DemonstrationBagWriter(
            tmp_path / 'b', make_session(), disk_reserve_bytes=10**6, free_space_fn=lambda _: 10
        )
    assert not (tmp_path / 'b').exists()


@pytest.fixture
def small_tmpfs(tmp_path):
    """Mount a real 1 MiB tmpfs where this machine allows it (root); skip otherwise."""
    mount_point = tmp_path / f'tmpfs-{uuid.uuid4().hex[:8]}'
    mount_point.mkdir()
    if not shutil.which('mount') or os.geteuid() != 0:
        pytest.skip('mounting a tmpfs needs root')
    done = subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(mount_point)], capture_output=True, text=True
    )
    if done.returncode:
        pytest.skip(f'cannot mount a tmpfs here: {done.stderr.strip()}')
    try:
        yield mount_point
    finally:
        subprocess.run(['umount', str(mount_point)], check=False)


def test_disk_space_guard_on_a_real_small_filesystem(small_tmpfs):
    path = small_tmpfs / 'bag'
    writer = DemonstrationBagWriter(path, make_session(), disk_check_every=5, disk_reserve_bytes=256 * 1024)
    written = 0
    with pytest.raises(DiskSpaceLow):
        for i in range(10_000):
            writer.write_image(frame(i), T0_NS + i * 33_000_000)
            written += 1
    assert written > 100
    with DemonstrationBagReader(path) as reader:
        images, _ = reader.frames()
    assert len(images) == written + 1
    np.testing.assert_array_equal(images[-1], frame(written))
