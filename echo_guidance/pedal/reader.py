"""Reads EG1 lines from a serial port in a thread and feeds the pedal state machine.

The port is anything pyserial's ``serial_for_url`` opens: a device path (``/dev/ttyACM0``), a pty,
``loop://``, ``socket://host:port``. A read error or a vanished port is reported as an unplug;
the reader then retries opening the port every ``reconnect_interval_s`` until :meth:`stop`.
"""

import threading
import time

from echo_guidance.pedal.protocol import MAX_LINE_BYTES
from echo_guidance.pedal.state import PedalStateMachine


def open_serial_port(url, baudrate=115200, timeout_s=0.02):
    """Open ``url`` with pyserial (exclusive access for device paths)."""
    import serial
    kwargs = {'baudrate': baudrate, 'timeout': timeout_s}
    if url.startswith('/dev/'):
        kwargs['exclusive'] = True
    return serial.serial_for_url(url, **kwargs)


class SerialPedalReader:
    """Runs the pedal state machine on lines read from a serial port.

    Args:
        port: the pyserial URL or device path (used for messages and by the default opener).
        on_events: called with a list of :class:`~echo_guidance.pedal.state.PedalOutput` whenever
            something happens (from the reader thread).
        heartbeat_timeout_s: passed to the state machine.
        reconnect_interval_s: wait between attempts to (re)open the port.
        opener: callable returning an open pyserial object; defaults to :func:`open_serial_port`.
        clock: monotonic clock.
    """

    def __init__(self, port, on_events=None, heartbeat_timeout_s=0.5, reconnect_interval_s=0.5,
                 baudrate=115200, opener=None, clock=time.monotonic):
        """Prepare the reader; :meth:`start` launches the thread."""
        if reconnect_interval_s <= 0:
            raise ValueError(f'reconnect interval must be > 0 s, got {reconnect_interval_s!r}')
        self.port = port
        self.state = PedalStateMachine(heartbeat_timeout_s)
        self._on_events = on_events or (lambda events: None)
        self._reconnect_interval_s = float(reconnect_interval_s)
        self._opener = opener or (lambda: open_serial_port(port, baudrate))
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._serial = None
        self._buffer = bytearray()
        self.callback_errors = 0
        self.last_callback_error = ''

    def start(self):
        """Start the reader thread."""
        if self._thread is not None:
            raise RuntimeError('pedal reader already started')
        self._thread = threading.Thread(target=self._run, name='pedal-reader', daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s=2.0):
        """Stop the thread and close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._close()

    def snapshot(self):
        """Return (deadman_held, deadman_reason, connected, fault, counters copy) atomically."""
        with self._lock:
            s = self.state
            return s.deadman_held, s.deadman_reason, s.connected, s.fault, dict(s.counters)

    def _deliver(self, events):
        if events:
            try:
                self._on_events(events)
            except Exception as err:  # a consumer's bug must not stop the reader (and freeze the deadman)
                self.callback_errors += 1
                self.last_callback_error = f'{type(err).__name__}: {err}'

    def _close(self):
        if self._serial is not None:
            try:
                self._serial.close()
            except Exception:  # closing a port that vanished may fail; it is gone either way
                pass
            self._serial = None
        self._buffer.clear()

    def _run(self):
        try:
            self._read_loop()
        except Exception as err:
            # Whatever stopped the reader, the deadman must not stay held on stale state; the
            # fault event carries the error to the node's log.
            with self._lock:
                events = self.state.on_disconnected(self._clock(), f'pedal reader stopped: {err!r}')
            self._deliver(events)

    def _read_loop(self):
        while not self._stop.is_set():
            if self._serial is None:
                try:
                    self._serial = self._opener()
                except Exception as err:  # pyserial raises SerialException, OSError, ValueError
                    with self._lock:
                        events = self.state.on_disconnected(self._clock(), f'cannot open {self.port}: {err}')
                    self._deliver(events)
                    self._stop.wait(self._reconnect_interval_s)
                    continue
                with self._lock:
                    events = self.state.on_connected(self._clock())
                self._deliver(events)
            try:
                waiting = self._serial.in_waiting
                chunk = self._serial.read(max(waiting, 1))
            except Exception as err:  # SerialException/OSError: unplugged or port gone
                self._close()
                with self._lock:
                    events = self.state.on_disconnected(self._clock(), f'unplugged: {err}')
                self._deliver(events)
                self._stop.wait(self._reconnect_interval_s)
                continue
            events = []
            with self._lock:
                now = self._clock()
                if chunk:
                    self._buffer.extend(chunk)
                    while True:
                        newline = self._buffer.find(b'\n')
                        if newline < 0:
                            break
                        line = bytes(self._buffer[:newline + 1])
                        del self._buffer[:newline + 1]
                        events += self.state.on_line(line, now)
                    if len(self._buffer) > MAX_LINE_BYTES:
                        # No line ending within the maximum length: noise, not a protocol line.
                        line = bytes(self._buffer)
                        self._buffer.clear()
                        events += self.state.on_line(line, now)
                events += self.state.poll(now)
            self._deliver(events)
