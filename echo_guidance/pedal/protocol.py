r"""The EG1 line protocol spoken by the foot pedal / button box (specified in docs/pedal-protocol.md).

Every line the device sends looks like::

    EG1,<seq>,<EVENT>[,<ARG>]*<CK>\n

- ``EG1``: protocol name and version.
- ``seq``: decimal 0..65535, +1 for every line the device sends, wrapping to 0 after 65535.
- ``EVENT``/``ARG``: one of ``HELLO,<firmware id>``, ``HB,<0|1>`` (heartbeat with the deadman
  switch state), ``DEADMAN,<0|1>`` (switch edge), ``TARGET``, ``REC_START``, ``REC_STOP``.
- ``CK``: two upper-case hex digits, the XOR of every byte before the ``*`` (NMEA style).
- Printable ASCII only, at most ``MAX_LINE_BYTES`` bytes including the ``\n`` (a ``\r`` before it
  is tolerated).

:func:`parse_line` accepts exactly that and raises :class:`PedalProtocolError` for anything else;
:func:`format_line` builds a line (used by the device emulator and as the firmware reference).
"""

import dataclasses
import enum
import re

PROTOCOL_TAG = 'EG1'
MAX_LINE_BYTES = 64
SEQ_MODULUS = 65536


class PedalProtocolError(ValueError):
    """A line from the device does not follow the EG1 protocol."""


class DeviceEvent(enum.Enum):
    """The words a device may send, and whether each takes an argument."""

    HELLO = 'HELLO'
    HEARTBEAT = 'HB'
    DEADMAN = 'DEADMAN'
    TARGET = 'TARGET'
    REC_START = 'REC_START'
    REC_STOP = 'REC_STOP'


_ARGUMENT_PATTERNS = {
    DeviceEvent.HELLO: re.compile(r'[A-Za-z0-9._-]{1,32}'),
    DeviceEvent.HEARTBEAT: re.compile(r'[01]'),
    DeviceEvent.DEADMAN: re.compile(r'[01]'),
}
_LINE = re.compile(r'EG1,(0|[1-9][0-9]{0,4}),([A-Z_]+)(?:,([^,*]*))?\*([0-9A-F]{2})')


@dataclasses.dataclass(frozen=True)
class DeviceLine:
    """One parsed device line.

    Attributes:
        seq: the line's sequence number.
        event: the :class:`DeviceEvent`.
        argument: the argument text ('' for events without one).
    """

    seq: int
    event: DeviceEvent
    argument: str = ''

    @property
    def switch_state(self):
        """For HB and DEADMAN lines: True when the deadman switch is pressed."""
        if self.event not in (DeviceEvent.HEARTBEAT, DeviceEvent.DEADMAN):
            raise AttributeError(f'{self.event.value} lines carry no switch state')
        return self.argument == '1'


def checksum(body):
    """Return the two-hex-digit XOR checksum of ``body`` (str or bytes)."""
    data = body.encode('ascii') if isinstance(body, str) else bytes(body)
    value = 0
    for byte in data:
        value ^= byte
    return f'{value:02X}'


def format_line(seq, event, argument=''):
    """Build the bytes of one protocol line, validating every field."""
    if not isinstance(event, DeviceEvent):
        event = DeviceEvent(event)
    if not 0 <= int(seq) < SEQ_MODULUS:
        raise PedalProtocolError(f'seq must be in 0..{SEQ_MODULUS - 1}, got {seq}')
    argument = str(argument)
    pattern = _ARGUMENT_PATTERNS.get(event)
    if pattern is None and argument:
        raise PedalProtocolError(f'{event.value} takes no argument, got {argument!r}')
    if pattern is not None and not pattern.fullmatch(argument):
        raise PedalProtocolError(f'bad argument {argument!r} for {event.value}')
    body = f'{PROTOCOL_TAG},{int(seq)},{event.value}' + (f',{argument}' if pattern else '')
    line = f'{body}*{checksum(body)}\n'.encode('ascii')
    if len(line) > MAX_LINE_BYTES:
        raise PedalProtocolError(f'line would be {len(line)} bytes, more than {MAX_LINE_BYTES}')
    return line


def parse_line(raw):
    """Parse one line (bytes or str, with or without its line ending) into a :class:`DeviceLine`.

    Raises:
        PedalProtocolError: with the reason, for anything that is not a valid EG1 line.
    """
    if isinstance(raw, str):
        try:
            raw = raw.encode('ascii')
        except UnicodeEncodeError:
            raise PedalProtocolError('line contains non-ASCII characters') from None
    raw = bytes(raw)
    if len(raw) > MAX_LINE_BYTES:
        raise PedalProtocolError(f'line is {len(raw)} bytes, more than {MAX_LINE_BYTES}')
    if raw.endswith(b'\n'):
        raw = raw[:-1]
    if raw.endswith(b'\r'):
        raw = raw[:-1]
    if not raw:
        raise PedalProtocolError('empty line')
    if any(b < 0x20 or b > 0x7E for b in raw):
        raise PedalProtocolError('line contains non-printable bytes')
    text = raw.decode('ascii')
    match = _LINE.fullmatch(text)
    if match is None:
        raise PedalProtocolError(
            'not an EG1 line (expected EG1,<seq>,<EVENT>[,<ARG>]*<CK>)')
    seq_text, word, argument, received_ck = match.groups()
    body = text[:text.rindex('*')]
    expected_ck = checksum(body)
    if received_ck != expected_ck:
        raise PedalProtocolError(f'checksum {received_ck} does not match {expected_ck}')
    seq = int(seq_text)
    if seq >= SEQ_MODULUS:
        raise PedalProtocolError(f'seq {seq} out of range 0..{SEQ_MODULUS - 1}')
    try:
        event = DeviceEvent(word)
    except ValueError:
        raise PedalProtocolError(f'unknown event {word!r}') from None
    pattern = _ARGUMENT_PATTERNS.get(event)
    if pattern is None:
        if argument is not None:
            raise PedalProtocolError(f'{word} takes no argument, got {argument!r}')
        argument = ''
    elif argument is None or not pattern.fullmatch(argument):
        raise PedalProtocolError(f'bad or missing argument {argument!r} for {word}')
    return DeviceLine(seq=seq, event=event, argument=argument)


def seq_gap(previous, current):
    """Return how many lines were lost between sequence numbers ``previous`` and ``current``."""
    return (current - previous - 1) % SEQ_MODULUS
