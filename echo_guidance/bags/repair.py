"""Repair of demonstration bags cut off by a killed recorder or a power loss.

A cut-off bag has an MCAP file without summary and footer, possibly ending in a partial record,
and a metadata.yaml still marked "in progress" (or none at all). ``repair_bag`` keeps every
complete message up to the first damaged byte, writes a new complete MCAP file and a finalised
metadata.yaml, and keeps the original files in a ``repair-backup-<time>/`` folder inside the bag:
recorded data is never deleted. Running it on a complete bag changes nothing.

Do not repair a bag that is still being recorded: the recorder would go on writing into the
backed-up file.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from echo_guidance.bags import _metadata, schema
from echo_guidance.bags.reader import CorruptBagError, NotABagError, UnknownSchemaVersionError

_MAGIC = b'\x89MCAP0\r\n'
_OP_FOOTER = 0x02
_OP_LAST_DEFINED = 0x0F
# A single record larger than this is taken as a damaged length field, not data.
_MAX_RECORD_BYTES = 2**31


@dataclass
class RepairReport:
    """What repair_bag found and did.

    Attributes:
        bag_path: the bag directory.
        action: 'none' (already complete), 'metadata_rebuilt' (MCAP complete, metadata.yaml was
            unfinished or missing) or 'rewritten' (MCAP was cut off and has been rewritten).
        message_counts: topic -> messages in the bag after the repair.
        bytes_kept: bytes of the original MCAP file that held complete records.
        bytes_discarded: bytes after the last complete record (a partial record, garbage or zeros).
        backup_dir: folder holding the original files, or None when nothing was changed.
        detail: where and why reading stopped.
    """

    bag_path: str
    action: str
    message_counts: dict = field(default_factory=dict)
    bytes_kept: int = 0
    bytes_discarded: int = 0
    backup_dir: str | None = None
    detail: str = ''

    def summary(self):
        """Return a human-readable multi-line summary."""
        lines = [f'bag: {self.bag_path}', f'action: {self.action}']
        total = sum(self.message_counts.values())
        lines.append(
            f'messages: {total} (' + ', '.join(f'{t}: {n}' for t, n in self.message_counts.items()) + ')'
        )
        if self.action == 'rewritten':
            lines.append(
                f'kept {self.bytes_kept} bytes of complete records, discarded {self.bytes_discarded} '
                'trailing bytes'
            )
        if self.backup_dir:
            lines.append(f'original files kept in: {self.backup_dir}')
        if self.detail:
            lines.append(f'detail: {self.detail}')
        return '\n'.join(lines)


def scan_mcap_framing(mcap_path):
    """Walk the MCAP record framing without decoding bodies.

    Returns:
        (end of the last complete record, whether the file ends with a valid footer and magic,
        reason reading stopped).

    Raises:
        CorruptBagError: the file does not start with the MCAP magic (nothing can be recovered).
    """
    size = os.path.getsize(mcap_path)
    with open(mcap_path, 'rb') as handle:
        if handle.read(8) != _MAGIC:
            raise CorruptBagError(
                f'{mcap_path}: does not start with the MCAP magic bytes ({size} bytes); '
                'no records can be recovered from it'
            )
        offset = 8
        while True:
            handle.seek(offset)
            head = handle.read(9)
            if len(head) < 9:
                reason = 'end of file' if not head else f'partial record header at byte {offset}'
                return offset, False, reason
            opcode, length = struct.unpack('<BQ', head)
            if opcode == 0 or (_OP_LAST_DEFINED < opcode < 0x80):
                return (
                    offset,
                    False,
                    f'invalid record opcode {opcode:#04x} at byte {offset} (garbage or zeros)',
                )
            if length > _MAX_RECORD_BYTES or offset + 9 + length > size:
                return (
                    offset,
                    False,
                    (
                        f'record at byte {offset} (opcode {opcode:#04x}) declares {length} bytes, '
                        f'only {size - offset - 9} remain: cut off mid-record'
                    ),
                )
            offset += 9 + length
            if opcode == _OP_FOOTER:
                handle.seek(offset)
                if handle.read(8) == _MAGIC:
                    return offset + 8, True, 'complete file'
                return offset, False, f'footer at byte {offset - 9 - length} without closing magic'


class _LimitedReader(io.RawIOBase):
    """A read-only view of the first ``limit`` bytes of a binary file."""

    def __init__(self, handle, limit):
        self._handle = handle
        self._remaining = limit

    def readable(self):
        return True

    def readinto(self, buffer):
        count = min(len(buffer), self._remaining)
        if count <= 0:
            return 0
        data = self._handle.read(count)
        buffer[: len(data)] = data
        self._remaining -= len(data)
        return len(data)


def _read_records(mcap_path, limit):
    """Yield the records of the first ``limit`` bytes (all complete) of an MCAP file, in file order."""
    from mcap.exceptions import EndOfFile
    from mcap.stream_reader import StreamReader

    with open(mcap_path, 'rb') as handle:
        reader = StreamReader(io.BufferedReader(_LimitedReader(handle, limit)), validate_crcs=False)
        try:
            yield from reader.records
        except EndOfFile:
            return


def _find_mcap(bag_dir, metadata):
    if metadata:
        names = metadata.get('relative_file_paths') or []
        if len(names) == 1 and (bag_dir / Path(names[0]).name).is_file():
            return bag_dir / Path(names[0]).name
    candidates = sorted(bag_dir.glob('*.mcap'))
    if len(candidates) != 1:
        raise NotABagError(
            f'{bag_dir}: expected exactly one .mcap file to repair, found {[c.name for c in candidates]}'
        )
    return candidates[0]


def _load_metadata_if_any(bag_dir):
    try:
        return _metadata.load_metadata(bag_dir)
    except (OSError, ValueError):
        return None


def _collect(mcap_path, limit):
    """Decode the complete records; return header, schemas, channels, metadata, messages, stop reason."""
    from mcap.records import Channel, Header, Message, Metadata, Schema

    header, schemas, channels, metadata_records, messages = None, {}, {}, [], []
    store = None
    last_log_time = -1
    reason = ''
    for record in _read_records(mcap_path, limit):
        if isinstance(record, Header):
            header = record
        elif isinstance(record, Schema):
            schemas[record.id] = record
            store = None
        elif isinstance(record, Channel):
            channels[record.id] = record
        elif isinstance(record, Metadata):
            metadata_records.append(record)
        elif isinstance(record, Message):
            channel = channels.get(record.channel_id)
            if channel is None or channel.schema_id not in schemas:
                reason = (
                    f'message {len(messages)} refers to unknown channel {record.channel_id}; stopped there'
                )
                break
            if record.log_time < last_log_time:
                reason = f'message {len(messages)} goes back in log time; stopped there'
                break
            if store is None:
                store = schema.typestore_from_definitions(
                    (s.name, s.data.decode()) for s in schemas.values() if s.encoding == 'ros2msg'
                )
            try:
                store.deserialize_cdr(record.data, schemas[channel.schema_id].name)
            except Exception as exc:  # noqa: BLE001 (any decoding failure marks the damaged point)
                reason = f'message {len(messages)} on {channel.topic} does not decode ({exc}); stopped there'
                break
            last_log_time = record.log_time
            messages.append(record)
    return header, schemas, channels, metadata_records, messages, reason


def _schema_version(metadata_records, yaml_metadata, bag_dir):
    version = None
    for record in metadata_records:
        if record.name == schema.MCAP_METADATA_NAME:
            version = record.metadata.get('schema_version')
    if version is None and yaml_metadata:
        version = (yaml_metadata.get('custom_data') or {}).get(schema.KEY_SCHEMA_VERSION)
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


def _type_hashes(schemas, channels):
    hashes = {}
    for channel in channels.values():
        if channel.schema_id in schemas and channel.metadata.get('topic_type_hash'):
            hashes[schemas[channel.schema_id].name] = channel.metadata['topic_type_hash']
    store = schema.get_typestore()
    for msgtype in schema.TOPIC_TYPES.values():
        if msgtype not in hashes:
            hashes[msgtype] = store.hash_rihs01(msgtype)
    return hashes


def _counts_and_times(channels, messages):
    counts = dict.fromkeys(schema.TOPIC_TYPES, 0)
    for message in messages:
        topic = channels[message.channel_id].topic
        counts[topic] = counts.get(topic, 0) + 1
    first = messages[0].log_time if messages else 0
    last = messages[-1].log_time if messages else 0
    return counts, first, last


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


def _write_mcap(target, header, schemas, channels, metadata_records, messages):
    from mcap.writer import CompressionType, Writer

    store = schema.get_typestore()
    with open(target, 'wb') as stream:
        writer = Writer(stream, use_chunking=False, compression=CompressionType.NONE)
        library = (header.library if header else 'unknown') + ' (repaired by echo_guidance)'
        writer.start(profile=header.profile if header else schema.MCAP_PROFILE, library=library)
        for record in metadata_records:
            writer.add_metadata(record.name, record.metadata)
        schema_ids = {}
        for old_id, record in schemas.items():
            schema_ids[old_id] = writer.register_schema(record.name, record.encoding, record.data)
        channel_ids = {}
        topics = set()
        for old_id, record in channels.items():
            channel_ids[old_id] = writer.register_channel(
                record.topic, record.message_encoding, schema_ids.get(record.schema_id, 0), record.metadata
            )
            topics.add(record.topic)
        # Channels a cut-off file never got to are added so the bag has every topic of the format.
        names = {record.name: new for record, new in zip(schemas.values(), schema_ids.values())}
        for topic, msgtype in schema.TOPIC_TYPES.items():
            if topic in topics:
                continue
            if msgtype not in names:
                definition, _ = store.generate_msgdef(msgtype, ros_version=2)
                names[msgtype] = writer.register_schema(msgtype, 'ros2msg', definition.encode())
            writer.register_channel(
                topic,
                schema.SERIALIZATION,
                names[msgtype],
                {
                    'offered_qos_profiles': _metadata.qos_for_mcap_channel(topic),
                    'topic_type_hash': store.hash_rihs01(msgtype),
                },
            )
        for message in messages:
            writer.add_message(
                channel_ids[message.channel_id],
                message.log_time,
                message.data,
                message.publish_time,
                message.sequence,
            )
        writer.finish()
        stream.flush()
        os.fsync(stream.fileno())


def repair_bag(path):
    """Make a cut-off demonstration bag complete; return a RepairReport. Idempotent.

    Raises:
        NotABagError: not a directory, no single .mcap file, or not an echo_guidance bag.
        CorruptBagError: the MCAP file does not even start like one.
        UnknownSchemaVersionError: the bag was written with an unknown schema version.
    """
    bag_dir = Path(path)
    if not bag_dir.is_dir():
        raise NotABagError(
            f'{bag_dir} is not a directory; a demonstration bag is a directory with metadata.yaml '
            'and one .mcap file'
        )
    yaml_metadata = _load_metadata_if_any(bag_dir)
    mcap_path = _find_mcap(bag_dir, yaml_metadata)
    size = mcap_path.stat().st_size
    kept, complete, reason = scan_mcap_framing(mcap_path)
    state = ((yaml_metadata or {}).get('custom_data') or {}).get(schema.KEY_STATE)

    header, schemas, channels, metadata_records, messages, decode_stop = _collect(mcap_path, kept)
    _schema_version(metadata_records, yaml_metadata, bag_dir)
    counts, first, last = _counts_and_times(channels, messages)
    hashes = _type_hashes(schemas, channels)

    if complete and not decode_stop and state in (schema.STATE_COMPLETE, schema.STATE_REPAIRED):
        return RepairReport(str(bag_dir), 'none', counts, kept, 0, None, 'bag is already complete')

    backup_dir = _make_backup_dir(bag_dir)
    metadata_file = bag_dir / _metadata.METADATA_FILE
    if metadata_file.exists():
        shutil.copy2(metadata_file, backup_dir / metadata_file.name)

    if complete and not decode_stop:
        action = 'metadata_rebuilt'
        previous = f'marked {state}' if state else 'missing or unreadable'
        detail = f'MCAP file was complete; metadata.yaml was {previous}'
        discarded = 0
    else:
        action = 'rewritten'
        detail = decode_stop or reason
        discarded = size - kept
        repairing = mcap_path.with_name(mcap_path.name + '.repairing')
        _write_mcap(repairing, header, schemas, channels, metadata_records, messages)
        _preserve(mcap_path, backup_dir)
        os.replace(repairing, mcap_path)
        counts = dict.fromkeys(schema.TOPIC_TYPES, 0) | counts

    note = f'{action} {time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}: {detail}'
    document = _metadata.build_metadata(
        mcap_path.name, counts, hashes, first, last, schema.STATE_REPAIRED, {schema.KEY_REPAIR: note}
    )
    _metadata.write_metadata_atomic(bag_dir, document)
    return RepairReport(str(bag_dir), action, counts, kept, discarded, str(backup_dir), detail)
