"""Reader of demonstration bags: session info, frames, poses, synchronised poses and pedal events.

Messages are decoded with the message definitions stored in the bag itself, so a bag stays
readable after the project's .msg files change (within one schema version).
"""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import numpy as np
import yaml

from echo_guidance.bags import _mcap, _metadata, integrity, schema
from echo_guidance.bags._convert import pose_message_to_matrix_mm, stamp_to_ns
from echo_guidance.bags.errors import (  # noqa: F401 (re-exported: the errors' historical home)
    EXIT_DAMAGED,
    EXIT_NOT_A_BAG,
    EXIT_OK,
    EXIT_PROBLEMS,
    BagError,
    CorruptBagError,
    EmptyBagError,
    MissingTopicsError,
    NotABagError,
    UnknownSchemaVersionError,
    repair_hint,
)

_REPAIR_HINT = 'run `echo-guidance bag repair {path}` to recover every intact message'


#: One decoded message: topic, rosbag2 log time (ns) and the rosbags message object.
BagRecord = namedtuple('BagRecord', 'topic log_time_ns message')

#: Probe poses interpolated at frame times; poses are NaN where ``valid`` is False.
SyncedPoses = namedtuple('SyncedPoses', 'poses_mm stamps_ns valid gap_before_s gap_after_s')

#: Probe pose samples: (M, 4, 4) transforms in mm and their stamps.
ProbePoses = namedtuple('ProbePoses', 'poses_mm stamps_ns')

#: Frames: (N, H, W) uint8 and their acquisition stamps.
Frames = namedtuple('Frames', 'images stamps_ns')

_PEDAL_NAMES = {
    1: 'TARGET_REACHED',
    2: 'RECORD_START',
    3: 'RECORD_STOP',
    4: 'DEADMAN_PRESSED',
    5: 'DEADMAN_RELEASED',
    6: 'DEVICE_FAULT',
}


