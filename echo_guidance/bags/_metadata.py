"""rosbag2 ``metadata.yaml`` for demonstration bags: building, atomic writing and loading."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from echo_guidance.bags import schema

METADATA_FILE = 'metadata.yaml'
_TOP_KEY = 'rosbag2_bagfile_information'


def default_qos(topic):
    """Return the offered QoS profile list recorded for a topic (rosbags Qos objects).

    Images and probe poses are sensor streams (best effort, shallow queue, as published by the
    capture and arm nodes); the others are reliable. ``ros2 bag play`` re-offers these.
    """
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    sensor = topic in (schema.TOPIC_IMAGE, schema.TOPIC_PROBE_POSE, schema.TOPIC_WRENCH)
    # Zero durations mean "RMW default" (no deadline, no lifespan), as rosbag2 records them.
    default = QosTime(0, 0)
    return [
        Qos(
            QosHistory.KEEP_LAST,
            5 if sensor else 10,
            QosReliability.BEST_EFFORT if sensor else QosReliability.RELIABLE,
            QosDurability.VOLATILE,
            default,
            default,
            QosLiveliness.AUTOMATIC,
            default,
            False,
        )
    ]


def qos_for_metadata(topic):
    """Return a topic's QoS as metadata.yaml version 9 stores it (a list of mappings)."""
    from rosbags.rosbag2.metadata import dump_qos_v9

    return dump_qos_v9(default_qos(topic))


def qos_for_mcap_channel(topic):
    """Return a topic's QoS as the rosbag2 MCAP plugin stores it in channel metadata (YAML text)."""
    return yaml.safe_dump(qos_for_metadata(topic), default_flow_style=False, sort_keys=False).strip()


def build_metadata(
    mcap_name, topic_counts, type_hashes, start_ns, end_ns, state, custom_extra=None, channel_qos=None
):
    """Return the metadata.yaml document (a dict) for a demonstration bag.

    Args:
        mcap_name: file name of the MCAP file inside the bag directory.
        topic_counts: topic -> number of messages.
        type_hashes: message type -> RIHS01 hash.
        start_ns, end_ns: first and last log time (ns); ignored when there are no messages.
        state: one of schema.STATE_*.
        custom_extra: more custom_data entries (strings).
        channel_qos: topic -> ``offered_qos_profiles`` text of the MCAP channel, used where it parses
            as a list (default: :func:`qos_for_metadata`).
    """
    qos = {}
    for topic, text in (channel_qos or {}).items():
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if isinstance(value, list):
            qos[topic] = value
    total = int(sum(topic_counts.values()))
    start = int(start_ns) if total else 0
    duration = int(end_ns - start_ns) if total else 0
    custom = {
        schema.KEY_SCHEMA_VERSION: schema.SCHEMA_VERSION,
        schema.KEY_STATE: state,
    }
    custom.update({k: str(v) for k, v in (custom_extra or {}).items()})
    return {
        _TOP_KEY: {
            'version': schema.ROSBAG2_VERSION,
            'storage_identifier': schema.STORAGE_ID,
            'duration': {'nanoseconds': duration},
            'starting_time': {'nanoseconds_since_epoch': start},
            'message_count': total,
            'topics_with_message_count': [
                {
                    'topic_metadata': {
                        'name': topic,
                        'type': msgtype,
                        'serialization_format': schema.SERIALIZATION,
                        'offered_qos_profiles': qos.get(topic) or qos_for_metadata(topic),
                        'type_description_hash': type_hashes[msgtype],
                    },
                    'message_count': int(topic_counts.get(topic, 0)),
                }
                for topic, msgtype in schema.TOPIC_TYPES.items()
            ],
            'compression_format': '',
            'compression_mode': '',
            'relative_file_paths': [mcap_name],
            'files': [
                {
                    'path': mcap_name,
                    'starting_time': {'nanoseconds_since_epoch': start},
                    'duration': {'nanoseconds': duration},
                    'message_count': total,
                }
            ],
            'custom_data': custom,
            'ros_distro': schema.ROS_DISTRO,
        }
    }


def write_metadata_atomic(bag_dir, document, fsync=True):
    """Write metadata.yaml so that a crash leaves either the old or the new file, never half of one."""
    bag_dir = Path(bag_dir)
    target = bag_dir / METADATA_FILE
    tmp = bag_dir / (METADATA_FILE + '.tmp')
    text = yaml.safe_dump(document, default_flow_style=False, sort_keys=False)
    with open(tmp, 'w', encoding='utf-8') as handle:
        handle.write(text)
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())
    os.replace(tmp, target)
    if fsync:
        _fsync_dir(bag_dir)


def _fsync_dir(directory):
    """Make a rename inside ``directory`` durable (POSIX); silently skipped where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_metadata(bag_dir):
    """Return the ``rosbag2_bagfile_information`` mapping of a bag's metadata.yaml.

    Raises:
        FileNotFoundError: no metadata.yaml.
        ValueError: the file is not a rosbag2 metadata document.
    """
    path = Path(bag_dir) / METADATA_FILE
    with open(path, encoding='utf-8') as handle:
        try:
            document = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise ValueError(f'{path}: not valid YAML ({exc})') from None
    if not isinstance(document, dict) or _TOP_KEY not in document:
        raise ValueError(f'{path}: not a rosbag2 metadata file (no {_TOP_KEY!r} key)')
    return document[_TOP_KEY]


def _first_difference(actual, expected, where):
    """Return the path and values of the first place where two YAML documents differ, or ''."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in list(expected) + [k for k in actual if k not in expected]:
            if key not in actual or key not in expected:
                missing = 'missing' if key not in actual else 'unexpected'
                return f'{where}{key} is {missing}'
            found = _first_difference(actual[key], expected[key], f'{where}{key}.')
            if found:
                return found
        return ''
    if isinstance(expected, list) and isinstance(actual, list) and len(actual) == len(expected):
        for i, (a, e) in enumerate(zip(actual, expected)):
            found = _first_difference(a, e, f'{where}[{i}].')
            if found:
                return found
        return ''
    if actual != expected or type(actual) is not type(expected):
        return f'{where.rstrip(".")} is {actual!r}, expected {expected!r}'
    return ''


def metadata_mismatch(actual, expected):
    """Return how metadata mapping ``actual`` differs from ``expected`` ('' when it does not).

    Every field is compared (metadata.yaml of a demonstration bag is derived from its MCAP file),
    except custom_data, of which only the schema version and a finished recording state are.
    """
    if not isinstance(actual, dict):
        return 'it is not a mapping'
    found = _first_difference(
        {k: v for k, v in actual.items() if k != 'custom_data'},
        {k: v for k, v in expected.items() if k != 'custom_data'},
        '',
    )
    if found:
        return found
    custom, want_custom = actual.get('custom_data') or {}, expected['custom_data']
    if not isinstance(custom, dict):
        return 'custom_data is not a mapping'
    if str(custom.get(schema.KEY_SCHEMA_VERSION)) != want_custom[schema.KEY_SCHEMA_VERSION]:
        return f'custom_data schema version is {custom.get(schema.KEY_SCHEMA_VERSION)!r}'
    if custom.get(schema.KEY_STATE) not in (schema.STATE_COMPLETE, schema.STATE_REPAIRED):
        return f'custom_data recording state is {custom.get(schema.KEY_STATE)!r}'
    return ''
