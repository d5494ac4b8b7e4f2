"""Tests of the EG1 pedal protocol, the host state machine and the serial reader (no ROS)."""

import os
import queue
import threading
import time

import pytest

from echo_guidance.pedal import (
    DeviceEvent,
    PedalEventCode,
    PedalProtocolError,
    PedalStateMachine,
    SerialPedalReader,
    checksum,
    format_line,
    parse_line,
)
from echo_guidance.pedal.device_sim import PtyPedalDevice, load_script

serial = pytest.importorskip('serial')


def _line(seq, word, arg=None):
    body = f'EG1,{seq},{word}' + (f',{arg}' if arg is not None else '')
    return f'{body}*{checksum(body)}\n'.encode()


# --- protocol ---------------------------------------------------------------------------------

def test_checksum_and_format_are_the_documented_ones():
    # Worked example from docs/pedal-protocol.md.
    assert format_line(7, DeviceEvent.DEADMAN, '1') == b'EG1,7,DEADMAN,1*5F\n'
    assert checksum('EG1,7,DEADMAN,1') == '5F'


@pytest.mark.parametrize('seq,event,arg', [
    (0, DeviceEvent.HELLO, 'fw-1.2_a'), (1, DeviceEvent.HEARTBEAT, '0'),
    (65535, DeviceEvent.HEARTBEAT, '1'), (42, DeviceEvent.DEADMAN, '1'),
    (43, DeviceEvent.TARGET, ''), (44, DeviceEvent.REC_START, ''), (45, DeviceEvent.REC_STOP, '')])
def test_round_trip(seq, event, arg):
    line = parse_line(format_line(seq, event, arg))
    assert (line.seq, line.event, line.argument) == (seq, event, arg)


def test_crlf_and_str_accepted():
    assert parse_line(_line(3, 'TARGET').replace(b'\n', b'\r\n')).event is DeviceEvent.TARGET
    assert parse_line('EG1,7,DEADMAN,1*5F').switch_state is True


@pytest.mark.parametrize('raw,reason', [
    (b'', 'empty'),
    (b'\n', 'empty'),
    (b'hello world\n', 'not an EG1 line'),
    (b'EG1,7,DEADMAN,1*5E\n', 'checksum'),
    (b'EG1,7,DEADMAN,1\n', 'not an EG1 line'),  # no checksum
    (b'EG2,7,DEADMAN,1*73\n', 'not an EG1 line'),
    (_line(7, 'DEADMAN', '2'), 'bad or missing argument'),
    (_line(7, 'DEADMAN'), 'bad or missing argument'),
    (_line(7, 'TARGET', '1'), 'takes no argument'),
    (_line(7, 'EXPLODE'), 'unknown event'),
    (_line(70000, 'TARGET'), 'out of range'),
    (_line('007', 'TARGET'), 'not an EG1 line'),  # leading zeros are not allowed
    (b'EG1,7,TAR\x00GET*00\n', 'non-printable'),
    (b'\xff\xfe\n', 'non-printable'),
    (b'EG1,1,HELLO,' + b'x' * 60 + b'*00\n', 'more than 64'),
    ('EG1,7,DEADMAN,1*5F\u00e9', 'non-ASCII'),
])
def test_garbage_rejected_with_reason(raw, reason):
    with pytest.raises(PedalProtocolError, match=reason):
        parse_line(raw)


def test_format_rejects_bad_fields():
    with pytest.raises(PedalProtocolError, match='seq'):
        format_line(65536, DeviceEvent.TARGET)
    with pytest.raises(PedalProtocolError, match='takes no argument'):
        format_line(1, DeviceEvent.TARGET, 'x')
    with pytest.raises(PedalProtocolError, match='bad argument'):
        format_line(1, DeviceEvent.HEARTBEAT, 'yes')


# --- state machine ----------------------------------------------------------------------------

def _codes(outputs):
    return [o.code for o in outputs]