def check_bag_metadata(path):
    """Return the metadata mapping of a bag directory after checking it is a readable demonstration bag.

    Raises:
        NotABagError, UnknownSchemaVersionError, CorruptBagError, MissingTopicsError: see the class docs.
    """
    path = Path(path)
    if not path.exists():
        raise NotABagError(f'{path} does not exist')
    if not path.is_dir():
        raise NotABagError(
            f'{path} is not a directory; a demonstration bag is a directory holding '
            'metadata.yaml and one .mcap file'
        )
    if not (path / _metadata.METADATA_FILE).is_file():
        mcaps = sorted(p.name for p in path.glob('*.mcap'))
        hint = (
            f'; it holds {mcaps}: {_REPAIR_HINT.format(path=path)} and rebuild metadata.yaml' if mcaps else ''
        )
        raise NotABagError(
            f'{path} has no metadata.yaml, so it is not a rosbag2 bag{hint}',
            exit_code=EXIT_DAMAGED if mcaps else None,
        )
    try:
        metadata = _metadata.load_metadata(path)
    except ValueError as exc:
        raise CorruptBagError(f'{exc}; {_REPAIR_HINT.format(path=path)}') from None
    except OSError as exc:
        raise CorruptBagError(f'{path}: metadata.yaml cannot be read ({exc})') from None

    def malformed(what):
        return CorruptBagError(
            f'{path}: metadata.yaml is damaged: {what}; {_REPAIR_HINT.format(path=path)} '
            '(it rebuilds metadata.yaml from the MCAP file)'
        )

    if not isinstance(metadata, dict):
        raise malformed('rosbag2_bagfile_information is not a mapping')
    custom = metadata.get('custom_data') or {}
    if not isinstance(custom, dict):
        raise malformed(f'custom_data is a {type(custom).__name__}, not a mapping')
    version = custom.get(schema.KEY_SCHEMA_VERSION)
    in_mcap = _mcap_schema_version(path)
    if in_mcap in schema.SUPPORTED_SCHEMA_VERSIONS and str(version) != in_mcap:
        # The MCAP file says what it is: metadata.yaml is what was damaged.
        raise malformed(f'it names schema version {version!r}, the MCAP file says {in_mcap!r}')
    if version is None:
        raise NotABagError(
            f'{path}: metadata.yaml has no custom_data {schema.KEY_SCHEMA_VERSION!r}; '
            'not a demonstration bag written by echo_guidance'
        )
    if str(version) not in schema.SUPPORTED_SCHEMA_VERSIONS:
        raise UnknownSchemaVersionError(
            f'{path}: bag schema version {version!r} is not supported by this software '
            f'(supported: {schema.SUPPORTED_SCHEMA_VERSIONS}); update echo_guidance'
        )
    state = custom.get(schema.KEY_STATE)
    if state == schema.STATE_IN_PROGRESS:
        raise CorruptBagError(
            f'{path}: metadata.yaml says the recording is still in progress: the recorder is still writing '
            f'or was stopped without closing the bag (killed, power loss); if it is not running, '
            f'{_REPAIR_HINT.format(path=path)}'
        )
    if state not in (schema.STATE_COMPLETE, schema.STATE_REPAIRED):
        raise malformed(f'unknown recording state {state!r}')
    names = metadata.get('relative_file_paths')
    if not (isinstance(names, list) and len(names) == 1 and isinstance(names[0], str) and names[0]):
        raise malformed(f'relative_file_paths is {names!r}, expected one MCAP file name')
    if not (path / Path(names[0]).name).is_file():
        raise malformed(f'the MCAP file {names[0]!r} it names does not exist')
    entries = metadata.get('topics_with_message_count')
    if not isinstance(entries, list):
        raise malformed('topics_with_message_count is not a list')
    counts = {}
    for entry in entries:
        topic = entry.get('topic_metadata') if isinstance(entry, dict) else None
        name = topic.get('name') if isinstance(topic, dict) else None
        count = entry.get('message_count') if isinstance(entry, dict) else None
        if not isinstance(name, str) or not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise malformed(f'topics_with_message_count entry {entry!r} is not a topic with a message count')
        counts[name] = count
    for key, inner in (('starting_time', 'nanoseconds_since_epoch'), ('duration', 'nanoseconds')):
        value = metadata.get(key)
        value = value.get(inner) if isinstance(value, dict) else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise malformed(f'{key}.{inner} is {value!r}, not an integer')
    clamped = custom.get(schema.KEY_LOG_TIME_CLAMPED, 0)
    if not str(clamped).isdigit():
        raise malformed(f'custom_data {schema.KEY_LOG_TIME_CLAMPED} is {clamped!r}, not a count')
    missing = [t for t in schema.REQUIRED_TOPICS if t not in counts]
    if missing:
        raise MissingTopicsError(
            f'{path}: required topic(s) {missing} are missing; '
            f'a demonstration bag has {list(schema.REQUIRED_TOPICS)}'
        )
    return metadata


def _mcap_schema_version(path):
    """The schema version in the ``echo_guidance`` metadata record of the bag's one MCAP file, or None."""
    mcaps = sorted(Path(path).glob('*.mcap'))
    if len(mcaps) != 1:
        return None
    try:
        with _mcap.mapped(mcaps[0]) as (buf, size):
            records = _mcap.leading_records(buf, size, limit=32)
    except OSError:
        return None
    for record in records:
        if record.opcode == _mcap.OP_METADATA and record.body.name == schema.MCAP_METADATA_NAME:
            return record.body.metadata.get('schema_version')
    return None


def metadata_topic_counts(metadata):
    """Return topic -> message count of a metadata mapping that passed :func:`check_bag_metadata`."""
    return {
        entry['topic_metadata']['name']: entry['message_count']
        for entry in metadata['topics_with_message_count']
    }


