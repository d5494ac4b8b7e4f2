"""Foot pedal / button box: the EG1 serial line protocol, the host state machine and reader.

See docs/pedal-protocol.md. The ROS wrapper is echo_guidance/nodes/pedal.py.
"""

from echo_guidance.pedal.protocol import (
    DeviceEvent,
    DeviceLine,
    PedalProtocolError,
    checksum,
    format_line,
    parse_line,
)
from echo_guidance.pedal.reader import SerialPedalReader, open_serial_port
from echo_guidance.pedal.state import PedalEventCode, PedalOutput, PedalStateMachine

__all__ = ['DeviceEvent', 'DeviceLine', 'PedalEventCode', 'PedalOutput', 'PedalProtocolError',
           'PedalStateMachine', 'SerialPedalReader', 'checksum', 'format_line', 'open_serial_port',
           'parse_line']