def _connected_machine():
    sm = PedalStateMachine(heartbeat_timeout_s=0.5)
    sm.on_connected(0.0)
    sm.on_line(_line(0, 'HELLO', 'fw1'), 0.0)
    sm.on_line(_line(1, 'HB', '0'), 0.05)
    return sm


def test_press_release_and_buttons():
    sm = _connected_machine()
    assert sm.armed and not sm.deadman_held
    assert _codes(sm.on_line(_line(2, 'DEADMAN', '1'), 0.1)) == [PedalEventCode.DEADMAN_PRESSED]
    assert sm.deadman_held and sm.deadman_reason == ''
    assert _codes(sm.on_line(_line(3, 'HB', '1'), 0.15)) == []
    assert _codes(sm.on_line(_line(4, 'TARGET'), 0.2)) == [PedalEventCode.TARGET_REACHED]
    assert _codes(sm.on_line(_line(5, 'REC_START'), 0.2)) == [PedalEventCode.RECORD_START]
    assert _codes(sm.on_line(_line(6, 'REC_STOP'), 0.2)) == [PedalEventCode.RECORD_STOP]
    assert _codes(sm.on_line(_line(7, 'DEADMAN', '0'), 0.3)) == [PedalEventCode.DEADMAN_RELEASED]
    assert not sm.deadman_held and sm.deadman_reason == 'released'


def test_heartbeat_releases_but_never_presses():
    sm = _connected_machine()
    assert _codes(sm.on_line(_line(2, 'HB', '1'), 0.1)) == []
    assert not sm.deadman_held
    sm.on_line(_line(3, 'DEADMAN', '1'), 0.15)
    assert _codes(sm.on_line(_line(4, 'HB', '0'), 0.2)) == [PedalEventCode.DEADMAN_RELEASED]


def test_not_armed_before_the_device_reports_released():
    sm = PedalStateMachine()
    sm.on_connected(0.0)
    sm.on_line(_line(0, 'HELLO', 'fw1'), 0.0)
    assert _codes(sm.on_line(_line(1, 'DEADMAN', '1'), 0.1)) == []  # switch state before unknown
    assert not sm.deadman_held and sm.deadman_reason == 'waiting for release after fault'


@pytest.mark.parametrize('fault', ['garbage', 'timeout', 'unplug', 'lost', 'restart'])
def test_every_fault_releases_and_disarms(fault):
    sm = _connected_machine()
    sm.on_line(_line(2, 'DEADMAN', '1'), 0.1)
    assert sm.deadman_held
    if fault == 'garbage':
        out = sm.on_line(b'EG1,3,DEADMAN,1*00\n', 0.2)
        reason = 'garbage on line'
    elif fault == 'timeout':
        assert sm.poll(0.55) == []
        out = sm.poll(0.7)
        reason = 'timeout'
    elif fault == 'unplug':
        out = sm.on_disconnected(0.2, 'unplugged: device reports readiness to read but returned no data')
        reason = 'unplugged'
    elif fault == 'lost':
        out = sm.on_line(_line(9, 'HB', '1'), 0.2)
        reason = 'lines lost'
    else:
        out = sm.on_line(_line(0, 'HELLO', 'fw1'), 0.2)
        reason = 'device restarted'
    assert _codes(out) == [PedalEventCode.DEVICE_FAULT, PedalEventCode.DEADMAN_RELEASED]
    assert not sm.deadman_held and sm.deadman_reason == reason
    assert not sm.armed
    if fault == 'unplug':
        assert sm.on_disconnected(0.3, 'cannot open') == []  # reported once while it stays away
        sm.on_connected(1.0)
    # Still held physically: a new press edge is not enough, the switch must be released first.
    seq = 20
    sm.last_seq = None
    assert sm.on_line(_line(seq, 'DEADMAN', '1'), 1.0) == []
    assert not sm.deadman_held
    sm.on_line(_line(seq + 1, 'HB', '0'), 1.05)
    assert _codes(sm.on_line(_line(seq + 2, 'DEADMAN', '1'), 1.1)) == [PedalEventCode.DEADMAN_PRESSED]