class DemonstrationBagReader:
    """Read a finished (or repaired) demonstration bag. Use as a context manager or call close().

    Raises on open:
        NotABagError: not a directory, no metadata.yaml, or not written by echo_guidance.
        UnknownSchemaVersionError: the bag's schema version is newer/unknown.
        CorruptBagError: the MCAP file is truncated or damaged, or the recording never finished.
        MissingTopicsError: required topics are absent.
        EmptyBagError: no messages, or no session info message.
    """

    def __init__(self, path, verify=True):
        """Open the bag, verify its MCAP file (unless ``verify`` is False) and read its session info.

        Verification reads the whole file once (CRC-32 at disk speed; a record-by-record walk for
        bags written before checksums) and compares the message counts of metadata.yaml with the
        MCAP file's; a damaged bag raises CorruptBagError instead of being read.
        """
        from rosbags.rosbag2 import Reader
        from rosbags.rosbag2.errors import ReaderError

        self.path = Path(path)
        self.metadata = check_bag_metadata(self.path)
        self.mcap_path = self.path / Path(self.metadata['relative_file_paths'][0]).name
        self.integrity = None
        if verify:
            self.integrity = integrity.verify_mcap(self.mcap_path, self.path)
            expected = self.integrity.expected_metadata(self.mcap_path.name, self.state)
            mismatch = _metadata.metadata_mismatch(self.metadata, expected)
            if mismatch:
                raise CorruptBagError(
                    f'{self.path}: metadata.yaml does not match the MCAP file: {mismatch}; '
                    f'{_REPAIR_HINT.format(path=self.path)} (it rebuilds metadata.yaml)'
                )
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except (ReaderError, OSError) as exc:
            raise CorruptBagError(
                f'{self.mcap_path}: cannot be read ({exc}); {_REPAIR_HINT.format(path=self.path)}'
            ) from None
        except Exception as exc:  # noqa: BLE001 (rosbags parses metadata.yaml its own way)
            raise CorruptBagError(
                f'{self.path}: rosbags cannot read metadata.yaml ({type(exc).__name__}: {exc}); '
                f'{_REPAIR_HINT.format(path=self.path)} (it rebuilds metadata.yaml)'
            ) from None
        try:
            self._connections = {c.topic: c for c in self._reader.connections}
            self._store = schema.typestore_from_definitions(
                (c.msgtype, c.msgdef.data) for c in self._reader.connections
            )
            self.message_counts = {topic: 0 for topic in schema.TOPIC_TYPES}
            self.message_counts.update({c.topic: c.msgcount for c in self._reader.connections})
            if not sum(self.message_counts.values()):
                raise EmptyBagError(f'{self.path}: the bag holds no messages')
            if not self.message_counts.get(schema.TOPIC_SESSION):
                raise EmptyBagError(f'{self.path}: the bag has no {schema.TOPIC_SESSION} message')
            self._session = self._read_session()
        except BaseException:
            self._reader.close()
            raise

    # ------------------------------------------------------------------------------ basics

    def close(self):
        """Close the bag files."""
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self):
        """Return the reader."""
        return self

    def __exit__(self, exc_type, exc, tb):
        """Close the bag."""
        self.close()
        return False

    @property
    def state(self):
        """Recording state from metadata.yaml: 'complete' or 'repaired'."""
        return (self.metadata.get('custom_data') or {}).get(schema.KEY_STATE, '')

    @property
    def schema_version(self):
        """The bag's schema version string."""
        return str(self.metadata['custom_data'][schema.KEY_SCHEMA_VERSION])

    def info(self):
        """Return a summary dict: path, state, schema version, counts, times, clamped log times, session."""
        custom = self.metadata.get('custom_data') or {}
        return {
            'path': str(self.path),
            'mcap_file': self.mcap_path.name,
            'state': self.state,
            'schema_version': self.schema_version,
            'repair': custom.get(schema.KEY_REPAIR, ''),
            'message_counts': dict(self.message_counts),
            'message_count': int(sum(self.message_counts.values())),
            'start_log_time_ns': int(self.metadata['starting_time']['nanoseconds_since_epoch']),
            'duration_s': self.metadata['duration']['nanoseconds'] / 1e9,
            'log_times_clamped': int(custom.get(schema.KEY_LOG_TIME_CLAMPED, 0)),
            'size_bytes': self.mcap_path.stat().st_size,
            'checksums': self.integrity.checksums if self.integrity else 'not verified',
            'integrity': self.integrity.describe() if self.integrity else 'not verified',
            'session': self.session_info(),
        }

    def iter_messages(self, topics=None):
        """Yield decoded BagRecord(topic, log_time_ns, message) in log-time order (default: all topics)."""
        from rosbags.rosbag2.errors import ReaderError

        wanted = list(self._connections) if topics is None else list(topics)
        unknown = [t for t in wanted if t not in self._connections]
        if unknown:
            raise MissingTopicsError(
                f'{self.path}: no topic(s) {unknown}; the bag has {sorted(self._connections)}'
            )
        connections = [self._connections[t] for t in wanted]
        count = 0
        try:
            for connection, log_time, raw in self._reader.messages(connections=connections):
                try:
                    message = self._store.deserialize_cdr(raw, connection.msgtype)
                except Exception as exc:  # noqa: BLE001 (any decoding failure means damaged content)
                    raise CorruptBagError(
                        f'{self.mcap_path}: message {count} of {wanted} (on {connection.topic}, log time '
                        f'{log_time}) does not decode as {connection.msgtype} ({type(exc).__name__}: {exc}); '
                        f'{_REPAIR_HINT.format(path=self.path)}'
                    ) from None
                count += 1
                yield BagRecord(connection.topic, log_time, message)
        except ReaderError as exc:
            raise CorruptBagError(f'{self.mcap_path}: {exc}; {_REPAIR_HINT.format(path=self.path)}') from None

    def _pose_mm(self, pose, what):
        """Convert a Pose message, turning an invalid one into CorruptBagError."""
        try:
            return pose_message_to_matrix_mm(pose)
        except ValueError as exc:
            hint = _REPAIR_HINT.format(path=self.path)
            raise CorruptBagError(f'{self.mcap_path}: {what}: {exc}; {hint}') from None

    # ------------------------------------------------------------------------------ session

    def _read_session(self):
        record = next(self.iter_messages([schema.TOPIC_SESSION]), None)
        if record is None:
            raise EmptyBagError(f'{self.path}: the bag has no {schema.TOPIC_SESSION} message')
        m = record.message
        try:
            extra = yaml.safe_load(m.extra_yaml) if m.extra_yaml else {}
        except yaml.YAMLError:
            extra = None
        return {
            'operator_id': m.operator_id,
            'subject_id': m.subject_id,
            'target_plane': m.target_plane,
            'probe_model': m.probe_model,
            'flange_to_probe': self._pose_mm(m.flange_to_probe, 'session flange_to_probe'),
            'crop': tuple(int(c) for c in m.crop),
            'width': int(m.width),
            'height': int(m.height),
            'image_latency': float(m.image_latency),
            'software_version': m.software_version,
            'extra_yaml': m.extra_yaml,
            'extra': extra,
            'stamp_ns': stamp_to_ns(m.header.stamp),
        }

    def session_info(self):
        """Return the session dict: the writer's fields plus 'extra' (parsed extra_yaml); transforms in mm."""
        session = dict(self._session)
        session['flange_to_probe'] = session['flange_to_probe'].copy()
        return session

    # ------------------------------------------------------------------------------- frames

    def _decode_image(self, message):
        height, width = self._session['height'], self._session['width']
        if message.encoding != schema.IMAGE_ENCODING:
            raise CorruptBagError(
                f'{self.path}: frame encoding {message.encoding!r}, expected {schema.IMAGE_ENCODING}'
            )
        if (message.height, message.width) != (height, width):
            raise CorruptBagError(
                f'{self.path}: frame size {message.height}x{message.width} differs from the '
                f'session size {height}x{width}'
            )
        data = np.asarray(message.data, dtype=np.uint8)
        if message.step < width or data.size != message.step * height:
            raise CorruptBagError(
                f'{self.path}: frame data holds {data.size} bytes, expected step {message.step} '
                f'x height {height}'
            )
        return data.reshape(height, message.step)[:, :width]

    def iter_frames(self):
        """Yield (stamp_ns, image (H, W) uint8) for every frame, without holding them all in memory."""
        for record in self.iter_messages([schema.TOPIC_IMAGE]):
            yield stamp_to_ns(record.message.header.stamp), self._decode_image(record.message)

    def frames(self):
        """Return Frames(images (N, H, W) uint8, stamps_ns (N,) int64) of every frame, in bag order."""
        count = self.message_counts[schema.TOPIC_IMAGE]
        images = np.empty((count, self._session['height'], self._session['width']), dtype=np.uint8)
        stamps = np.empty(count, dtype=np.int64)
        n = 0
        for stamp, image in self.iter_frames():
            if n == count:
                raise CorruptBagError(f'{self.path}: more frames than metadata.yaml counts ({count})')
            images[n] = image
            stamps[n] = stamp
            n += 1
        return Frames(images[:n], stamps[:n])

    # -------------------------------------------------------------------------------- poses

    def probe_poses(self):
        """Return ProbePoses(poses_mm (M, 4, 4), stamps_ns (M,)) of the raw probe pose samples."""
        poses, stamps = [], []
        for record in self.iter_messages([schema.TOPIC_PROBE_POSE]):
            poses.append(self._pose_mm(record.message.pose, f'probe pose {len(poses)}'))
            stamps.append(stamp_to_ns(record.message.header.stamp))
        return ProbePoses(np.array(poses).reshape(-1, 4, 4), np.array(stamps, dtype=np.int64))

    def synced_poses(self):
        """Return SyncedPoses: per-frame poses (N, 4, 4) mm (NaN where invalid), stamps, valid, gaps (s)."""
        poses, stamps, valid, before, after = [], [], [], [], []
        for record in self.iter_messages([schema.TOPIC_SYNCED_POSE]):
            m = record.message
            valid.append(bool(m.valid))
            if m.valid:
                poses.append(self._pose_mm(m.pose, f'synced pose {len(poses)}'))
            else:
                poses.append(np.full((4, 4), np.nan))
            stamps.append(stamp_to_ns(m.header.stamp))
            before.append(m.gap_before)
            after.append(m.gap_after)
        return SyncedPoses(
            np.array(poses).reshape(-1, 4, 4),
            np.array(stamps, dtype=np.int64),
            np.array(valid, dtype=bool),
            np.array(before, dtype=np.float64),
            np.array(after, dtype=np.float64),
        )

    def pedal_events(self):
        """Return the pedal events as dicts: stamp_ns, log_time_ns, event (code), name, source, detail."""
        return [
            {
                'stamp_ns': stamp_to_ns(r.message.header.stamp),
                'log_time_ns': r.log_time_ns,
                'event': int(r.message.event),
                'name': _PEDAL_NAMES.get(int(r.message.event), f'UNKNOWN_{int(r.message.event)}'),
                'source': r.message.source,
                'detail': r.message.detail,
            }
            for r in self.iter_messages([schema.TOPIC_PEDAL])
        ]

    def wrenches(self):
        """Return (forces (K, 3) N, torques (K, 3) N m, stamps_ns (K,)) of the wrench samples."""
        forces, torques, stamps = [], [], []
        if schema.TOPIC_WRENCH in self._connections:
            for r in self.iter_messages([schema.TOPIC_WRENCH]):
                f, t = r.message.wrench.force, r.message.wrench.torque
                forces.append((f.x, f.y, f.z))
                torques.append((t.x, t.y, t.z))
                stamps.append(stamp_to_ns(r.message.header.stamp))
        return (
            np.array(forces, dtype=np.float64).reshape(-1, 3),
            np.array(torques, dtype=np.float64).reshape(-1, 3),
            np.array(stamps, dtype=np.int64),
        )
