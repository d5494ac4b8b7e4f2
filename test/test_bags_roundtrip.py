"""Round trip through DemonstrationBagWriter / DemonstrationBagReader, and an independent MCAP reader."""

import numpy as np
import pytest
import yaml
from bags_helpers import HEIGHT, T0_NS, WIDTH, frame, frame_index, make_session, pose, write_demo

from echo_guidance.bags import (
    BagWriteError,
    CorruptBagError,
    DemonstrationBagReader,
    DemonstrationBagWriter,
    InvalidFrameError,
    InvalidSessionError,
    schema,
)
from echo_guidance.bags._convert import InvalidPoseError


@pytest.fixture
def demo_bag(tmp_path):
    """Return a finished bag: 12 frames, 48 poses, 12 synced poses, 12 wrenches, 2 pedal events."""
    path = tmp_path / 'demo'
    with DemonstrationBagWriter(path, make_session()) as writer:
        writer.write_pedal_event('RECORD_START', T0_NS - 5, source='/dev/ttyUSB0')
        write_demo(writer, 12)
        writer.write_pedal_event(1, T0_NS + 60_000_000, source='/dev/ttyUSB0', detail='T')
    return path


def test_round_trip_returns_what_was_written(demo_bag):
    with DemonstrationBagReader(demo_bag) as reader:
        assert reader.state == schema.STATE_COMPLETE
        session = reader.session_info()
        expected = make_session()
        for key in ('target_plane', 'width', 'height', 'operator_id', 'subject_id', 'probe_model', 'crop'):
            assert session[key] == expected[key], key
        assert session['image_latency'] == pytest.approx(0.012)
        assert session['extra'] == {'simulator_seed': 3}
        np.testing.assert_allclose(session['flange_to_probe'], expected['flange_to_probe'], atol=1e-9)

        images, stamps = reader.frames()
        assert images.shape == (12, HEIGHT, WIDTH) and images.dtype == np.uint8
        for i in range(12):
            np.testing.assert_array_equal(images[i], frame(i))
        assert np.all(np.diff(stamps) > 0)

        poses, pose_stamps = reader.probe_poses()
        assert poses.shape == (48, 4, 4)
        for i in range(48):
            np.testing.assert_allclose(poses[i], pose(i), atol=1e-9)
        np.testing.assert_array_equal(pose_stamps, T0_NS + np.arange(48) * 1_000_000)

        synced = reader.synced_poses()
        np.testing.assert_array_equal(synced.stamps_ns, stamps)
        np.testing.assert_array_equal(synced.valid, [i % 5 != 4 for i in range(12)])
        assert np.all(np.isnan(synced.poses_mm[~synced.valid]))
        np.testing.assert_allclose(synced.poses_mm[0], pose(3), atol=1e-9)
        assert synced.gap_before_s[4] == -1.0 and synced.gap_after_s[0] == pytest.approx(0.0004)

        events = reader.pedal_events()
        assert [e['name'] for e in events] == ['RECORD_START', 'TARGET_REACHED']
        assert events[1]['detail'] == 'T' and events[0]['source'] == '/dev/ttyUSB0'

        forces, torques, wrench_stamps = reader.wrenches()
        assert forces.shape == (12, 3) and forces[3, 0] == pytest.approx(0.3)
        np.testing.assert_array_equal(wrench_stamps, stamps + 1)

        streamed = [(s, frame_index(im)) for s, im in reader.iter_frames()]
        assert [i for _, i in streamed] == list(range(12))