def test_lost_lines_are_counted_with_wraparound():
    sm = PedalStateMachine()
    sm.on_connected(0.0)
    sm.on_line(_line(65534, 'HB', '0'), 0.0)
    assert sm.on_line(_line(65535, 'HB', '0'), 0.01) == []
    assert sm.on_line(_line(0, 'HB', '0'), 0.02) == []
    out = sm.on_line(_line(3, 'HB', '0'), 0.03)
    assert _codes(out) == [PedalEventCode.DEVICE_FAULT] and '2 line(s) lost' in out[0].detail
    assert sm.counters['lost_lines'] == 2


def test_timeout_reported_once_and_cleared_by_traffic():
    sm = _connected_machine()
    assert _codes(sm.poll(1.0)) == [PedalEventCode.DEVICE_FAULT]
    assert sm.poll(2.0) == []
    sm.on_line(_line(2, 'HB', '0'), 2.1)
    assert not sm.timed_out and sm.fault == ''
    assert _codes(sm.poll(3.0)) == [PedalEventCode.DEVICE_FAULT]
    assert sm.counters['timeouts'] == 2


def test_first_open_failure_reported_once():
    sm = PedalStateMachine()
    out = sm.on_disconnected(0.0, 'cannot open /dev/ttyACM9: no such file')
    assert _codes(out) == [PedalEventCode.DEVICE_FAULT]
    assert sm.on_disconnected(0.5, 'cannot open /dev/ttyACM9: no such file') == []


def test_event_codes_match_the_message():
    msg = pytest.importorskip('echo_guidance.msg')
    for code in PedalEventCode:
        assert getattr(msg.PedalEvent, code.name) == code.value


# --- reader over real serial transports ---------------------------------------------------------

class _Collector:
    def __init__(self):
        self.queue = queue.Queue()

    def __call__(self, events):
        for event in events:
            self.queue.put(event)

    def wait_for(self, code, timeout=3.0):
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                event = self.queue.get(timeout=0.05)
            except queue.Empty:
                continue
            seen.append(event)
            if event.code == code:
                return event, seen
        raise AssertionError(f'no {code.name} within {timeout} s; saw {seen}')


def test_reader_over_loop_url():
    port = serial.serial_for_url('loop://', timeout=0.02)
    collector = _Collector()
    reader = SerialPedalReader('loop://', collector, heartbeat_timeout_s=0.3, opener=lambda: port).start()
    try:
        port.write(format_line(0, DeviceEvent.HELLO, 'loop'))
        port.write(format_line(1, DeviceEvent.HEARTBEAT, '0'))
        port.write(format_line(2, DeviceEvent.DEADMAN, '1'))
        collector.wait_for(PedalEventCode.DEADMAN_PRESSED)
        assert reader.snapshot()[0] is True
        port.write(b'\x00\x13 line noise \xff' * 10)  # > 64 bytes without a newline
        fault, _ = collector.wait_for(PedalEventCode.DEVICE_FAULT)
        assert 'garbage' in fault.detail
        collector.wait_for(PedalEventCode.DEADMAN_RELEASED)
        # Then silence: a timeout fault (the deadman is already released).
        fault, _ = collector.wait_for(PedalEventCode.DEVICE_FAULT, timeout=2.0)
        assert fault.detail.startswith('timeout')
        held, reason, connected, _, counters = reader.snapshot()
        assert not held and reason == 'timeout' and connected
        assert counters['garbage'] >= 1
    finally:
        reader.stop()


