"""The host-side pedal state machine: device lines and connection faults in, pedal events out.

Safety rules (docs/pedal-protocol.md, "Host behaviour"):

- The deadman counts as held only after an explicit ``DEADMAN,1`` edge. Heartbeats can release it
  (``HB,0``) but never press it.
- Every fault (unplug, port that cannot be opened, heartbeat timeout, garbage on the line, lost
  lines, device restart) releases the deadman and *disarms* it: it stays released until the
  device reports the switch released (``DEADMAN,0`` or ``HB,0``) and then pressed again, so a pedal
  held down (or stuck) while the cable is re-plugged never enables motion by itself.
- Each fault is reported once as a DEVICE_FAULT event with a detail saying which.

Time is passed in explicitly (seconds on any monotonic clock), so the logic is testable without
threads or a device.
"""

import dataclasses
import enum

from echo_guidance.pedal.protocol import DeviceEvent, PedalProtocolError, parse_line, seq_gap


class PedalEventCode(enum.IntEnum):
    """Event codes, equal to the constants of echo_guidance/msg/PedalEvent."""

    TARGET_REACHED = 1
    RECORD_START = 2
    RECORD_STOP = 3
    DEADMAN_PRESSED = 4
    DEADMAN_RELEASED = 5
    DEVICE_FAULT = 6


@dataclasses.dataclass(frozen=True)
class PedalOutput:
    """One event to publish: its code and a human-readable detail (raw line for garbage)."""

    code: PedalEventCode
    detail: str = ''


_BUTTON_EVENTS = {
    DeviceEvent.TARGET: PedalEventCode.TARGET_REACHED,
    DeviceEvent.REC_START: PedalEventCode.RECORD_START,
    DeviceEvent.REC_STOP: PedalEventCode.RECORD_STOP,
}


class PedalStateMachine:
    """Tracks connection, heartbeat and deadman state from device lines.

    Args:
        heartbeat_timeout_s: a connected device silent for longer than this is a fault.
    """

    def __init__(self, heartbeat_timeout_s=0.5):
        """Start disconnected with the deadman released."""
        if not heartbeat_timeout_s or heartbeat_timeout_s <= 0:
            raise ValueError(f'heartbeat timeout must be > 0 s, got {heartbeat_timeout_s!r}')
        self.heartbeat_timeout_s = float(heartbeat_timeout_s)
        self.connected = False
        self.deadman_held = False
        self.deadman_reason = 'not connected'
        self.armed = False
        self.switch_pressed = None  # last state the device reported, None = unknown
        self.firmware = ''
        self.fault = ''  # detail of the standing fault, '' when none
        self.timed_out = False
        self.last_line_time = None
        self.last_seq = None
        self.counters = {'lines': 0, 'garbage': 0, 'lost_lines': 0, 'timeouts': 0,
                         'disconnects': 0, 'events': 0}

    # --- inputs ------------------------------------------------------------------------------

    def on_connected(self, now):
        """Record that the port was opened; lines are expected from now on."""
        self.connected = True
        self.timed_out = False
        self.last_line_time = now
        self.last_seq = None
        self.fault = ''
        return []

    def on_disconnected(self, now, detail):
        """Record that the port failed, vanished or could not be opened; ``detail`` says how."""
        was_connected = self.connected
        self.connected = False
        self.last_seq = None
        if was_connected:
            self.counters['disconnects'] += 1
        if not was_connected and self.fault:
            return []  # already reported (e.g. still unplugged while retrying)
        return self._fault(detail, reason='unplugged' if was_connected else 'not connected')

    def on_line(self, raw, now):
        """Handle one raw line received from the device; return the events it causes."""
        if not self.connected:
            self.on_connected(now)
        try:
            line = parse_line(raw)
        except PedalProtocolError as err:
            self.counters['garbage'] += 1
            self.last_line_time = now  # the device is alive, only confused
            return self._fault(f'garbage on line: {err}: {bytes(raw)[:80]!r}', reason='garbage on line')
        self.counters['lines'] += 1
        self.last_line_time = now
        outputs = []
        if self.timed_out:
            self.timed_out = False
            self.fault = ''
        if line.event is DeviceEvent.HELLO:
            # A (re)started device: its seq starts afresh; its switch state is unknown until told.
            restarted = self.last_seq is not None
            self.firmware = line.argument
            self.last_seq = line.seq
            self.switch_pressed = None
            if restarted:
                outputs += self._fault(f'device restarted (HELLO,{line.argument})', reason='device restarted')
            return outputs
        if self.last_seq is not None:
            lost = seq_gap(self.last_seq, line.seq)
            if lost:
                self.counters['lost_lines'] += lost
                outputs += self._fault(
                    f'{lost} line(s) lost (seq {self.last_seq} -> {line.seq})', reason='lines lost')
        self.last_seq = line.seq
        if line.event is DeviceEvent.HEARTBEAT:
            outputs += self._switch_report(line.switch_state, edge=False)
        elif line.event is DeviceEvent.DEADMAN:
            outputs += self._switch_report(line.switch_state, edge=True)
        else:
            outputs.append(self._emit(_BUTTON_EVENTS[line.event], f'seq {line.seq}'))
        return outputs

    def poll(self, now):
        """Check the heartbeat timeout; return the events it causes (call every few ms)."""
        if (self.connected and not self.timed_out and self.last_line_time is not None
                and now - self.last_line_time > self.heartbeat_timeout_s):
            self.timed_out = True
            self.counters['timeouts'] += 1
            return self._fault(
                f'timeout: no line for {now - self.last_line_time:.2f} s '
                f'(limit {self.heartbeat_timeout_s:g} s)', reason='timeout')
        return []

    # --- internals ---------------------------------------------------------------------------

    def _switch_report(self, pressed, edge):
        self.switch_pressed = pressed
        if not pressed:
            self.armed = True
            if self.deadman_held:
                self.deadman_held = False
                self.deadman_reason = 'released'
                return [self._emit(PedalEventCode.DEADMAN_RELEASED,
                                   'released' if edge else 'heartbeat reports released')]
            if self.deadman_reason != 'released':
                self.deadman_reason = 'released'
            return []
        if edge and not self.deadman_held:
            if not self.armed:
                self.deadman_reason = 'waiting for release after fault'
                return []
            if self.timed_out or not self.connected:
                return []
            self.deadman_held = True
            self.deadman_reason = ''
            return [self._emit(PedalEventCode.DEADMAN_PRESSED, 'pressed')]
        return []

    def _fault(self, detail, reason):
        self.fault = detail
        self.armed = False
        outputs = [self._emit(PedalEventCode.DEVICE_FAULT, detail)]
        if self.deadman_held:
            self.deadman_held = False
            outputs.append(self._emit(PedalEventCode.DEADMAN_RELEASED, f'released by fault: {reason}'))
        self.deadman_reason = reason
        return outputs

    def _emit(self, code, detail):
        self.counters['events'] += 1
        return PedalOutput(code, detail)
