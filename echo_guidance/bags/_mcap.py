"""Strict, bounds-checked reading of MCAP record framing, checksums and resynchronisation.

Written from the MCAP specification (https://mcap.dev/spec) for integrity checks and repair: every
length and string is checked against the bytes that are really there, so damaged input raises
:class:`MalformedRecord` (or yields a :class:`Damage`), never an arbitrary exception and never a
huge allocation. Nothing here knows about demonstration bags; :mod:`echo_guidance.bags.integrity`
and :mod:`echo_guidance.bags.repair` add that.

Checksums, as the ``mcap`` library writes and validates them (``StreamReader(validate_crcs=True)``):

* ``DataEnd.data_section_crc``: CRC-32 of every byte of the file before the DataEnd record,
  leading magic included (0: not computed).
* ``Footer.summary_crc``: CRC-32 from the start of the summary section (or of the footer when there
  is no summary) up to and including the footer's ``summary_offset_start`` field (0: not computed).
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import zlib
from collections import namedtuple
from contextlib import contextmanager

MAGIC = b'\x89MCAP0\r\n'

OP_HEADER = 0x01
OP_FOOTER = 0x02
OP_SCHEMA = 0x03
OP_CHANNEL = 0x04
OP_MESSAGE = 0x05
OP_CHUNK = 0x06
OP_MESSAGE_INDEX = 0x07
OP_CHUNK_INDEX = 0x08
OP_ATTACHMENT = 0x09
OP_ATTACHMENT_INDEX = 0x0A
OP_STATISTICS = 0x0B
OP_METADATA = 0x0C
OP_METADATA_INDEX = 0x0D
OP_SUMMARY_OFFSET = 0x0E
OP_DATA_END = 0x0F

OPCODE_NAMES = {
    OP_HEADER: 'Header',
    OP_FOOTER: 'Footer',
    OP_SCHEMA: 'Schema',
    OP_CHANNEL: 'Channel',
    OP_MESSAGE: 'Message',
    OP_CHUNK: 'Chunk',
    OP_MESSAGE_INDEX: 'MessageIndex',
    OP_CHUNK_INDEX: 'ChunkIndex',
    OP_ATTACHMENT: 'Attachment',
    OP_ATTACHMENT_INDEX: 'AttachmentIndex',
    OP_STATISTICS: 'Statistics',
    OP_METADATA: 'Metadata',
    OP_METADATA_INDEX: 'MetadataIndex',
    OP_SUMMARY_OFFSET: 'SummaryOffset',
    OP_DATA_END: 'DataEnd',
}

RECORD_HEAD = 9  # opcode (1) + content length (8)
FOOTER_BYTES = RECORD_HEAD + 20
DATA_END_BYTES = RECORD_HEAD + 4
_MESSAGE_FIXED = 22  # channel id, sequence, log time, publish time
_CRC_BLOCK = 16 * 2**20

Header = namedtuple('Header', 'profile library')
Footer = namedtuple('Footer', 'summary_start summary_offset_start summary_crc')
Schema = namedtuple('Schema', 'id name encoding data')
Channel = namedtuple('Channel', 'id schema_id topic message_encoding metadata')
#: A message's payload is ``buf[data_start:data_end]`` (not copied).
Message = namedtuple('Message', 'channel_id sequence log_time publish_time data_start data_end')
Statistics = namedtuple(
    'Statistics',
    'message_count schema_count channel_count attachment_count metadata_count chunk_count '
    'message_start_time message_end_time channel_message_counts',
)
Metadata = namedtuple('Metadata', 'name metadata')
SummaryOffset = namedtuple('SummaryOffset', 'group_opcode group_start group_length')
DataEnd = namedtuple('DataEnd', 'data_section_crc')
#: Records parsed for validity only (chunks, indexes, attachments): echo_guidance does not use them.
Other = namedtuple('Other', 'name')

#: One record: its first byte, the byte after it, the opcode and the parsed content.
Record = namedtuple('Record', 'offset end opcode body')
#: Bytes ``[start, end)`` that hold no valid record; ``reason`` says what was found at ``start``.
Damage = namedtuple('Damage', 'start end reason')


class MalformedRecord(ValueError):
    """Bytes that are not a valid MCAP record; ``offset`` is where the record starts."""

    def __init__(self, offset, reason):
        self.offset = offset
        self.reason = reason
        super().__init__(f'byte {offset}: {reason}')


class _Short(Exception):
    """A field runs past the end of its record (internal)."""


class _Cursor:
    """Bounds-checked little-endian reads inside one record's content."""

    __slots__ = ('buf', 'pos', 'end')

    def __init__(self, buf, start, end):
        self.buf, self.pos, self.end = buf, start, end

    def take(self, count):
        start = self.pos
        if count < 0 or start + count > self.end:
            raise _Short
        self.pos = start + count
        return start

    def unpack(self, fmt, size):
        return struct.unpack_from(fmt, self.buf, self.take(size))

    def u8(self):
        return self.unpack('<B', 1)[0]

    def u16(self):
        return self.unpack('<H', 2)[0]

    def u32(self):
        return self.unpack('<I', 4)[0]

    def u64(self):
        return self.unpack('<Q', 8)[0]

    def raw(self, count):
        start = self.take(count)
        return bytes(self.buf[start : start + count])

    def string(self):
        return self.raw(self.u32()).decode('utf-8')

    def string_map(self):
        length = self.u32()
        stop = self.pos + length
        if stop > self.end:
            raise _Short
        out = {}
        while self.pos < stop:
            key = self.string()
            out[key] = self.string()
        if self.pos != stop:
            raise _Short
        return out

    def int_map(self, key_fmt, key_size):
        length = self.u32()
        entry = key_size + 8
        if length % entry:
            raise _Short
        out = {}
        for _ in range(length // entry):
            key = self.unpack(key_fmt, key_size)[0]
            out[key] = self.u64()
        return out

    def done(self):
        if self.pos != self.end:
            raise _Short
        return True


def _header(c):
    return Header(c.string(), c.string())


def _footer(c):
    return Footer(c.u64(), c.u64(), c.u32())


def _schema(c):
    return Schema(c.u16(), c.string(), c.string(), c.raw(c.u32()))


def _channel(c):
    return Channel(c.u16(), c.u16(), c.string(), c.string(), c.string_map())


def _message(c):
    channel_id, sequence, log_time, publish_time = c.unpack('<HIQQ', _MESSAGE_FIXED)
    start = c.pos
    c.pos = c.end
    return Message(channel_id, sequence, log_time, publish_time, start, c.end)


def _chunk(c):
    c.unpack('<QQQ', 24)
    crc = c.u32()
    compression = c.string()
    start = c.take(c.u64())
    if compression == '' and crc and zlib.crc32(memoryview(c.buf)[start : c.pos]) != crc:
        raise ValueError('chunk records do not match the chunk checksum')
    return Other('Chunk')


def _message_index(c):
    c.u16()
    length = c.u32()
    if length % 16:
        raise _Short
    c.take(length)
    return Other('MessageIndex')


def _chunk_index(c):
    c.unpack('<QQQQ', 32)
    c.int_map('<H', 2)
    c.u64()
    c.string()
    c.unpack('<QQ', 16)
    return Other('ChunkIndex')


def _attachment(c):
    c.unpack('<QQ', 16)
    c.string()
    c.string()
    c.take(c.u64())
    c.u32()  # CRC of the fields before it; attachments are not used by echo_guidance
    return Other('Attachment')


def _attachment_index(c):
    c.unpack('<QQQQQ', 40)
    c.string()
    c.string()
    return Other('AttachmentIndex')


def _statistics(c):
    fixed = c.unpack('<QHIIII', 26)
    times = c.unpack('<QQ', 16)
    return Statistics(*fixed, *times, c.int_map('<H', 2))


def _metadata(c):
    return Metadata(c.string(), c.string_map())


def _metadata_index(c):
    c.unpack('<QQ', 16)
    c.string()
    return Other('MetadataIndex')


def _summary_offset(c):
    return SummaryOffset(c.u8(), c.u64(), c.u64())


def _data_end(c):
    return DataEnd(c.u32())


_PARSERS = {
    OP_HEADER: _header,
    OP_FOOTER: _footer,
    OP_SCHEMA: _schema,
    OP_CHANNEL: _channel,
    OP_MESSAGE: _message,
    OP_CHUNK: _chunk,
    OP_MESSAGE_INDEX: _message_index,
    OP_CHUNK_INDEX: _chunk_index,
    OP_ATTACHMENT: _attachment,
    OP_ATTACHMENT_INDEX: _attachment_index,
    OP_STATISTICS: _statistics,
    OP_METADATA: _metadata,
    OP_METADATA_INDEX: _metadata_index,
    OP_SUMMARY_OFFSET: _summary_offset,
    OP_DATA_END: _data_end,
}


def parse_record(buf, offset, size):
    """Parse the record starting at ``offset`` of ``buf`` (``size`` bytes); return a Record.

    Every record must be exactly as long as its fields (echo_guidance writes no padding).

    Raises:
        MalformedRecord: unknown opcode, a length beyond the file, or content that does not parse.
    """
    if offset + RECORD_HEAD > size:
        raise MalformedRecord(offset, f'record header cut off ({size - offset} bytes left in the file)')
    opcode, length = struct.unpack_from('<BQ', buf, offset)
    parser = _PARSERS.get(opcode)
    if parser is None:
        what = 'zeros' if opcode == 0 else 'garbage'
        raise MalformedRecord(offset, f'invalid record opcode {opcode:#04x} ({what})')
    start = offset + RECORD_HEAD
    end = start + length
    name = OPCODE_NAMES[opcode]
    if end > size:
        raise MalformedRecord(
            offset, f'{name} record declares {length} bytes, only {size - start} remain in the file'
        )
    cursor = _Cursor(buf, start, end)
    try:
        body = parser(cursor)
        cursor.done()
    except _Short:
        reason = f'{name} record fields do not fit its length of {length} bytes'
        raise MalformedRecord(offset, reason) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRecord(offset, f'{name} record content is invalid ({exc})') from None
    return Record(offset, end, opcode, body)


# A plausible record start: a known opcode and a content length below 4 GiB. Only used to find
# candidates quickly (in C); every candidate is then parsed and validated.
_CANDIDATE = re.compile(rb'[\x01-\x0f][\x00-\xff]{4}\x00\x00\x00\x00', re.DOTALL)


def walk(buf, size, start=8, validate=None):
    """Yield every valid Record of ``buf[start:size]`` in file order and a Damage for every gap.

    A record is accepted when it parses, ``validate(record)`` returns no reason, and the record after
    it is valid too (or the file ends exactly there; a Footer must be followed by the closing magic).
    That lookahead catches a damaged length field: when a record's successor is invalid, the bytes
    inside the record are searched for a valid record; if one starts there the record's length was
    wrong and the record is given up. After a damaged region the walk resynchronises: it searches
    forward for the next position where a record parses, validates and is followed by a valid one,
    and goes on from there, so every intact record after the damage is kept.

    Args:
        buf: the file's bytes (bytes, mmap or memoryview).
        size: number of bytes of ``buf`` to walk.
        start: offset of the first record (8: after the leading magic).
        validate: ``fn(record) -> reason or ''``, extra checks on a parsed record (e.g. that a message's
            channel is known and its payload decodes). It may be called more than once per record.
    """
    cache = {}

    def attempt(offset):
        if offset in cache:
            return cache[offset]
        try:
            record = parse_record(buf, offset, size)
            reason = validate(record) if validate is not None else ''
        except MalformedRecord as exc:
            record, reason = None, exc.reason
        else:
            if reason:
                record, reason = None, f'{OPCODE_NAMES[record.opcode]} record {reason}'
        if len(cache) > 64:
            cache.clear()
        cache[offset] = (record, reason)
        return record, reason

    def successor(record):
        """Return (ok, reason): whether what follows ``record`` is valid."""
        if record.opcode == OP_FOOTER:
            if bytes(buf[record.end : record.end + 8]) == MAGIC:
                return True, ''
            return False, 'the Footer is not followed by the closing magic bytes'
        if record.end == size:
            return True, ''
        following, reason = attempt(record.end)
        return following is not None, reason

    def sync(offset):
        """Return the first offset >= ``offset`` where a valid record with a valid successor starts."""
        while offset < size:
            match = _CANDIDATE.search(buf, offset, size)
            if match is None:
                return None
            candidate = match.start()
            record, _ = attempt(candidate)
            if record is not None and successor(record)[0]:
                return candidate
            offset = candidate + 1
        return None

    position = start
    while position < size:
        record, reason = attempt(position)
        if record is None:
            found = sync(position + 1)
            yield Damage(position, size if found is None else found, reason)
            if found is None:
                return
            position = found
            continue
        ok, reason = successor(record)
        if ok:
            yield record
            position = record.end
            if record.opcode == OP_FOOTER:
                position += 8
                if position < size:
                    yield Damage(position, size, 'bytes after the closing magic')
                return
            continue
        found = sync(position + 1)
        if found is not None and found < record.end:
            # A valid record starts inside this one: its length (or content) was damaged.
            yield Damage(
                position,
                found,
                f'{OPCODE_NAMES[record.opcode]} record declares {record.end - position - RECORD_HEAD} '
                f'bytes but a valid record starts inside it at byte {found}',
            )
            position = found
            continue
        yield record
        yield Damage(record.end, size if found is None else found, reason)
        if found is None:
            return
        position = found


def crc32_range(buf, start, end, value=0):
    """CRC-32 of ``buf[start:end]``, computed in blocks without copying the whole range."""
    view = memoryview(buf)
    try:
        for block in range(start, end, _CRC_BLOCK):
            value = zlib.crc32(view[block : min(block + _CRC_BLOCK, end)], value)
    finally:
        view.release()
    return value


@contextmanager
def mapped(path):
    """Yield (buffer, size) of a file: a read-only mmap, or b'' for an empty file."""
    with open(path, 'rb') as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            yield b'', 0
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            yield buffer, size


#: What :func:`check_file` found; ``problem`` is empty when the file is intact as far as checked.
FileCheck = namedtuple(
    'FileCheck',
    'problem offset footer data_end_offset data_crc summary_crc schemas channels statistics',
)


def check_file(buf, size):
    """Check an MCAP file's magic bytes, footer, summary and DataEnd, and verify both checksums.

    Costs one pass over the bytes (CRC-32 in C) plus parsing the few summary records. Does not walk
    the data section record by record: when the data checksum is absent (``data_crc == 'absent'``)
    the caller should :func:`walk` it.

    Returns:
        FileCheck: the first ``problem`` found (empty when intact) and the byte ``offset`` it concerns;
        the Footer; the DataEnd offset; ``data_crc`` and ``summary_crc``, each 'verified', 'absent',
        'mismatch' or 'unknown' (not reached); and the summary's schemas and channels (id -> record)
        and Statistics record, filled whenever the footer and summary are intact (even when the data
        section is not, so repair can use them).
    """
    found = dict(
        problem='', offset=None, footer=None, data_end_offset=None, data_crc='unknown',
        summary_crc='unknown', schemas={}, channels={}, statistics=None,
    )

    def done(problem='', offset=None):
        if problem and not found['problem']:
            found.update(problem=problem, offset=offset)
        return FileCheck(**found)

    if size == 0:
        return done('the file is empty', 0)
    if bytes(buf[:8]) != MAGIC:
        return done('does not start with the MCAP magic bytes', 0)
    if size < 8 + RECORD_HEAD + DATA_END_BYTES + FOOTER_BYTES + 8 or bytes(buf[size - 8 :]) != MAGIC:
        return done(
            f'does not end with the MCAP magic bytes: the file is cut off or its end is damaged '
            f'({size} bytes)',
            max(size - 8, 0),
        )
    footer_at = size - 8 - FOOTER_BYTES
    try:
        record = parse_record(buf, footer_at, size - 8)
        reason = '' if record.opcode == OP_FOOTER else f'found a {OPCODE_NAMES[record.opcode]} record'
    except MalformedRecord as exc:
        reason = exc.reason
    if reason:
        return done(f'no valid Footer before the closing magic: {reason}', footer_at)
    footer = found['footer'] = record.body
    summary_start, offsets_start = footer.summary_start, footer.summary_offset_start
    data_end_at = (summary_start or footer_at) - DATA_END_BYTES
    if (
        (summary_start and not 8 < summary_start <= footer_at)
        or (offsets_start and not (summary_start or 0) <= offsets_start <= footer_at)
        or data_end_at < 8 + RECORD_HEAD
    ):
        return done(
            f'the Footer points outside the file (summary at {summary_start}, summary offsets at '
            f'{offsets_start})',
            footer_at,
        )
    if footer.summary_crc:
        crc_start = summary_start or footer_at
        actual = crc32_range(buf, crc_start, footer_at + RECORD_HEAD + 16)
        if actual != footer.summary_crc:
            found['summary_crc'] = 'mismatch'
            return done(
                f'summary checksum mismatch: bytes {crc_start}-{footer_at + RECORD_HEAD + 16} changed '
                f'(stored {footer.summary_crc:#010x}, computed {actual:#010x})',
                crc_start,
            )
        found['summary_crc'] = 'verified'
    else:
        found['summary_crc'] = 'absent'
    position = summary_start or footer_at
    while summary_start and position < footer_at:
        try:
            record = parse_record(buf, position, footer_at)
        except MalformedRecord as exc:
            found.update(schemas={}, channels={}, statistics=None)
            return done(f'summary section damaged: {exc.reason}', position)
        if record.opcode == OP_SCHEMA:
            found['schemas'][record.body.id] = record.body
        elif record.opcode == OP_CHANNEL:
            found['channels'][record.body.id] = record.body
        elif record.opcode == OP_STATISTICS:
            found['statistics'] = record.body
        position = record.end
    try:
        data_end = parse_record(buf, data_end_at, data_end_at + DATA_END_BYTES)
        reason = '' if data_end.opcode == OP_DATA_END else f'found a {OPCODE_NAMES[data_end.opcode]} record'
    except MalformedRecord as exc:
        reason = exc.reason
    if reason:
        return done(f'no DataEnd record where the data section should end: {reason}', data_end_at)
    found['data_end_offset'] = data_end_at
    stored = data_end.body.data_section_crc
    if not stored:
        found['data_crc'] = 'absent'
        return done()
    actual = crc32_range(buf, 0, data_end_at)
    if actual != stored:
        found['data_crc'] = 'mismatch'
        return done(
            f'data checksum mismatch (stored {stored:#010x}, computed {actual:#010x}): some byte between '
            f'8 and {data_end_at} changed',
            8,
        )
    found['data_crc'] = 'verified'
    return done()


def leading_records(buf, size, limit=64):
    """Return the first records after the magic (up to the first message, at most ``limit``)."""
    out = []
    position = 8
    while len(out) < limit and position < size:
        try:
            record = parse_record(buf, position, size)
        except MalformedRecord:
            break
        if record.opcode == OP_MESSAGE:
            break
        out.append(record)
        position = record.end
    return out