def test_reader_over_pty_unplug_releases_deadman():
    device = PtyPedalDevice(heartbeat_hz=20).start()
    collector = _Collector()
    reader = SerialPedalReader(device.port, collector, heartbeat_timeout_s=0.5,
                               reconnect_interval_s=0.1).start()
    try:
        # Wait for heartbeats to arm the deadman, then press.
        deadline = time.monotonic() + 3
        while not reader.state.armed and time.monotonic() < deadline:
            time.sleep(0.01)
        device.press()
        collector.wait_for(PedalEventCode.DEADMAN_PRESSED)
        device.target()
        collector.wait_for(PedalEventCode.TARGET_REACHED)
        device.unplug()
        fault, seen = collector.wait_for(PedalEventCode.DEVICE_FAULT)
        assert fault.detail.startswith('unplugged')
        released, _ = collector.wait_for(PedalEventCode.DEADMAN_RELEASED)
        assert 'unplugged' in released.detail
        held, reason, connected, _, _ = reader.snapshot()
        assert not held and reason == 'unplugged' and not connected
    finally:
        reader.stop()
        device.close()


def test_reader_reports_missing_port_once(tmp_path):
    collector = _Collector()
    reader = SerialPedalReader(str(tmp_path / 'ttyNOPE'), collector, reconnect_interval_s=0.05).start()
    try:
        fault, _ = collector.wait_for(PedalEventCode.DEVICE_FAULT)
        assert 'cannot open' in fault.detail
        time.sleep(0.3)  # several retries happen in this time; none may be reported again
        assert collector.queue.empty()
    finally:
        reader.stop()


def test_device_sim_script_validation(tmp_path):
    good = tmp_path / 'good.yaml'
    good.write_text('- {at_s: 0.5, action: press}\n- {at_s: 0.1, action: release}\n')
    assert load_script(good) == [(0.1, 'release'), (0.5, 'press')]
    bad = tmp_path / 'bad.yaml'
    bad.write_text('- {at_s: 0.5, action: jump}\n')
    with pytest.raises(ValueError, match='unknown action'):
        load_script(bad)


def test_pty_device_raw_mode_no_echo():
    # The host must not receive its own bytes back (a pty in cooked mode would echo them).
    with PtyPedalDevice(heartbeat_hz=0, send_hello=False) as device:
        host = serial.Serial(device.port, timeout=0.1)
        try:
            device.target()
            assert parse_line(host.readline()).event is DeviceEvent.TARGET
            host.write(b'abc\n')
            ready = os.read(device._master, 10) if _readable(device._master) else b''
            assert ready == b'abc\n'
        finally:
            host.close()


def _readable(fd, timeout=0.5):
    import select
    return bool(select.select([fd], [], [], timeout)[0])


def test_stop_is_prompt():
    reader = SerialPedalReader('loop://', None, opener=lambda: serial.serial_for_url('loop://', timeout=0.02))
    reader.start()
    t0 = time.monotonic()
    reader.stop()
    assert time.monotonic() - t0 < 1.0
    assert not any(t.name == 'pedal-reader' and t.is_alive() for t in threading.enumerate())


def test_reader_survives_a_failing_consumer_and_releases_when_it_dies():
    port = serial.serial_for_url('loop://', timeout=0.02)
    calls = []

    def bad_consumer(events):
        calls.append(events)
        raise RuntimeError('consumer bug')

    reader = SerialPedalReader('loop://', bad_consumer, heartbeat_timeout_s=5, opener=lambda: port).start()
    try:
        port.write(format_line(0, DeviceEvent.HEARTBEAT, '0'))
        port.write(format_line(1, DeviceEvent.DEADMAN, '1'))
        deadline = time.monotonic() + 3
        while not reader.snapshot()[0] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reader.snapshot()[0] is True
        assert reader.callback_errors >= 1 and 'consumer bug' in reader.last_callback_error
        # The reader thread dies on an unexpected error inside the loop: the deadman is released.
        reader.state.on_line = None  # calling it now raises TypeError in the reader thread
        port.write(format_line(2, DeviceEvent.TARGET))
        deadline = time.monotonic() + 3
        while reader.snapshot()[0] and time.monotonic() < deadline:
            time.sleep(0.01)
        held, reason, connected, fault, _ = reader.snapshot()
        assert not held and 'pedal reader stopped' in fault
    finally:
        reader.stop()
