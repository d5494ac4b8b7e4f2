"""Repair of demonstration bags: cut off by a killed recorder or power loss, or damaged on disk.

``repair_bag`` walks the MCAP records of the bag (``_mcap.walk``): every record must parse, and
every message must be on a known channel, decode with its type and hold plausible values (finite
unit-quaternion poses, frames of the session's size, ...). At a damaged record it resynchronises:
it searches forward for the next byte where a valid record starts that is followed by another
valid record, and goes on from there, so every intact message after a damaged region is kept. Lost
schema or channel records are taken from the file's summary, or from the format's own definitions.
Frames left without a ``/recorder/synced_pose`` (cut off while waiting for a pose, or whose synced
pose was damaged) get one with ``valid = false`` so the repaired bag is consistent.

The result is a new complete MCAP file (with data and summary checksums) and a finalised
metadata.yaml. The damaged input is never modified: by default the repaired files replace it
inside the bag and the original files are kept in a ``repair-backup-<time>/`` folder; with ``out``
the repaired bag is written to a new directory and the input is left as it is. Running it on an
intact bag changes nothing.

Do not repair a bag that is still being recorded: the recorder would go on writing into the
backed-up file.
"""

from __future__ import annotations

import bisect
import math
import os
import shutil
import struct
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from echo_guidance.bags import _mcap, _metadata, schema
from echo_guidance.bags.errors import (
    EXIT_NOT_A_BAG,
    CorruptBagError,
    NotABagError,
    UnknownSchemaVersionError,
)
from echo_guidance.bags.integrity import CHECKSUMS_KEY, CHECKSUMS_MARK

_REPAIRED_SUFFIX = ' (repaired by echo_guidance)'
# Plausibility limits of decoded values: beyond them a field must have been damaged.
_MAX_POSITION_M = 100.0
_MAX_WRENCH = 1e6
_QUATERNION_TOLERANCE = 1e-6
_PEDAL_CODES = range(1, 7)
# A recorder logs a message when it receives it: its stamp (acquisition time) is never hours away.
_MAX_STAMP_TO_LOG_NS = 3600 * 1_000_000_000
_EXAMPLES = 5


class UnrecoverableBagError(CorruptBagError):
    """Nothing in the bag's MCAP file can be recovered (no valid record at all)."""

    exit_code = EXIT_NOT_A_BAG


@dataclass
class RepairReport:
    """What repair_bag found and did.

    Attributes:
        bag_path: the bag directory repaired.
        action: 'none' (already complete), 'metadata_rebuilt' (MCAP intact, metadata.yaml was
            unfinished, damaged or missing) or 'rewritten' (a new MCAP file was written).
        message_counts: topic -> messages in the repaired bag.
        bytes_kept: bytes of the original MCAP file that held valid records.
        bytes_discarded: bytes in damaged regions (partial records, garbage, zeros).
        backup_dir: folder holding the original files (in-place repair), or None.
        detail: what was found, in one paragraph.
        output_path: the repaired bag (``bag_path``, or the ``out`` directory).
        damaged_regions: [(start, end, reason)] byte ranges of the original that held no valid record.
        dropped_messages: [(offset, reason)] records that parsed but were not kept (damaged content).
        synced_poses_added: frames given a ``valid = false`` synced pose.
        checksums: the original file's data checksum: 'verified', 'mismatch', 'absent' or 'unknown'.
    """

    bag_path: str
    action: str
    message_counts: dict = field(default_factory=dict)
    bytes_kept: int = 0
    bytes_discarded: int = 0
    backup_dir: str | None = None
    detail: str = ''
    output_path: str = ''
    damaged_regions: list = field(default_factory=list)
    dropped_messages: list = field(default_factory=list)
    synced_poses_added: int = 0
    checksums: str = 'unknown'

    def summary(self):
        """Return a human-readable multi-line summary."""
        lines = [f'bag: {self.bag_path}', f'action: {self.action}']
        if self.output_path and self.output_path != self.bag_path:
            lines.append(f'repaired bag: {self.output_path}')
        total = sum(self.message_counts.values())
        lines.append(
            f'messages: {total} (' + ', '.join(f'{t}: {n}' for t, n in self.message_counts.items()) + ')'
        )
        if self.action == 'rewritten':
            lines.append(
                f'kept {self.bytes_kept} bytes of valid records, skipped {self.bytes_discarded} bytes in '
                f'{len(self.damaged_regions)} damaged region(s)'
            )
            for start, end, reason in self.damaged_regions[:_EXAMPLES]:
                lines.append(f'  skipped bytes {start}-{end} ({end - start} bytes): {reason}')
            if len(self.damaged_regions) > _EXAMPLES:
                lines.append(f'  ... and {len(self.damaged_regions) - _EXAMPLES} more region(s)')
            if self.dropped_messages:
                lines.append(f'dropped {len(self.dropped_messages)} message(s) whose content is damaged:')
                for offset, reason in self.dropped_messages[:_EXAMPLES]:
                    lines.append(f'  record at byte {offset}: {reason}')
            if self.synced_poses_added:
                lines.append(
                    f'added {self.synced_poses_added} synced pose(s) with valid = false for frames that had '
                    'none (kept out of training data)'
                )
        if self.backup_dir:
            lines.append(f'original files kept in: {self.backup_dir}')
        if self.detail:
            lines.append(f'detail: {self.detail}')
        return '\n'.join(lines)


