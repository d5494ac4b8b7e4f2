"""The live status of a recording set-up: what `echo-guidance record` shows once a second.

:class:`StatusSnapshot` collects the latest RecorderStatus and the diagnostics of the arm,
capture and recorder nodes (plain Python, filled by :class:`RosStatusMonitor`'s subscriptions);
:func:`format_status` turns it into one line: state, frames, poses, sync gap, drops, disk.
"""

import dataclasses
import time

STATE_NAMES = {0: 'IDLE', 1: 'REC', 2: 'DISK FULL', 3: 'ERROR'}
LEVEL_NAMES = {0: 'OK', 1: 'WARN', 2: 'ERROR', 3: 'STALE'}


@dataclasses.dataclass
class StatusSnapshot:
    """Latest known status.

    Attributes:
        recorder: RecorderStatus fields as a dict (None before the first message).
        diagnostics: {status name: (level, message, {key: value}, receive time)}.
        recording_since: monotonic time the current bag started, or None.
    """

    recorder: dict | None = None
    diagnostics: dict = dataclasses.field(default_factory=dict)
    recording_since: float | None = None

    def on_recorder_status(self, fields, now=None):
        """Take one RecorderStatus (as a dict of its fields)."""
        now = time.monotonic() if now is None else now
        recording = fields.get('state') == 1
        if recording and (
            self.recorder is None
            or self.recorder.get('bag_path') != fields.get('bag_path')
            or self.recorder.get('state') != 1
        ):
            self.recording_since = now
        if not recording:
            self.recording_since = None
        self.recorder = dict(fields)

    def on_diagnostic(self, name, level, message, values, now=None):
        """Take one DiagnosticStatus."""
        self.diagnostics[name] = (int(level), message, dict(values), time.monotonic() if now is None else now)

    def find(self, fragment):
        """The diagnostics entry whose name contains ``fragment``, or None."""
        for name, entry in self.diagnostics.items():
            if fragment in name:
                return entry
        return None


def _bytes(n):
    for unit in ('B', 'kB', 'MB', 'GB', 'TB'):
        if abs(n) < 1000 or unit == 'TB':
            return f'{n:.1f} {unit}' if unit != 'B' else f'{int(n)} B'
        n /= 1000.0
    return f'{n:.1f} TB'


def format_status(snapshot, now=None):
    """One status line: state and duration, frames, poses, sync gap, drops, disk, problems."""
    now = time.monotonic() if now is None else now
    parts = []
    status = snapshot.recorder
    if status is None:
        parts.append('recorder: no status yet')
    else:
        state = STATE_NAMES.get(status.get('state'), f'state {status.get("state")}')
        if snapshot.recording_since is not None:
            elapsed = int(now - snapshot.recording_since)
            state += f' {elapsed // 60:02d}:{elapsed % 60:02d}'
        parts.append(state)
        parts.append(f'frames {status.get("frames_recorded", 0)}')
        parts.append(f'poses {status.get("poses_recorded", 0)}')
        parts.append(f'unsynced {status.get("frames_unsynced", 0)}')
        parts.append(f'dropped {status.get("frames_dropped", 0)}')
    recorder_diag = snapshot.find('recorder')
    if recorder_diag is not None:
        values = recorder_diag[2]
        if values.get('sync_gap_max_ms'):
            parts.append(f'sync gap {float(values["sync_gap_max_ms"]):.1f} ms')
        if values.get('pose_lag_ms', 'none') != 'none':
            parts.append(f'pose lag {float(values["pose_lag_ms"]):.0f} ms')
        if values.get('frames_rejected', '0') != '0':
            parts.append(f'rejected {values["frames_rejected"]}')
    if status is not None:
        parts.append(f'bag {_bytes(status.get("bytes_written", 0))}')
        parts.append(f'disk free {_bytes(status.get("disk_free_bytes", 0))}')
    for label, fragment in (('arm', 'arm_state'), ('capture', 'capture'), ('pedal', 'pedal')):
        entry = snapshot.find(fragment)
        if entry is None:
            continue
        level, message, _, received = entry
        if now - received > 3.0:
            parts.append(f'{label}: silent')
        elif level != 0:
            parts.append(f'{label} {LEVEL_NAMES.get(level, level)}: {message}')
    if status is not None and status.get('message'):
        parts.append(status['message'])
    return ' | '.join(parts)


def recorder_status_fields(msg):
    """The fields of a RecorderStatus message as a plain dict."""
    return {
        name: getattr(msg, name)
        for name in (
            'state',
            'bag_path',
            'target_plane',
            'frames_recorded',
            'poses_recorded',
            'frames_unsynced',
            'frames_dropped',
            'bytes_written',
            'disk_free_bytes',
            'message',
        )
    }


class RosStatusMonitor:
    """Subscribe to ``/recorder/status`` and ``/diagnostics`` on ``node`` and keep a StatusSnapshot.

    Also offers the recorder's start/stop services.
    """

    def __init__(self, node, recorder_name='recorder'):
        """Create the subscriptions and service clients."""
        from diagnostic_msgs.msg import DiagnosticArray
        from std_srvs.srv import Trigger

        from echo_guidance.msg import RecorderStatus

        self.node = node
        self.snapshot = StatusSnapshot()
        self.status_messages = []
        node.create_subscription(RecorderStatus, f'/{recorder_name}/status', self._on_status, 10)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        self.start_client = node.create_client(Trigger, f'/{recorder_name}/start')
        self.stop_client = node.create_client(Trigger, f'/{recorder_name}/stop')
        self._trigger = Trigger

    def _on_status(self, msg):
        fields = recorder_status_fields(msg)
        self.status_messages.append(fields)
        self.snapshot.on_recorder_status(fields)

    def _on_diagnostics(self, msg):
        for status in msg.status:
            level = status.level[0] if isinstance(status.level, (bytes, bytearray)) else int(status.level)
            self.snapshot.on_diagnostic(
                status.name, level, status.message, {kv.key: kv.value for kv in status.values}
            )

    def call(self, client, executor, timeout_s=10.0):
        """Call a Trigger service, spinning ``executor``; return (success, message)."""
        if not client.wait_for_service(timeout_sec=timeout_s):
            return False, f'service {client.srv_name} not available after {timeout_s:.0f} s'
        future = client.call_async(self._trigger.Request())
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        if not future.done():
            return False, f'service {client.srv_name} did not answer within {timeout_s:.0f} s'
        result = future.result()
        return bool(result.success), result.message
