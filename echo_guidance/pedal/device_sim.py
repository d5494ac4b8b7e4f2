"""Emulates the pedal device on a pseudo-terminal, for tests, demos and the simulation profile.

:class:`PtyPedalDevice` opens a pty pair; the host side (the pedal node) opens :attr:`port` like a
real serial device. The emulator sends ``HELLO`` on start, heartbeats at ``heartbeat_hz`` and
protocol lines for each button action; :meth:`unplug` closes the device end, as pulling the USB
cable would.

Run ``python -m echo_guidance.pedal.device_sim`` for an interactive device: it prints the port to
give the pedal node and reads single-letter commands from stdin (``h`` for help), or
``--script FILE`` to replay a YAML list of ``{at_s: <seconds>, action: <name>}`` entries.
"""

import argparse
import os
import sys
import threading
import time
import tty

from echo_guidance.pedal.protocol import SEQ_MODULUS, DeviceEvent, format_line

ACTIONS = ('press', 'release', 'target', 'rec_start', 'rec_stop', 'unplug', 'mute', 'unmute')


class PtyPedalDevice:
    """A pedal device behind a pty.

    Args:
        heartbeat_hz: heartbeat rate (the protocol asks for >= 5 Hz; 0 disables heartbeats).
        firmware: the id sent in HELLO.
        send_hello: send HELLO when started.
    """

    def __init__(self, heartbeat_hz=10.0, firmware='eg-pedal-sim-1', send_hello=True):
        """Open the pty pair; :meth:`start` starts talking."""
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self.heartbeat_hz = float(heartbeat_hz)
        self.firmware = firmware
        self._send_hello = send_hello
        self._seq = 0
        self.pressed = False
        self.muted = False
        self.unplugged = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        """Send HELLO and start the heartbeat thread."""
        if self._send_hello:
            self._send(DeviceEvent.HELLO, self.firmware)
        if self.heartbeat_hz > 0:
            self._thread = threading.Thread(target=self._heartbeat, name='pedal-sim-hb', daemon=True)
            self._thread.start()
        return self

    def _heartbeat(self):
        period = 1.0 / self.heartbeat_hz
        while not self._stop.wait(period):
            if not self.muted:
                self._send(DeviceEvent.HEARTBEAT, '1' if self.pressed else '0')

    def _send(self, event, argument=''):
        with self._lock:
            if self.unplugged:
                return
            line = format_line(self._seq, event, argument)
            self._seq = (self._seq + 1) % SEQ_MODULUS
            self._write(line)

    def _write(self, data):
        try:
            os.write(self._master, data)
        except OSError:
            self.unplugged = True

    def send_raw(self, data):
        """Write raw bytes (e.g. garbage) to the host; does not advance the sequence number."""
        with self._lock:
            if not self.unplugged:
                self._write(bytes(data))

    def skip_seq(self, count=1):
        """Advance the sequence number as if ``count`` lines had been lost on the way."""
        with self._lock:
            self._seq = (self._seq + count) % SEQ_MODULUS

    def press(self):
        """Press the deadman switch."""
        self.pressed = True
        self._send(DeviceEvent.DEADMAN, '1')

    def release(self):
        """Release the deadman switch."""
        self.pressed = False
        self._send(DeviceEvent.DEADMAN, '0')

    def target(self):
        """Press the 'target reached' button."""
        self._send(DeviceEvent.TARGET)

    def rec_start(self):
        """Press the 'start recording' button."""
        self._send(DeviceEvent.REC_START)

    def rec_stop(self):
        """Press the 'stop recording' button."""
        self._send(DeviceEvent.REC_STOP)

    def mute(self):
        """Stop heartbeats (a hung device) without closing the port."""
        self.muted = True

    def unmute(self):
        """Resume heartbeats."""
        self.muted = False

    def unplug(self):
        """Close the device end of the pty, as pulling the cable would."""
        with self._lock:
            if not self.unplugged:
                self.unplugged = True
                os.close(self._master)
                self._master = None

    def do(self, action):
        """Perform one of ``ACTIONS`` by name."""
        if action not in ACTIONS:
            raise ValueError(f'unknown pedal action {action!r}; expected one of {", ".join(ACTIONS)}')
        getattr(self, action)()

    def close(self):
        """Stop the heartbeat and close both pty ends."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        self.unplug()
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None

    def __enter__(self):
        """Start the device."""
        return self.start()

    def __exit__(self, *exc):
        """Close the device."""
        self.close()
        return False


def load_script(path):
    """Load a YAML script: a list of ``{at_s: float, action: str}`` sorted by time."""
    import yaml
    with open(path) as handle:
        entries = yaml.safe_load(handle)
    if not isinstance(entries, list):
        raise ValueError(f'{path}: a pedal script is a YAML list of {{at_s, action}} entries')
    script = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {'at_s', 'action'}:
            raise ValueError(f'{path}: entry {i} must have exactly the keys at_s and action, got {entry!r}')
        at = float(entry['at_s'])
        if at < 0:
            raise ValueError(f'{path}: entry {i} has negative at_s {at}')
        if entry['action'] not in ACTIONS:
            raise ValueError(
                f'{path}: entry {i}: unknown action {entry["action"]!r}; expected one of {ACTIONS}')
        script.append((at, entry['action']))
    return sorted(script)


def run_script(device, script, stop_event=None, clock=time.monotonic):
    """Perform ``script`` [(at_s, action)] on ``device`` relative to now."""
    stop_event = stop_event or threading.Event()
    t0 = clock()
    for at, action in script:
        if stop_event.wait(max(0.0, t0 + at - clock())):
            return
        device.do(action)


KEYS = {'p': 'press', 'r': 'release', 't': 'target', 's': 'rec_start', 'x': 'rec_stop',
        'u': 'unplug', 'm': 'mute', 'n': 'unmute'}


def run_keyboard(device, stream=sys.stdin, out=sys.stdout):
    """Map single-letter lines from ``stream`` to actions until EOF or 'q'."""
    help_text = ', '.join(f'{k}={a}' for k, a in KEYS.items()) + ', d=toggle deadman, q=quit'
    for line in stream:
        key = line.strip().lower()
        if key == 'q':
            return
        if key == 'd':
            device.release() if device.pressed else device.press()
        elif key in KEYS:
            device.do(KEYS[key])
        else:
            print(help_text, file=out, flush=True)
            continue
        print(f'{KEYS.get(key, "toggle")} (deadman {"held" if device.pressed else "released"})',
              file=out, flush=True)


def main(argv=None):
    """Run an emulated pedal device until stdin closes or the script ends."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--heartbeat-hz', type=float, default=10.0)
    parser.add_argument('--script', help='YAML list of {at_s, action}; default: keyboard on stdin')
    args = parser.parse_args(argv)
    with PtyPedalDevice(heartbeat_hz=args.heartbeat_hz) as device:
        print(f'pedal device on {device.port}', flush=True)
        if args.script:
            run_script(device, load_script(args.script))
        else:
            run_keyboard(device)
    return 0


if __name__ == '__main__':
    sys.exit(main())