def test_metadata_yaml_is_rosbag2_v9_and_finalised(demo_bag):
    document = yaml.safe_load((demo_bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert document['version'] == 9 and document['storage_identifier'] == 'mcap'
    assert document['relative_file_paths'] == ['demo_0.mcap']
    counts = {t['topic_metadata']['name']: t['message_count'] for t in document['topics_with_message_count']}
    assert counts == {
        '/session/info': 1,
        '/us/image': 12,
        '/arm/probe_pose': 48,
        '/recorder/synced_pose': 12,
        '/pedal/event': 2,
        '/arm/wrench': 12,
    }
    assert document['message_count'] == sum(counts.values())
    assert document['custom_data'][schema.KEY_STATE] == 'complete'
    assert document['custom_data'][schema.KEY_SCHEMA_VERSION] == schema.SCHEMA_VERSION
    for topic in document['topics_with_message_count']:
        assert topic['topic_metadata']['type_description_hash'].startswith('RIHS01_')


def test_rosbags_reader_reads_every_message(demo_bag):
    from rosbags.highlevel import AnyReader

    with AnyReader([demo_bag]) as reader:
        counts = {}
        for connection, _, raw in reader.messages():
            message = reader.deserialize(raw, connection.msgtype)
            counts[connection.topic] = counts.get(connection.topic, 0) + 1
            if connection.topic == '/us/image':
                assert message.encoding == 'mono8' and (message.height, message.width) == (HEIGHT, WIDTH)
    assert counts['/us/image'] == 12 and counts['/session/info'] == 1


def test_independent_mcap_reader_decodes_every_topic(demo_bag):
    """The mcap library and mcap-ros2-support (not rosbags) decode every message of every topic."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    seen = {}
    previous = -1
    with open(demo_bag / 'demo_0.mcap', 'rb') as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == 'ros2'
        summary = reader.get_summary()
        assert summary.statistics.message_count == 1 + 12 + 48 + 12 + 2 + 12
        assert summary.statistics.chunk_count == 0  # unchunked: every message is on disk when written
        for schema_record, channel, message, decoded in reader.iter_decoded_messages(log_time_order=False):
            assert schema_record.encoding == 'ros2msg' and channel.message_encoding == 'cdr'
            assert message.log_time > previous
            previous = message.log_time
            seen.setdefault(channel.topic, []).append(decoded)
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
    assert metadata['echo_guidance']['schema_version'] == schema.SCHEMA_VERSION
    assert set(seen) == set(schema.TOPIC_TYPES)
    image = seen['/us/image'][5]
    assert image.encoding == 'mono8' and image.step == WIDTH
    np.testing.assert_array_equal(np.frombuffer(bytes(image.data), np.uint8).reshape(HEIGHT, WIDTH), frame(5))
    position = seen['/arm/probe_pose'][7].pose.position
    np.testing.assert_allclose((position.x, position.y, position.z), pose(7)[:3, 3] / 1000.0)
    assert seen['/recorder/synced_pose'][4].valid is False
    assert seen['/session/info'][0].target_plane == 'PSAX-AV'
    assert seen['/pedal/event'][1].event == 1
    assert seen['/arm/wrench'][0].header.frame_id == 'base'


def test_bag_is_marked_in_progress_until_closed(tmp_path):
    path = tmp_path / 'live'
    writer = DemonstrationBagWriter(path, make_session())
    write_demo(writer, 3)
    document = yaml.safe_load((path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert document['custom_data'][schema.KEY_STATE] == 'in_progress'
    with pytest.raises(CorruptBagError, match='in progress'):
        DemonstrationBagReader(path)
    assert writer.bytes_written == (path / 'live_0.mcap').stat().st_size  # everything handed to the OS
    writer.close()
    writer.close()  # idempotent
    with DemonstrationBagReader(path) as reader:
        assert reader.message_counts['/us/image'] == 3
    with pytest.raises(BagWriteError, match='closed'):
        writer.write_image(frame(0), T0_NS)


def test_wrong_image_raises_and_keeps_earlier_data(tmp_path):
    path = tmp_path / 'bad_image'
    with DemonstrationBagWriter(path, make_session()) as writer:
        writer.write_image(frame(0), T0_NS)
        writer.write_synced_pose(pose(0), T0_NS, True, 0.0, 0.0)
        with pytest.raises(InvalidFrameError, match=r'does not match the session size'):
            writer.write_image(np.zeros((HEIGHT + 1, WIDTH), np.uint8), T0_NS + 10)
        with pytest.raises(InvalidFrameError, match='2-D uint8'):
            writer.write_image(np.zeros((HEIGHT, WIDTH, 3), np.uint8), T0_NS + 10)
        with pytest.raises(InvalidFrameError, match='2-D uint8'):
            writer.write_image(np.zeros((HEIGHT, WIDTH), np.uint16), T0_NS + 10)
        with pytest.raises(InvalidFrameError, match='numpy array'):
            writer.write_image([[0] * WIDTH] * HEIGHT, T0_NS + 10)
        with pytest.raises(InvalidPoseError, match='NaN'):
            writer.write_probe_pose(np.full((4, 4), np.nan), T0_NS + 10)
        with pytest.raises(InvalidPoseError, match='not a rotation'):
            writer.write_probe_pose(np.diag([2.0, 1.0, 1.0, 1.0]), T0_NS + 10)
        with pytest.raises(ValueError, match='valid=True needs a transform'):
            writer.write_synced_pose(None, T0_NS + 10, True, 0.0, 0.0)
        with pytest.raises(ValueError, match='unknown pedal event'):
            writer.write_pedal_event(99, T0_NS + 10)
        writer.write_image(frame(1), T0_NS + 20)
        writer.write_synced_pose(pose(1), T0_NS + 20, True, 0.0, 0.0)
    with DemonstrationBagReader(path) as reader:
        images, stamps = reader.frames()
        assert [frame_index(i) for i in images] == [0, 1]
        assert reader.message_counts['/arm/probe_pose'] == 0


@pytest.mark.parametrize(
    'change, message',
    [
        ({'target_plane': 'A2C'}, 'target_plane'),
        ({'width': 0}, 'width'),
        ({'flange_to_probe': None}, 'missing required'),
        ({'flange_to_probe': np.ones((4, 4))}, 'flange_to_probe'),
        ({'crop': (1, 2, 3)}, 'crop'),
        ({'widht': 5}, 'unknown session field'),
        ({'extra_yaml': 'a: [1'}, 'extra_yaml'),
    ],
)
def test_bad_session_is_rejected_before_anything_is_written(tmp_path, change, message):
    with pytest.raises(InvalidSessionError, match=message):
        DemonstrationBagWriter(tmp_path / 'bag', make_session(**change))
    assert not (tmp_path / 'bag').exists()


def test_refuses_to_overwrite_a_bag(tmp_path, demo_bag):
    with pytest.raises(BagWriteError, match='refusing to overwrite'):
        DemonstrationBagWriter(demo_bag, make_session())


def test_non_increasing_log_times_are_clamped_and_counted(tmp_path):
    path = tmp_path / 'clamp'
    with DemonstrationBagWriter(path, make_session()) as writer:
        writer.write_probe_pose(pose(0), T0_NS, log_time_ns=T0_NS + 100)
        writer.write_probe_pose(pose(1), T0_NS + 1_000_000, log_time_ns=T0_NS + 50)  # goes back
        writer.write_probe_pose(pose(2), T0_NS + 2_000_000, log_time_ns=T0_NS + 101)  # equal after clamp
        writer.write_image(frame(0), T0_NS + 2_000_000, log_time_ns=T0_NS + 5_000_000)
        writer.write_synced_pose(pose(2), T0_NS + 2_000_000, True, 0.0, 0.0)  # stamp-derived: not counted
        assert writer.log_times_clamped == 2
    with DemonstrationBagReader(path) as reader:
        log_times = [r.log_time_ns for r in reader.iter_messages()]
        assert log_times[1:5] == [T0_NS + 100, T0_NS + 101, T0_NS + 102, T0_NS + 5_000_000]
        assert all(b > a for a, b in zip(log_times, log_times[1:]))
        assert reader.info()['log_times_clamped'] == 2
        # Stamps are kept as given.
        np.testing.assert_array_equal(reader.probe_poses().stamps_ns, T0_NS + np.arange(3) * 1_000_000)


def test_quaternion_sign_and_mm_to_metre_conversion():
    from scipy.spatial.transform import Rotation

    from echo_guidance.bags._convert import matrix_mm_to_position_quaternion, position_quaternion_to_matrix_mm

    rotations = Rotation.random(500, random_state=4)
    for i, rotation in enumerate(rotations):
        matrix = np.eye(4)
        matrix[:3, :3] = rotation.as_matrix()
        matrix[:3, 3] = (i, -2.0 * i, 0.5)
        position, quaternion = matrix_mm_to_position_quaternion(matrix)
        assert quaternion[3] >= 0 and abs(np.linalg.norm(quaternion) - 1) < 1e-12
        np.testing.assert_allclose(position, matrix[:3, 3] / 1000.0)
        np.testing.assert_allclose(position_quaternion_to_matrix_mm(position, quaternion), matrix, atol=1e-9)


def test_type_hashes_match_rosidl_where_the_interfaces_are_built():
    """Check rosbags' RIHS01 hashes of our own types equal the ones rosidl generated at install time."""
    import json
    import sys
    from pathlib import Path

    share = Path(sys.prefix) / 'share' / 'echo_guidance' / 'msg'
    if not (share / 'SessionInfo.json').is_file():
        pytest.skip(f'echo_guidance interfaces are not built into {sys.prefix}')
    store = schema.get_typestore()
    for name in ('SessionInfo', 'SyncedPose', 'PedalEvent'):
        hashes = json.loads((share / f'{name}.json').read_text())['type_hashes']
        rosidl = next(h['hash_string'] for h in hashes if h['type_name'] == f'echo_guidance/msg/{name}')
        assert store.hash_rihs01(f'echo_guidance/msg/{name}') == rosidl, name


def test_rclpy_deserialises_the_bag_messages(demo_bag):
    """Messages in the bag are the CDR that ROS 2 itself reads (rclpy + rosidl-generated types)."""
    serialization = pytest.importorskip('rclpy.serialization')
    ros_msgs = pytest.importorskip('echo_guidance.msg')
    from geometry_msgs.msg import PoseStamped
    from mcap.reader import make_reader
    from sensor_msgs.msg import Image

    classes = {
        '/us/image': Image,
        '/arm/probe_pose': PoseStamped,
        '/recorder/synced_pose': ros_msgs.SyncedPose,
        '/session/info': ros_msgs.SessionInfo,
        '/pedal/event': ros_msgs.PedalEvent,
    }
    decoded = {}
    with open(demo_bag / 'demo_0.mcap', 'rb') as stream:
        for _, channel, message in make_reader(stream).iter_messages(topics=list(classes)):
            decoded.setdefault(channel.topic, []).append(
                serialization.deserialize_message(message.data, classes[channel.topic])
            )
    assert decoded['/session/info'][0].target_plane == 'PSAX-AV'
    assert list(decoded['/session/info'][0].crop) == [10, 20, 300, 200]
    image = decoded['/us/image'][2]
    np.testing.assert_array_equal(np.asarray(image.data, np.uint8).reshape(HEIGHT, WIDTH), frame(2))
    assert decoded['/recorder/synced_pose'][4].valid is False
    assert decoded['/pedal/event'][1].event == ros_msgs.PedalEvent.TARGET_REACHED
    assert decoded['/arm/probe_pose'][9].pose.position.x == pytest.approx(pose(9)[0, 3] / 1000.0)
