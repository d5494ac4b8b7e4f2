"""Whether a demonstration bag's MCAP file is intact: checksums, framing and message counts.

:func:`verify_mcap` is what every reader of a bag runs first (``DemonstrationBagReader`` on open,
so ``bag info``, ``bag check`` and ``dataset build`` too): a damaged file raises
:class:`CorruptBagError` naming the byte offset and the repair command instead of being read.

Every byte of a bag written by this software is verified: the data section (leading magic to the
DataEnd record) by ``DataEnd.data_section_crc``, the summary and footer by ``Footer.summary_crc``,
and the DataEnd record, footer position and closing magic by their structure. Bags written before
the data checksum was added (DataEnd CRC 0 and no ``checksums`` entry in the ``echo_guidance`` MCAP
metadata record) are walked record by record instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from echo_guidance.bags import _mcap, _metadata, schema
from echo_guidance.bags.errors import CorruptBagError, repair_hint

#: Value of the ``checksums`` entry of the ``echo_guidance`` MCAP metadata record.
CHECKSUMS_MARK = 'data,summary'
CHECKSUMS_KEY = 'checksums'


@dataclass
class Integrity:
    """What :func:`verify_mcap` established about an MCAP file.

    Attributes:
        checksums: 'verified' (data and summary CRC-32 match) or 'absent' (old bag: framing walked).
        message_counts: topic -> messages, from the MCAP Statistics record (or the walk).
        library: the writer named in the MCAP header.
    """

    checksums: str
    message_counts: dict = field(default_factory=dict)
    library: str = ''
    type_hashes: dict = field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0
    channel_qos: dict = field(default_factory=dict)

    def expected_metadata(self, mcap_name, state):
        """The metadata.yaml mapping this MCAP file calls for (for :func:`_metadata.metadata_mismatch`)."""
        counts = dict.fromkeys(schema.TOPIC_TYPES, 0) | self.message_counts
        document = _metadata.build_metadata(
            mcap_name, counts, self.type_hashes, self.start_ns, self.end_ns, state, None, self.channel_qos
        )
        return next(iter(document.values()))

    def describe(self):
        """One phrase for ``bag info``."""
        if self.checksums == 'verified':
            return 'data and summary checksums verified'
        return 'no data checksum (written before checksums were added); every record walked'


def _first_damage(buf, size):
    for event in _mcap.walk(buf, size):
        if isinstance(event, _mcap.Damage):
            return event
    return None


def _corrupt(mcap_path, offset, reason, bag_path):
    where = f'damaged at byte {offset}' if offset is not None else 'damaged'
    return CorruptBagError(f'{mcap_path}: {where}: {reason}; {repair_hint(bag_path)}', offset=offset)


def verify_mcap(mcap_path, bag_path):
    """Verify an MCAP file of a bag; return an Integrity.

    Raises:
        CorruptBagError: the file is cut off, a checksum does not match, a record is malformed, or the
            summary is missing; the message names the byte offset and the repair command.
    """
    with _mcap.mapped(mcap_path) as (buf, size):
        found = _mcap.check_file(buf, size)
        if found.problem:
            offset, reason = found.offset, found.problem
            if size == 0:
                reason = 'the MCAP file is empty (the recorder may have been killed before writing)'
            elif offset and found.data_crc in ('mismatch', 'unknown'):
                # Name the first record that does not parse, when there is one before the problem.
                damage = _first_damage(buf, size)
                if damage is not None and (found.data_crc == 'mismatch' or damage.start <= offset):
                    offset, reason = damage.start, f'{damage.reason} ({reason})'
                elif found.data_crc == 'mismatch':
                    reason += ' inside a record that still parses (content changed in place)'
            raise _corrupt(mcap_path, offset, reason, bag_path)
        leading = _mcap.leading_records(buf, size, limit=32)
        library = next((r.body.library for r in leading if r.opcode == _mcap.OP_HEADER), '')
        marks = [
            r.body.metadata
            for r in leading
            if r.opcode == _mcap.OP_METADATA and r.body.name == schema.MCAP_METADATA_NAME
        ]
        counts_by_channel = None
        if found.data_crc == 'absent':
            if marks and marks[0].get(CHECKSUMS_KEY):
                raise _corrupt(
                    mcap_path,
                    found.data_end_offset,
                    'the DataEnd record holds no data checksum although this file was written with one',
                    bag_path,
                )
            counts_by_channel = {}
            for event in _mcap.walk(buf, size):
                if isinstance(event, _mcap.Damage):
                    raise _corrupt(mcap_path, event.start, event.reason, bag_path)
                if event.opcode == _mcap.OP_MESSAGE:
                    channel = event.body.channel_id
                    counts_by_channel[channel] = counts_by_channel.get(channel, 0) + 1
        if found.summary_crc == 'absent' and found.data_crc == 'verified':
            raise _corrupt(
                mcap_path,
                size - 8 - _mcap.FOOTER_BYTES,
                'the Footer holds no summary checksum although the data section has one',
                bag_path,
            )
    statistics = found.statistics
    if counts_by_channel is None:
        if statistics is None:
            reason = 'the summary has no Statistics record'
            raise _corrupt(mcap_path, found.footer.summary_start, reason, bag_path)
        counts_by_channel = dict(statistics.channel_message_counts)
    elif statistics is not None and dict(statistics.channel_message_counts) != counts_by_channel:
        raise _corrupt(
            mcap_path,
            found.footer.summary_start,
            f'the Statistics record counts {dict(statistics.channel_message_counts)} messages per '
            f'channel, the data section holds {counts_by_channel}',
            bag_path,
        )
    hashes, qos = {}, {}
    for channel in found.channels.values():
        msgtype = schema.TOPIC_TYPES.get(channel.topic)
        if msgtype and channel.metadata.get('topic_type_hash'):
            hashes[msgtype] = channel.metadata['topic_type_hash']
        if 'offered_qos_profiles' in channel.metadata:
            qos[channel.topic] = channel.metadata['offered_qos_profiles']
    store = schema.get_typestore()
    for msgtype in schema.TOPIC_TYPES.values():
        hashes.setdefault(msgtype, store.hash_rihs01(msgtype))
    counts = {}
    for channel_id, count in counts_by_channel.items():
        channel = found.channels.get(channel_id)
        if channel is None:
            raise _corrupt(
                mcap_path,
                found.footer.summary_start,
                f'{count} message(s) on channel {channel_id}, which the summary does not define',
                bag_path,
            )
        counts[channel.topic] = counts.get(channel.topic, 0) + count
    checksums = 'verified' if found.data_crc == 'verified' else 'absent'
    start = statistics.message_start_time if statistics else 0
    end = statistics.message_end_time if statistics else 0
    return Integrity(checksums, counts, library, hashes, start, end, qos)