def _find_mcap(bag_dir, metadata):
    names = (metadata or {}).get('relative_file_paths') if isinstance(metadata, dict) else None
    if isinstance(names, list) and len(names) == 1 and isinstance(names[0], str) and names[0]:
        candidate = bag_dir / Path(names[0]).name
        if candidate.is_file():
            return candidate
    candidates = sorted(bag_dir.glob('*.mcap'))
    if len(candidates) != 1:
        raise NotABagError(
            f'{bag_dir}: expected exactly one .mcap file to repair, found {[c.name for c in candidates]}'
        )
    return candidates[0]


def _load_metadata_if_any(bag_dir):
    try:
        metadata = _metadata.load_metadata(bag_dir)
    except (OSError, ValueError):
        return None
    return metadata if isinstance(metadata, dict) else None


def _custom(metadata):
    custom = (metadata or {}).get('custom_data')
    return custom if isinstance(custom, dict) else {}


def _finite(*values):
    return all(isinstance(v, float | int) and math.isfinite(v) for v in values)


def _pose_problem(pose):
    p, q = pose.position, pose.orientation
    if not _finite(p.x, p.y, p.z) or max(abs(p.x), abs(p.y), abs(p.z)) > _MAX_POSITION_M:
        return f'position ({p.x}, {p.y}, {p.z}) m is not plausible'
    if not _finite(q.x, q.y, q.z, q.w) or abs(math.hypot(q.x, q.y, q.z, q.w) - 1) > _QUATERNION_TOLERANCE:
        return f'orientation ({q.x}, {q.y}, {q.z}, {q.w}) is not a unit quaternion'
    return ''


def _stamp_problem(header):
    stamp = header.stamp
    if stamp.sec < 0 or not 0 <= stamp.nanosec < 1_000_000_000:
        return f'stamp ({stamp.sec} s, {stamp.nanosec} ns) is not valid'
    return ''


def content_problem(topic, message, session=None):
    """Return why a decoded message cannot be what the writer wrote ('' when it is plausible)."""
    header = getattr(message, 'header', None)
    if header is not None and (problem := _stamp_problem(header)):
        return problem
    if topic == schema.TOPIC_IMAGE:
        data = message.data
        if message.encoding != schema.IMAGE_ENCODING or message.is_bigendian not in (0, 1):
            return f'encoding {message.encoding!r} is not {schema.IMAGE_ENCODING}'
        if message.step != message.width or len(data) != message.step * message.height or not len(data):
            return f'{message.width}x{message.height} frame with step {message.step} holds {len(data)} bytes'
        if session is not None and (message.width, message.height) != (session.width, session.height):
            size = f'{session.width}x{session.height}'
            return f'frame is {message.width}x{message.height}, the session says {size}'
        return ''
    if topic == schema.TOPIC_PROBE_POSE:
        return _pose_problem(message.pose)
    if topic == schema.TOPIC_SYNCED_POSE:
        if not (_finite(message.gap_before, message.gap_after)):
            return f'gaps {message.gap_before}, {message.gap_after} are not finite'
        return _pose_problem(message.pose)
    if topic == schema.TOPIC_WRENCH:
        force, torque = message.wrench.force, message.wrench.torque
        values = (force.x, force.y, force.z, torque.x, torque.y, torque.z)
        if not _finite(*values) or max(map(abs, values)) > _MAX_WRENCH:
            return f'wrench {values} is not plausible'
        return ''
    if topic == schema.TOPIC_PEDAL:
        return '' if message.event in _PEDAL_CODES else f'pedal event code {message.event} is unknown'
    if topic == schema.TOPIC_SESSION:
        if not (0 < message.width < 2**20 and 0 < message.height < 2**20):
            return f'session frame size {message.width}x{message.height} is not plausible'
        return _pose_problem(message.flange_to_probe)
    return ''


# The channel metadata the rosbag2 MCAP plugin (and this format's writer) stores.
_CHANNEL_KEYS = {'offered_qos_profiles', 'topic_type_hash'}


def _channel_problem(channel):
    """Why a Channel record cannot be one of the format's ('' when it can)."""
    if channel.topic not in schema.TOPIC_TYPES or channel.message_encoding != schema.SERIALIZATION:
        return f'names an unknown topic {channel.topic!r} ({channel.message_encoding!r})'
    msgtype = schema.TOPIC_TYPES[channel.topic]
    if set(channel.metadata) != _CHANNEL_KEYS:
        return f'holds metadata keys {sorted(channel.metadata)}, not {sorted(_CHANNEL_KEYS)}'
    recorded = channel.metadata['topic_type_hash']
    if recorded != schema.get_typestore().hash_rihs01(msgtype):
        return f'holds type hash {recorded!r}, not that of {msgtype}'
    try:
        from rosbags.rosbag2.metadata import parse_qos

        parse_qos(yaml.safe_load(channel.metadata['offered_qos_profiles']) or [])
    except Exception as exc:  # noqa: BLE001 (QoS that rosbags cannot read is damaged)
        return f'holds QoS profiles rosbags cannot read ({type(exc).__name__})'
    return ''


class _Salvage:
    """Walk an MCAP file, validating every record, and collect what can be kept."""

    def __init__(self, buf, size, found):
        self.buf, self.size, self.found = buf, size, found
        self.header = None
        self.data_schemas, self.data_channels, self.metadata_records = {}, {}, []
        trusted = found.summary_crc == 'verified'
        self.summary_schemas = dict(found.schemas) if trusted else {}
        self.summary_channels = dict(found.channels) if trusted else {}
        self.channel_table = {}
        self.store = None
        self.session = None
        self.enforce_publish_time = True
        self.regions, self.dropped = [], []
        self.other_records = 0
        # Kept messages, in file order.
        self.offsets, self.data_start, self.data_end = array('Q'), array('Q'), array('Q')
        self.channel, self.sequence, self.log_time = array('H'), array('I'), array('Q')
        self.stamp = array('q')

    # ------------------------------------------------------------------------- tables

    def _schema_copy(self, schema_id):
        return self.data_schemas.get(schema_id) or self.summary_schemas.get(schema_id)

    def _channel_ok(self, channel):
        if channel is None or _channel_problem(channel):
            return False
        copy = self._schema_copy(channel.schema_id)
        return copy is None or copy.name == schema.TOPIC_TYPES[channel.topic]

    def resolve_channel(self, channel_id):
        """Return (topic, channel metadata) for a message's channel id, or None."""
        if channel_id in self.channel_table:
            return self.channel_table[channel_id]
        resolved = None
        for copy in (self.data_channels.get(channel_id), self.summary_channels.get(channel_id)):
            if self._channel_ok(copy):
                resolved = (copy.topic, dict(copy.metadata))
                break
        topics = list(schema.TOPIC_TYPES)
        if resolved is None and 1 <= channel_id <= len(topics):
            # Every echo_guidance writer registers the channels in schema.TOPIC_TYPES order.
            resolved = (topics[channel_id - 1], None)
        self.channel_table[channel_id] = resolved
        return resolved

    def definitions(self):
        """Return msgtype -> ros2msg text: the bag's own where it is intact, else the project's."""
        project = schema.get_typestore()
        out = {}
        copies = list(self.data_schemas.values()) + list(self.summary_schemas.values())
        for msgtype in schema.TOPIC_TYPES.values():
            wanted = project.hash_rihs01(msgtype)
            for copy in copies:
                if copy.name != msgtype or copy.encoding != 'ros2msg':
                    continue
                try:
                    text = copy.data.decode()
                    store = schema.typestore_from_definitions([(msgtype, text)])
                    if store.hash_rihs01(msgtype) == wanted:
                        out[msgtype] = text
                        break
                except Exception:  # noqa: BLE001, S112 (a damaged definition is just not used)
                    continue
            if msgtype not in out:
                out[msgtype] = project.generate_msgdef(msgtype, ros_version=2)[0]
        return out

    # ------------------------------------------------------------------------- validation

    def validate(self, record):
        """The walk's check of a parsed record: '' to accept it, else why it is damaged."""
        opcode, body = record.opcode, record.body
        if opcode == _mcap.OP_MESSAGE:
            return self._validate_message(body)
        if opcode == _mcap.OP_SCHEMA:
            if body.name not in schema.TOPIC_TYPES.values() or body.encoding != 'ros2msg':
                return f'names an unknown type {body.name!r} ({body.encoding!r})'
            self.data_schemas.setdefault(body.id, body)
        elif opcode == _mcap.OP_CHANNEL:
            problem = _channel_problem(body)
            if problem:
                return problem
            self.data_channels.setdefault(body.id, body)
        elif opcode == _mcap.OP_HEADER:
            if self.header is None:
                self.header = body
                self.enforce_publish_time = 'echo_guidance' in body.library
        return ''

    def _validate_message(self, body):
        resolved = self.resolve_channel(body.channel_id)
        if resolved is None:
            return f'is on channel {body.channel_id}, which is not defined'
        topic = resolved[0]
        if self.enforce_publish_time and body.publish_time != body.log_time:
            # echo_guidance writes publish time = log time: a difference is a damaged header.
            return f'has publish time {body.publish_time} != log time {body.log_time}'
        if self.store is None:
            self.store = schema.typestore_from_definitions(self.definitions().items())
        msgtype = schema.TOPIC_TYPES[topic]
        try:
            message = self.store.deserialize_cdr(bytes(self.buf[body.data_start : body.data_end]), msgtype)
        except Exception as exc:  # noqa: BLE001 (any decoding failure marks damaged content)
            return f'on {topic} does not decode as {msgtype} ({type(exc).__name__})'
        problem = content_problem(topic, message, self.session)
        if not problem and topic != schema.TOPIC_SESSION:
            stamp = message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec
            if abs(body.log_time - stamp) > _MAX_STAMP_TO_LOG_NS:
                problem = f'stamp {stamp} ns is {abs(body.log_time - stamp) / 1e9:.0f} s from its log time'
        if problem:
            return f'on {topic}: {problem}'
        if topic == schema.TOPIC_SESSION and self.session is None:
            self.session = message
        return ''

    # ------------------------------------------------------------------------- the walk

    def run(self):
        """Walk the whole file; return self."""
        start = 8 if bytes(self.buf[:8]) == _mcap.MAGIC else 0
        if start == 0:
            self.header = None
        seen_data_end = False
        for event in _mcap.walk(self.buf, self.size, start, validate=self.validate):
            if isinstance(event, _mcap.Damage):
                self.regions.append(tuple(event))
                continue
            opcode, body = event.opcode, event.body
            if opcode == _mcap.OP_MESSAGE:
                self._keep(event)
            elif opcode == _mcap.OP_METADATA and not seen_data_end:
                self.metadata_records.append(body)
            elif opcode == _mcap.OP_DATA_END:
                seen_data_end = True
            elif opcode not in (_mcap.OP_SCHEMA, _mcap.OP_CHANNEL, _mcap.OP_HEADER):
                self.other_records += 1
        self._drop_log_time_outliers()
        self._drop_stamp_outliers()
        return self

    def _keep(self, record):
        body = record.body
        topic = self.channel_table[body.channel_id][0]
        stamp = -1
        if topic in (schema.TOPIC_IMAGE, schema.TOPIC_PROBE_POSE, schema.TOPIC_SYNCED_POSE):
            # CDR: 4-byte encapsulation header, then header.stamp (int32 sec, uint32 nanosec).
            sec, nanosec = struct.unpack_from('<iI', self.buf, body.data_start + 4)
            stamp = sec * 1_000_000_000 + nanosec
        self.offsets.append(record.offset)
        self.data_start.append(body.data_start)
        self.data_end.append(body.data_end)
        self.channel.append(body.channel_id)
        self.sequence.append(body.sequence)
        self.log_time.append(body.log_time)
        self.stamp.append(stamp)

    _FIELDS = ('offsets', 'data_start', 'data_end', 'channel', 'sequence', 'log_time', 'stamp')

    def _remove(self, drop):
        """Remove the kept messages at indices ``drop`` (index -> reason), recording them as dropped."""
        if not drop:
            return
        old = {name: getattr(self, name) for name in self._FIELDS}
        for name in self._FIELDS:
            setattr(self, name, array(old[name].typecode))
        for i in range(len(old['offsets'])):
            if i in drop:
                self.dropped.append((old['offsets'][i], drop[i]))
                continue
            for name in self._FIELDS:
                getattr(self, name).append(old[name][i])

    def _drop_log_time_outliers(self):
        """Keep the longest run of strictly increasing log times (the writer guarantees it)."""
        times = self.log_time
        if all(a < b for a, b in zip(times, times[1:])):
            return
        # Longest strictly increasing subsequence, O(n log n).
        tails, tail_index, parent = [], [], [-1] * len(times)
        for i, value in enumerate(times):
            k = bisect.bisect_left(tails, value)
            if k == len(tails):
                tails.append(value)
                tail_index.append(i)
            else:
                tails[k] = value
                tail_index[k] = i
            parent[i] = tail_index[k - 1] if k else -1
        keep = set()
        i = tail_index[-1]
        while i >= 0:
            keep.add(i)
            i = parent[i]
        reason = 'log time is out of order (damaged header)'
        self._remove({i: reason for i in range(len(times)) if i not in keep})

    def _drop_stamp_outliers(self):
        """Where a topic's stamps go back, drop the message whose stamp is off its log time.

        Frames, probe poses and synced poses are written in stamp order, each with a log time at a
        steady distance from its stamp; a damaged stamp breaks both. Of two messages out of order the
        one farther from the topic's median (log time - stamp) is dropped; when neither is, both are
        kept (the recording itself went back, which ``bag check`` reports).
        """
        topics = self.topics()
        by_topic = np.array(topics, dtype=object)
        stamps = np.frombuffer(self.stamp, dtype=np.int64) if len(self.stamp) else np.zeros(0, np.int64)
        drop = {}
        for topic in (schema.TOPIC_IMAGE, schema.TOPIC_PROBE_POSE, schema.TOPIC_SYNCED_POSE):
            indices = np.flatnonzero(by_topic == topic)
            if len(indices) < 2 or np.all(np.diff(stamps[indices]) > 0):
                continue  # the normal case: nothing goes back
            deviation = self._offset_deviation(topics, topic)
            kept = []
            for i in deviation:
                while kept and self.stamp[kept[-1]] >= self.stamp[i] and deviation[kept[-1]] > deviation[i]:
                    drop[kept.pop()] = f'stamp of this {topic} message goes back (damaged)'
                if kept and self.stamp[kept[-1]] >= self.stamp[i] and deviation[i] > deviation[kept[-1]]:
                    drop[i] = f'stamp of this {topic} message goes back (damaged)'
                    continue
                kept.append(i)
        self._remove(drop)

    # ------------------------------------------------------------------------- results

    def topics(self):
        """Topic of every kept message."""
        return [self.channel_table[c][0] for c in self.channel]

    def counts(self):
        counts = dict.fromkeys(schema.TOPIC_TYPES, 0)
        for topic in self.topics():
            counts[topic] += 1
        return counts

    def channel_metadata(self):
        """Return topic -> channel metadata for the repaired file: the bag's own where intact."""
        project = schema.get_typestore()
        by_topic = {v[0]: v[1] for v in self.channel_table.values() if v is not None and v[1] is not None}
        for channel in list(self.data_channels.values()) + list(self.summary_channels.values()):
            if self._channel_ok(channel):
                by_topic.setdefault(channel.topic, dict(channel.metadata))
        for topic, msgtype in schema.TOPIC_TYPES.items():
            by_topic.setdefault(
                topic,
                {
                    'offered_qos_profiles': _metadata.qos_for_mcap_channel(topic),
                    'topic_type_hash': project.hash_rihs01(msgtype),
                },
            )
        return by_topic

    def _offset_deviation(self, topics, topic):
        """Map index -> |(log time - stamp) - the topic's median| for the kept messages of ``topic``."""
        offsets = {i: self.log_time[i] - self.stamp[i] for i, t in enumerate(topics) if t == topic}
        if not offsets:
            return {}
        median = sorted(offsets.values())[len(offsets) // 2]
        return {i: abs(offset - median) for i, offset in offsets.items()}

    def drop_misstamped_pairs(self):
        """Resolve a frame without synced pose followed by a synced pose that matches no frame.

        The writer gives a synced pose its frame's stamp, so one of the two stamps was damaged: the
        message whose log time is farther from its stamp than is usual on its topic is dropped (neither
        when they are as far). Only where no damaged region lies between them (else the synced pose's
        frame may be among the lost records).
        """
        topics = self.topics()
        frames = {s for s, t in zip(self.stamp, topics) if t == schema.TOPIC_IMAGE}
        synced = {s for s, t in zip(self.stamp, topics) if t == schema.TOPIC_SYNCED_POSE}
        frame_deviation = synced_deviation = None
        damage = sorted(start for start, _, _ in self.regions) + [2**64]
        drop, waiting = {}, None
        for i, (stamp, topic) in enumerate(zip(self.stamp, topics)):
            if topic == schema.TOPIC_IMAGE:
                waiting = None if stamp in synced else i
            elif topic == schema.TOPIC_SYNCED_POSE and stamp not in frames and waiting is not None:
                if damage[bisect.bisect_left(damage, self.offsets[waiting])] > self.offsets[i]:
                    if frame_deviation is None:
                        frame_deviation = self._offset_deviation(topics, schema.TOPIC_IMAGE)
                        synced_deviation = self._offset_deviation(topics, schema.TOPIC_SYNCED_POSE)
                    pair = f'frame stamp {self.stamp[waiting]}, its synced pose stamp {stamp}'
                    if synced_deviation[i] > frame_deviation[waiting]:
                        drop[i] = f'synced pose stamp damaged ({pair})'
                    elif frame_deviation[waiting] > synced_deviation[i]:
                        drop[waiting] = f'frame stamp damaged ({pair})'
                waiting = None
        self._remove(drop)

    def unsynced_frames(self):
        """Return [(log time, frame stamp, gap_before_s, gap_after_s)] for kept frames without a synced pose.

        The log time is the first one free after the frame's that comes before the next synced pose,
        so synced poses stay in frame order (else after the last message).
        """
        topics = self.topics()
        log = self.log_time
        synced = {s for s, t in zip(self.stamp, topics) if t == schema.TOPIC_SYNCED_POSE}
        stamps = np.frombuffer(self.stamp, dtype=np.int64) if len(self.stamp) else np.zeros(0, np.int64)
        poses = np.sort(stamps[np.array(topics, dtype=object) == schema.TOPIC_PROBE_POSE])
        taken, out = set(), []
        for i, (stamp, topic) in enumerate(zip(self.stamp, topics)):
            if topic != schema.TOPIC_IMAGE or stamp in synced:
                continue
            synced.add(stamp)
            k = int(np.searchsorted(poses, stamp, side='right'))
            before = (stamp - int(poses[k - 1])) / 1e9 if k > 0 else -1.0
            j = int(np.searchsorted(poses, stamp, side='left'))
            after = (int(poses[j]) - stamp) / 1e9 if j < len(poses) else -1.0
            slot, j = log[i] + 1, i + 1
            while slot in taken or (j < len(log) and log[j] <= slot):
                if j < len(log) and log[j] <= slot:
                    if topics[j] == schema.TOPIC_SYNCED_POSE and self.stamp[j] >= stamp:
                        slot = None  # no free log time before the next synced pose
                        break
                    slot = max(slot, log[j] + 1)
                    j += 1
                else:
                    slot += 1
            if slot is None:
                slot = max([log[-1]] + list(taken)) + 1
            taken.add(slot)
            out.append((slot, stamp, before, after))
        return sorted(out)


def _schema_version(salvage, yaml_metadata, bag_dir):
    version = None
    for record in salvage.metadata_records:
        if record.name == schema.MCAP_METADATA_NAME:
            version = record.metadata.get('schema_version')
            break
    if version is None:
        version = _custom(yaml_metadata).get(schema.KEY_SCHEMA_VERSION)
    if version is None and salvage.header is not None and 'echo_guidance' in salvage.header.library:
        version = schema.SCHEMA_VERSION  # the only version; the header names this writer
    if version is None:
        raise NotABagError(
            f'{bag_dir}: neither the MCAP file nor metadata.yaml names an echo_guidance schema '
            'version; not a demonstration bag'
        )
    if str(version) not in schema.SUPPORTED_SCHEMA_VERSIONS:
        raise UnknownSchemaVersionError(
            f'{bag_dir}: schema version {version!r} is not supported '
            f'(supported: {schema.SUPPORTED_SCHEMA_VERSIONS})'
        )
    return str(version)


def _type_hashes():
    store = schema.get_typestore()
    return {msgtype: store.hash_rihs01(msgtype) for msgtype in schema.TOPIC_TYPES.values()}


def _make_backup_dir(bag_dir):
    stamp = time.strftime('%Y%m%dT%H%M%S', time.gmtime())
    backup = bag_dir / f'repair-backup-{stamp}'
    suffix = 1
    while backup.exists():
        suffix += 1
        backup = bag_dir / f'repair-backup-{stamp}-{suffix}'
    backup.mkdir()
    return backup


def _preserve(source, backup_dir):
    """Keep ``source`` in ``backup_dir``: a hard link where possible (instant), else a copy."""
    target = backup_dir / source.name
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


_SYNCED_TYPE = 'echo_guidance/msg/SyncedPose'


def _invalid_synced_pose(types, stamp, before, after):
    """A SyncedPose with valid = false (identity pose, as the writer stores it) for a frame's stamp."""
    sec, nanosec = divmod(stamp, 1_000_000_000)
    return types[_SYNCED_TYPE](
        header=types['std_msgs/msg/Header'](
            stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec),
            frame_id=schema.FRAME_ID_BASE,
        ),
        pose=types['geometry_msgs/msg/Pose'](
            position=types['geometry_msgs/msg/Point'](x=0.0, y=0.0, z=0.0),
            orientation=types['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0),
        ),
        valid=False,
        gap_before=float(before),
        gap_after=float(after),
    )


def _write_mcap(target, salvage, version, added):
    """Write the kept records (and the added synced poses) as a complete MCAP file with checksums."""
    from mcap.writer import CompressionType, Writer

    definitions = salvage.definitions()
    project = schema.get_typestore()
    buf = salvage.buf
    with open(target, 'wb') as stream:
        writer = Writer(stream, use_chunking=False, compression=CompressionType.NONE, enable_data_crcs=True)
        library = salvage.header.library if salvage.header else 'unknown writer'
        writer.start(
            profile=schema.MCAP_PROFILE,
            library=library if library.endswith(_REPAIRED_SUFFIX) else library + _REPAIRED_SUFFIX,
        )
        records = [r for r in salvage.metadata_records if r.name != schema.MCAP_METADATA_NAME]
        ours = next((r.metadata for r in salvage.metadata_records if r.name == schema.MCAP_METADATA_NAME), {})
        ours = dict(ours) | {'schema_version': version, CHECKSUMS_KEY: CHECKSUMS_MARK}
        ours.setdefault('ros_distro', schema.ROS_DISTRO)
        schema_ids, channel_ids = {}, {}
        channel_metadata = salvage.channel_metadata()
        for topic, msgtype in schema.TOPIC_TYPES.items():
            if msgtype not in schema_ids:
                text = definitions[msgtype].encode()
                schema_ids[msgtype] = writer.register_schema(msgtype, 'ros2msg', text)
            channel_ids[topic] = writer.register_channel(
                topic, schema.SERIALIZATION, schema_ids[msgtype], channel_metadata[topic]
            )
        # After the schemas and channels, as the bag writer does: the mcap writer buffers those until
        # the next record, and a file without messages would otherwise miss them (and its checksum).
        writer.add_metadata(schema.MCAP_METADATA_NAME, ours)
        for record in records:
            writer.add_metadata(record.name, record.metadata)
        topics = salvage.topics()
        types = project.types
        synced = [s for s, t in zip(salvage.sequence, topics) if t == schema.TOPIC_SYNCED_POSE]
        sequence = max(synced, default=-1)
        pending = list(added)
        for i, topic in enumerate(topics + [None]):
            log_time = salvage.log_time[i] if topic is not None else None
            while pending and (log_time is None or pending[0][0] < log_time):
                slot, stamp, before, after = pending.pop(0)
                sequence += 1
                data = project.serialize_cdr(_invalid_synced_pose(types, stamp, before, after), _SYNCED_TYPE)
                channel = channel_ids[schema.TOPIC_SYNCED_POSE]
                writer.add_message(channel, slot, data, slot, sequence & 0xFFFFFFFF)
            if topic is not None:
                data = bytes(buf[salvage.data_start[i] : salvage.data_end[i]])
                writer.add_message(channel_ids[topic], log_time, data, log_time, salvage.sequence[i])
        writer.finish()
        stream.flush()
        os.fsync(stream.fileno())


def _build_metadata(salvage, mcap_name, counts, times, state, extra=None):
    qos = {topic: m.get('offered_qos_profiles', '') for topic, m in salvage.channel_metadata().items()}
    start, end = (times[0], times[-1]) if times else (0, 0)
    return _metadata.build_metadata(mcap_name, counts, _type_hashes(), start, end, state, extra, qos)


def _metadata_is_consistent(salvage, yaml_metadata, mcap_name, counts, times):
    """Whether metadata.yaml is a finished document that agrees with the MCAP file and rosbags reads."""
    if yaml_metadata is None:
        return False
    state = _custom(yaml_metadata).get(schema.KEY_STATE)
    expected = next(iter(_build_metadata(salvage, mcap_name, counts, times, state).values()))
    if _metadata.metadata_mismatch(yaml_metadata, expected):
        return False
    try:
        from rosbags.rosbag2.metadata import parse_qos

        for entry in yaml_metadata['topics_with_message_count']:
            parse_qos(entry['topic_metadata'].get('offered_qos_profiles', []))
    except Exception:  # noqa: BLE001 (whatever rosbags cannot parse is rebuilt)
        return False
    return True


def _kept_extras(yaml_metadata):
    """custom_data entries worth keeping when metadata.yaml is rebuilt (count of clamped log times)."""
    value = _custom(yaml_metadata).get(schema.KEY_LOG_TIME_CLAMPED)
    return {schema.KEY_LOG_TIME_CLAMPED: value} if str(value).isdigit() else {}


def _describe(salvage, found, added, state, size):
    parts = []
    if found.problem:
        unlocated = found.data_crc == 'mismatch' or found.offset is None
        parts.append(found.problem if unlocated else f'{found.problem} (at byte {found.offset})')
    elif state == schema.STATE_IN_PROGRESS:
        parts.append('metadata.yaml said the recording was in progress')
    if salvage.regions:
        first = salvage.regions[0]
        cut = len(salvage.regions) == 1 and first[1] == size
        what = 'cut off' if cut else f'{len(salvage.regions)} damaged region(s), first'
        parts.append(f'{what} at byte {first[0]}: {first[2]}')
    if salvage.dropped:
        parts.append(f'{len(salvage.dropped)} message(s) with damaged content dropped')
    if found.data_crc == 'mismatch' and not salvage.regions and not salvage.dropped:
        parts.append(
            'bytes changed inside records that still parse and decode: the damage cannot be located in '
            'an unchunked file, so every message was kept'
        )
    if added:
        parts.append(f'{len(added)} frame(s) without synced pose got one with valid = false')
    if not any(t == schema.TOPIC_SESSION for t in salvage.topics()):
        parts.append(f'the {schema.TOPIC_SESSION} message was lost: the bag cannot be used for training')
    return '; '.join(parts) or 'bag was already complete'


def repair_bag(path, out=None):
    """Make a cut-off or damaged demonstration bag complete; return a RepairReport. Idempotent.

    Args:
        path: the bag directory.
        out: write the repaired bag to this new directory and leave ``path`` untouched; default:
            replace the files in ``path``, keeping the originals in ``path/repair-backup-<time>/``.

    Raises:
        NotABagError: not a directory, no single .mcap file, or not an echo_guidance bag.
        UnrecoverableBagError: the MCAP file holds no valid record at all.
        UnknownSchemaVersionError: the bag was written with an unknown schema version.
    """
    bag_dir = Path(path)
    if not bag_dir.is_dir():
        raise NotABagError(
            f'{bag_dir} is not a directory; a demonstration bag is a directory with metadata.yaml '
            'and one .mcap file'
        )
    out_dir = Path(out) if out is not None else None
    if out_dir is not None and out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise NotABagError(f'{out_dir} exists and is not an empty directory; refusing to overwrite it')
    yaml_metadata = _load_metadata_if_any(bag_dir)
    mcap_path = _find_mcap(bag_dir, yaml_metadata)
    state = _custom(yaml_metadata).get(schema.KEY_STATE)
    with _mcap.mapped(mcap_path) as (buf, size):
        found = _mcap.check_file(buf, size)
        salvage = _Salvage(buf, size, found).run()
        if salvage.header is None and not len(salvage.channel) and not salvage.data_channels:
            raise UnrecoverableBagError(
                f'{mcap_path}: '
                + ('the file is empty' if size == 0 else 'does not start with the MCAP magic bytes')
                + f' and holds no valid MCAP record ({size} bytes); nothing can be recovered from it'
            )
        version = _schema_version(salvage, yaml_metadata, bag_dir)
        intact = not found.problem and not salvage.regions and not salvage.dropped
        if not intact:
            salvage.drop_misstamped_pairs()
        counts = salvage.counts()
        resumed = not intact or state == schema.STATE_REPAIRED
        added = salvage.unsynced_frames() if resumed else []
        times = sorted(list(salvage.log_time) + [slot for slot, *_ in added])
        kept_times = list(salvage.log_time)
        metadata_ok = _metadata_is_consistent(salvage, yaml_metadata, mcap_path.name, counts, kept_times)
        if intact and not added:
            action = 'none' if metadata_ok else 'metadata_rebuilt'
        else:
            action = 'rewritten'
        discarded = sum(end - start for start, end, _ in salvage.regions)
        detail = _describe(salvage, found, added, state, size)
        if action == 'metadata_rebuilt':
            previous = f'marked {state}' if state else 'missing or unreadable'
            detail = f'MCAP file was complete; metadata.yaml was {previous} or did not match it'
        report = RepairReport(
            str(bag_dir),
            action,
            counts,
            size - discarded,
            discarded,
            None,
            detail,
            str(out_dir or bag_dir),
            list(salvage.regions),
            list(salvage.dropped),
            len(added),
            found.data_crc,
        )
        if action == 'none' and out_dir is None:
            return report
        target_dir = out_dir or bag_dir
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        mcap_name = f'{out_dir.name}_0.mcap' if out_dir is not None else mcap_path.name
        if out_dir is None:
            backup_dir = _make_backup_dir(bag_dir)
            report.backup_dir = str(backup_dir)
            metadata_file = bag_dir / _metadata.METADATA_FILE
            if metadata_file.exists():
                shutil.copy2(metadata_file, backup_dir / metadata_file.name)
        if action == 'rewritten':
            repairing = target_dir / (mcap_name + '.repairing')
            _write_mcap(repairing, salvage, version, added)
            if out_dir is None:
                _preserve(mcap_path, Path(report.backup_dir))
            os.replace(repairing, target_dir / mcap_name)
            counts[schema.TOPIC_SYNCED_POSE] += len(added)
        elif out_dir is not None:
            shutil.copy2(mcap_path, target_dir / mcap_name)
    if action == 'none':
        # Copied to ``out`` unchanged but for the MCAP file's new name.
        state = state if state in (schema.STATE_COMPLETE, schema.STATE_REPAIRED) else schema.STATE_REPAIRED
        extras = _kept_extras(yaml_metadata)
        if _custom(yaml_metadata).get(schema.KEY_REPAIR):
            extras[schema.KEY_REPAIR] = _custom(yaml_metadata)[schema.KEY_REPAIR]
    else:
        state = schema.STATE_REPAIRED
        when = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
        extras = {schema.KEY_REPAIR: f'{action} {when}: {detail}'}
        if action == 'metadata_rebuilt':
            extras.update(_kept_extras(yaml_metadata))
    document = _build_metadata(salvage, mcap_name, counts, times, state, extras)
    _metadata.write_metadata_atomic(target_dir, document)
    report.message_counts = counts
    return report
