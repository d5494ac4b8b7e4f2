"""The demonstration recorder as plain Python: one bag per demonstration, driven by method calls.

The recorder node is a thin wrapper that calls these methods from its subscriptions, services and
timers; tests drive them directly.

What goes into a bag (topics and types: :mod:`echo_guidance.bags.schema`):

* the session info (first message), every frame as received, every probe pose and wrench sample,
  every pedal event, and for each frame one synchronised pose with the frame's stamp;
* a frame's synchronised pose is interpolated between the pose samples around the frame's stamp
  (:class:`echo_guidance.sync.PoseBuffer`). A frame newer than the newest pose waits in a small
  pending queue until a pose sample after it arrives; if none comes within ``max_pending_s`` it is
  resolved as it stands, which flags it invalid (``valid = false``) rather than pairing it with a
  stale pose. That wait is measured in *arrival* time (when the middleware received the messages,
  ``received_s``), not in processing time: a recorder that processes its pose queue seconds late
  (a loaded machine) still pairs every frame whose poses arrived in time. A frame is given up when
  the poses that arrived ``max_pending_s`` after it brought none after its stamp, or when no pose
  has arrived at all for ``max_pending_s`` (the arm stream stopped).

Acknowledgement: a frame counts in :attr:`RecorderStatusData.frames_recorded` only after its image
has been handed to the bag writer, which flushes every message to the operating system before it
returns. So every frame counted in a published RecorderStatus survives a ``kill -9`` of the
recorder, and ``echo-guidance bag repair`` turns the cut-off bag into a complete one.

Failure handling:

* a frame with the wrong encoding or size is refused (counted in ``frames_rejected``, reason in the
  status message); the recording goes on and nothing written before is touched;
* the disk guard stops the recording cleanly (bag closed and complete, state STOPPED_DISK_FULL)
  before free space falls below ``min_free_bytes``; ``disk_quota_bytes`` is a byte budget for
  what the recorder writes, a stand-in for a filesystem quota. A write that fails with ENOSPC
  anyway stops the recording with the same state and says the bag needs repair;
* pedal faults (unplugged pedal, garbage on the line) are written to the bag and shown in the
  status; the recording continues and can be stopped with the stop service.
"""

import dataclasses
import datetime
import enum
import errno
import os
import re
import shutil
from pathlib import Path

import numpy as np

from echo_guidance.planes import check_plane

# echo_guidance/msg/PedalEvent constants, repeated so that this module needs no ROS.
TARGET_REACHED, RECORD_START, RECORD_STOP = 1, 2, 3
DEADMAN_PRESSED, DEADMAN_RELEASED, DEVICE_FAULT = 4, 5, 6
PEDAL_EVENT_NAMES = {
    TARGET_REACHED: 'TARGET_REACHED',
    RECORD_START: 'RECORD_START',
    RECORD_STOP: 'RECORD_STOP',
    DEADMAN_PRESSED: 'DEADMAN_PRESSED',
    DEADMAN_RELEASED: 'DEADMAN_RELEASED',
    DEVICE_FAULT: 'DEVICE_FAULT',
}

RECORDING_PLANES = ('PLAX', 'PSAX-AV', 'PSAX-MV', 'A4C')
"""Planes a demonstration may target (the guidance planes plus A4C for segmentation recordings)."""


class RecorderState(enum.IntEnum):
    """The recorder's state; values equal echo_guidance/msg/RecorderStatus constants."""

    IDLE = 0
    RECORDING = 1
    STOPPED_DISK_FULL = 2
    ERROR = 3


class RecorderError(RuntimeError):
    """A request the recorder cannot carry out (start while the disk is full, bad session, ...)."""


class FrameRejected(ValueError):
    """A frame that is not written because its encoding, size or buffer is wrong."""


@dataclasses.dataclass
class RecorderConfig:
    """Recorder settings (the recorder node's parameters; see config/recorder.yaml).

    Attributes:
        output_dir: folder that receives one bag folder per demonstration.
        image_encoding: the only accepted image encoding.
        image_width, image_height: the only accepted image size (the bag stores one size).
        sync_tolerance_s: a frame is paired only with pose samples at most this far before and after it.
        max_pending_s: how long a frame newer than the newest pose may wait for a pose after it, in
            arrival time (see the module docstring): processing late does not count.
        pose_buffer_s: how much pose history is kept for interpolation.
        min_free_bytes: stop before free disk space would fall below this.
        disk_quota_bytes: byte budget for everything this recorder writes (0 = none).
        stop_on_target_reached: end the demonstration at the TARGET_REACHED pedal event.
        start_on_pedal: start/stop bags on RECORD_START/RECORD_STOP pedal events.
        fsync_interval_s: force written data to disk at least this often (power-loss safety; the
            flush after every message already covers a killed process).
    """

    output_dir: str = 'out/demonstrations'
    image_encoding: str = 'mono8'
    image_width: int = 640
    image_height: int = 480
    sync_tolerance_s: float = 0.005
    max_pending_s: float = 3.0
    pose_buffer_s: float = 5.0
    min_free_bytes: int = 256 * 1024 * 1024
    disk_quota_bytes: int = 0
    stop_on_target_reached: bool = False
    start_on_pedal: bool = True
    fsync_interval_s: float = 0.03

    def __post_init__(self):
        """Check every value and say which one is wrong."""
        if not self.output_dir:
            raise ValueError('output_dir must name a folder for the bags')
        if self.image_encoding != 'mono8':
            raise ValueError(
                f'image_encoding must be mono8 (the bag format stores mono8), got {self.image_encoding!r}'
            )
        for name in ('image_width', 'image_height'):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f'{name} must be a positive number of pixels, got {getattr(self, name)}')
        for name in ('min_free_bytes', 'disk_quota_bytes'):
            if int(getattr(self, name)) < 0:
                raise ValueError(f'{name} must not be negative, got {getattr(self, name)}')
        if not float(self.fsync_interval_s) >= 0:
            raise ValueError(f'fsync_interval_s must be >= 0, got {self.fsync_interval_s}')
        for name in ('sync_tolerance_s', 'max_pending_s', 'pose_buffer_s'):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f'{name} must be positive, got {getattr(self, name)}')
        if self.pose_buffer_s < self.max_pending_s + self.sync_tolerance_s:
            raise ValueError(
                f'pose_buffer_s ({self.pose_buffer_s}) must cover max_pending_s + sync_tolerance_s '
                f'({self.max_pending_s + self.sync_tolerance_s}), or waiting frames lose their poses'
            )


@dataclasses.dataclass
class RecorderStatusData:
    """What RecorderStatus carries, plus synchronisation figures for the live display."""

    state: RecorderState = RecorderState.IDLE
    bag_path: str = ''
    target_plane: str = ''
    frames_recorded: int = 0
    poses_recorded: int = 0
    frames_unsynced: int = 0
    frames_dropped: int = 0
    frames_rejected: int = 0
    bytes_written: int = 0
    disk_free_bytes: int = 0
    message: str = ''
    frames_pending: int = 0
    max_sync_gap_ms: float = 0.0
    pedal_fault: str = ''


class SequenceGapCounter:
    """Counts samples lost between publisher and recorder from publication sequence numbers.

    Each publisher numbers its samples 1, 2, 3, ...; a jump forward by k means k - 1 samples never
    arrived (a subscriber queue that overflowed while the recorder fell behind). Numbers are
    followed per publisher; a number not after the last one (a restarted publisher) starts afresh.
    """

    def __init__(self):
        """No publisher seen yet."""
        self._last = {}
        self.lost = 0

    def on_sample(self, publisher, number):
        """Take one sample's (publisher id, sequence number); return how many were lost before it."""
        if number is None:
            return 0
        number = int(number)
        last = self._last.get(publisher)
        self._last[publisher] = number
        if last is None or number <= last:
            return 0
        gap = number - last - 1
        self.lost += gap
        return gap


class DiskSpace:
    """Free space where the bags go, optionally capped by a byte budget (a quota stand-in).

    Args:
        path: a folder on the filesystem that receives the bags.
        quota_bytes: budget for bytes written through this object's accounting (0 = none).
    """

    def __init__(self, path, quota_bytes=0):
        """Remember the folder and the budget."""
        self.path = Path(path)
        self.quota_bytes = int(quota_bytes)
        self.bytes_charged = 0

    def charge(self, nbytes):
        """Account for ``nbytes`` written (only matters for the quota)."""
        self.bytes_charged += int(nbytes)

    def free_bytes(self):
        """Bytes that may still be written: the filesystem's free space, capped by the quota."""
        free = shutil.disk_usage(self.path).free
        if self.quota_bytes:
            free = min(free, self.quota_bytes - self.bytes_charged)
        return max(int(free), 0)


def _safe_name(text):
    """A file-name-safe version of ``text`` (letters, digits, '-', '_')."""
    return re.sub(r'[^A-Za-z0-9_-]+', '-', text).strip('-') or 'x'


def _default_pose_buffer_factory(max_age_s, tolerance_s):
    from echo_guidance.sync import PoseBuffer

    return PoseBuffer(max_age_s=max_age_s, tolerance_s=tolerance_s)


def _is_disk_full(error):
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


class DemonstrationRecorder:
    """Record demonstrations, one bag each; call the ``on_*`` methods as data arrives.

    Times: ``stamp_s`` arguments are message stamps (ROS clock, seconds) and ``stamp_ns`` the same in
    integer nanoseconds (written to the bag unchanged); ``now_s`` is the current ROS time.

    Args:
        config: a RecorderConfig.
        session_defaults: the session fields (see echo_guidance.bags.schema.SESSION_FIELDS) that every
            bag gets unless :meth:`start` overrides them: operator_id, subject_id, target_plane,
            probe_model, flange_to_probe (4×4 mm), crop, image_latency, software_version, extra_yaml.
        log: function(level, message) with level 'info', 'warn' or 'error'.
        writer_factory: function(path, session) -> bag writer (by default a DemonstrationBagWriter with
            the configured fsync interval and this recorder's disk guard as its reserve check).
        pose_buffer_factory: function(max_age_s, tolerance_s) -> pose buffer (PoseBuffer by default).
        disk: a DiskSpace (one on config.output_dir by default).
        session_hook: function(session dict) -> session dict, applied to each new bag's session after
            the overrides (e.g. :func:`echo_guidance.recording.simulated.simulated_patient_session`,
            which declares the virtual patient's target pose for the bag's plane); a ValueError it
            raises refuses the start with its message.
    """

    def __init__(
        self,
        config,
        session_defaults,
        log=None,
        writer_factory=None,
        pose_buffer_factory=None,
        disk=None,
        session_hook=None,
    ):
        """Prepare the output folder and the pose buffer; no bag is open yet."""
        self.config = config
        self.session_defaults = dict(session_defaults)
        self._session_hook = session_hook
        self.log = log or (lambda level, message: None)
        self._writer_factory = writer_factory or self._open_bag_writer
        self.output_dir = Path(config.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.disk = disk or DiskSpace(self.output_dir, config.disk_quota_bytes)
        self.poses = (pose_buffer_factory or _default_pose_buffer_factory)(
            config.pose_buffer_s, config.sync_tolerance_s
        )
        self.status = RecorderStatusData(disk_free_bytes=self.disk.free_bytes())
        self._writer = None
        self._pending = []  # frames waiting for a pose after them: (stamp_s, stamp_ns, received_s)
        self._newest_pose_s = None
        self._pose_arrival_s = None  # arrival time of the newest pose processed
        self._pose_processed_at_s = None  # when (now_s) a pose was last processed
        self.pose_losses = SequenceGapCounter()
        self._stopping_since = None
        self._stop_reason = ''
        self._expected_size = None
        self._bag_count = 0
        self._gap_window_ms = 0.0
        self.poses_rejected = 0
        self.poses_received = 0
        self.frames_received = 0
        self.last_closed_bag = ''

    def _open_bag_writer(self, path, session):
        from echo_guidance.bags import DemonstrationBagWriter

        return DemonstrationBagWriter(
            path,
            session,
            fsync_interval_s=self.config.fsync_interval_s,
            disk_reserve_bytes=self.config.min_free_bytes,
            free_space_fn=lambda _path: self.disk.free_bytes(),
        )

    # ----------------------------------------------------------------------------------------------
    # Starting and stopping

    @property
    def recording(self):
        """True while a bag is open (including the short wait for the last frames' poses)."""
        return self._writer is not None

    def start(self, now_s, **session_overrides):
        """Open a new bag and return its path.

        Raises:
            RecorderError: a bag is already being recorded, the disk is below the guard, or the
                session is invalid (unknown target plane, ...).
        """
        if self._writer is not None and self._stopping_since is None:
            raise RecorderError(f'already recording {self.status.bag_path}; stop it first')
        if self._writer is not None:
            self._finish(now_s)
        session = {**self.session_defaults, **session_overrides}
        try:
            check_plane(session.get('target_plane', ''), RECORDING_PLANES)
        except ValueError as error:
            raise RecorderError(f'cannot start recording: {error}') from error
        if self._session_hook is not None:
            try:
                session = self._session_hook(session)
            except ValueError as error:
                raise RecorderError(f'cannot start recording: {error}') from error
        free = self.disk.free_bytes()
        if free < self.config.min_free_bytes + self.config.image_width * self.config.image_height:
            self.status.disk_free_bytes = free
            raise RecorderError(self._disk_message(free, 'cannot start recording'))
        self._bag_count += 1
        stamp = datetime.datetime.fromtimestamp(now_s, datetime.timezone.utc).strftime('%Y%m%dT%H%M%S')
        name = (
            f'{stamp}_{_safe_name(session["target_plane"])}_{_safe_name(str(session.get("subject_id", "")))}'
            f'_{self._bag_count:03d}'
        )
        path = self.output_dir / name
        while path.exists():
            self._bag_count += 1
            path = self.output_dir / f'{name[:-4]}_{self._bag_count:03d}'
        session['width'] = self.config.image_width
        session['height'] = self.config.image_height
        session['stamp_ns'] = int(round(now_s * 1e9))
        try:
            self._writer = self._writer_factory(path, session)
        except OSError as error:
            self._enter_failure(error, 'cannot open a new bag', bag_cut_off=False)
            raise RecorderError(self.status.message) from error
        except ValueError as error:  # an invalid session (InvalidSessionError)
            raise RecorderError(f'cannot start recording: {error}') from error
        self._expected_size = (self.config.image_width, self.config.image_height)
        self._stopping_since = None
        self._stop_reason = ''
        self._pending = []
        self.status = RecorderStatusData(
            state=RecorderState.RECORDING,
            bag_path=str(path),
            target_plane=session['target_plane'],
            disk_free_bytes=free,
            pedal_fault=self.status.pedal_fault,
        )
        self.log('info', f'recording demonstration to {path} (target {session["target_plane"]})')
        return str(path)

    def stop(self, now_s, reason='stop requested'):
        """Stop taking frames and close the bag once the waiting frames have their poses.

        Returns the bag path (empty when nothing was being recorded). Frames stamped after this
        call are not recorded; poses keep being written until every waiting frame has its pose or
        has been given up (``max_pending_s`` in arrival time, or the pose stream silent that long);
        then the bag is closed (see :meth:`poll`).
        """
        if self._writer is None:
            return ''
        if self._stopping_since is None:
            self._stopping_since = now_s
            self._stop_reason = reason
            self.log('info', f'stopping {self.status.bag_path}: {reason}')
        if not self._pending:
            self._finish(now_s)
        return self.status.bag_path

    def _finish(self, now_s):
        """Resolve every waiting frame, close the bag and go idle."""
        self._resolve_pending(now_s, force=True)
        if self._writer is None:  # a write failed while resolving
            return
        path = self.status.bag_path
        try:
            self._writer.close()
        except OSError as error:
            self._writer = None
            self._enter_failure(error, 'closing the bag failed')
            return
        self._writer = None
        self._refresh_bytes()
        self.last_closed_bag = path
        if self.status.state != RecorderState.RECORDING:
            return
        if self._stop_reason == 'disk guard':
            self.status.state = RecorderState.STOPPED_DISK_FULL
            self.status.message = (
                self._disk_message(self.disk.free_bytes(), 'recording stopped')
                + f'; {path} is closed and complete with {self.status.frames_recorded} frames'
            )
            self.log('error', self.status.message)
            return
        self.status.state = RecorderState.IDLE
        self.status.message = (
            f'saved {path}: {self.status.frames_recorded} frames '
            f'({self.status.frames_unsynced} without a valid pose), '
            f'{self.status.poses_recorded} poses; {self._stop_reason}'
        )
        self.log('info', self.status.message)

    def close(self, now_s):
        """Close any open bag at once (node shutdown)."""
        if self._writer is not None:
            self._stopping_since = self._stopping_since or now_s
            self._stop_reason = self._stop_reason or 'recorder shut down'
            self._finish(now_s)

    # ----------------------------------------------------------------------------------------------
    # Incoming data

    def on_pose(
        self, stamp_s, stamp_ns, T_base_probe_mm, now_s, received_s=None, sequence=None, checked=False
    ):
        """Take one probe pose sample (4×4 mm): keep it for synchronisation, write it when recording.

        Args:
            received_s: when the middleware received it, on the clock of ``now_s`` (default ``now_s``):
                frames wait for poses in arrival time, so processing late flags nothing.
            sequence: (publisher id, publication sequence number), to count samples lost on the way
                (``pose_losses``), or None.
            checked: the matrix is already known to be rigid and finite (built from a checked unit
                quaternion): the pose buffer skips its own check.
        """
        self.poses_received += 1
        if sequence is not None:
            self.pose_losses.on_sample(*sequence)
        try:
            if checked:
                self.poses.add(stamp_s, T_base_probe_mm, checked=True)
            else:
                self.poses.add(stamp_s, T_base_probe_mm)
        except ValueError as error:
            self.poses_rejected += 1
            if self.poses_rejected == 1 or self.poses_rejected % 1000 == 0:
                self.log('warn', f'pose sample refused ({self.poses_rejected} so far): {error}')
            return
        if self._newest_pose_s is None or stamp_s > self._newest_pose_s:
            self._newest_pose_s = stamp_s
        received_s = now_s if received_s is None else received_s
        if self._pose_arrival_s is None or received_s > self._pose_arrival_s:
            self._pose_arrival_s = received_s
        self._pose_processed_at_s = now_s
        if self._writer is None:
            return
        log_ns = int(now_s * 1e9)
        if self._write(
            lambda: self._writer.write_probe_pose(T_base_probe_mm, stamp_ns, log_time_ns=log_ns), 200
        ):
            self.status.poses_recorded += 1
        if self._pending and self._writer is not None:
            self._resolve_pending(now_s, force=False)
            if self._stopping_since is not None and not self._pending:
                self._finish(now_s)

    def on_wrench(self, stamp_ns, force, torque, now_s):
        """Write one external-wrench sample (base frame, N and N·m) when recording."""
        if self._writer is not None and self._stopping_since is None:
            log_ns = int(now_s * 1e9)
            self._write(lambda: self._writer.write_wrench(force, torque, stamp_ns, log_time_ns=log_ns), 100)

    def check_image(self, encoding, width, height, step, data_length):
        """Raise FrameRejected unless the image has the configured encoding and size and a whole buffer."""
        if encoding != self.config.image_encoding:
            raise FrameRejected(f'encoding {encoding!r}, expected {self.config.image_encoding!r}')
        if (width, height) != self._expected_size:
            raise FrameRejected(
                f'size {width}x{height}, expected {self._expected_size[0]}x{self._expected_size[1]}'
            )
        if width <= 0 or height <= 0:
            raise FrameRejected(f'size {width}x{height} is empty')
        if step < width:
            raise FrameRejected(f'row step {step} is shorter than the width {width}')
        if data_length != step * height:
            raise FrameRejected(
                f'buffer holds {data_length} bytes, expected step {step} x height {height} = {step * height}'
            )

    def on_image(self, data, encoding, width, height, step, stamp_s, stamp_ns, now_s, received_s=None):
        """Take one frame (sensor_msgs/Image fields); return True when it was written.

        A refused frame is counted and reported (status message and log) and changes nothing else.
        ``received_s`` is when the middleware received it (default ``now_s``), see :meth:`on_pose`.
        """
        self.frames_received += 1
        if self._writer is None or self._stopping_since is not None:
            return False
        try:
            self.check_image(encoding, width, height, step, len(data))
        except FrameRejected as rejection:
            self.status.frames_rejected += 1
            self.status.message = (
                f'frame at {stamp_s:.6f} s rejected: {rejection} '
                f'({self.status.frames_rejected} rejected so far)'
            )
            self.log('error', self.status.message)
            return False
        buffer = np.frombuffer(data, dtype=np.uint8).reshape(height, step)
        image = buffer[:, :width] if step != width else buffer
        free = self.disk.free_bytes()
        self.status.disk_free_bytes = free
        if free - image.nbytes < self.config.min_free_bytes:
            self._stop_disk_full(free, now_s)
            return False
        log_ns = int(now_s * 1e9)
        if not self._write(
            lambda: self._writer.write_image(image, stamp_ns, log_time_ns=log_ns), image.nbytes + 200
        ):
            return False
        self.status.frames_recorded += 1  # acknowledged: the writer flushed it
        if self._newest_pose_s is not None and stamp_s <= self._newest_pose_s:
            self._write_synced(stamp_s, stamp_ns, now_s)
        else:
            self._pending.append((stamp_s, stamp_ns, now_s if received_s is None else received_s))
        return True

    def on_frames_dropped(self, count):
        """Add ``count`` frames lost upstream (sequence gaps reported by the capture node)."""
        if self._writer is not None and count > 0:
            self.status.frames_dropped += int(count)

    def on_pedal_event(self, event, stamp_s, stamp_ns, source='', detail='', now_s=None):
        """Write a pedal event and act on it: start/stop bags, the end mark, device faults."""
        now_s = stamp_s if now_s is None else now_s
        name = PEDAL_EVENT_NAMES.get(event, f'unknown event {event}')
        if event == DEVICE_FAULT:
            self.status.pedal_fault = f'pedal fault from {source or "pedal"}: {detail or "no detail"}'
            self.log(
                'error',
                self.status.pedal_fault
                + (' (recording continues; stop it with the service)' if self._writer is not None else ''),
            )
        elif event in (RECORD_START, RECORD_STOP, TARGET_REACHED) and self.status.pedal_fault:
            self.status.pedal_fault = ''  # the pedal works again
        if event == RECORD_START and self.config.start_on_pedal:
            if self._writer is not None and self._stopping_since is None:
                self.log('warn', f'RECORD_START ignored: already recording {self.status.bag_path}')
            else:
                try:
                    self.start(now_s)
                except RecorderError as error:
                    self.status.message = str(error)
                    self.log('error', str(error))
        if self._writer is not None and (self._stopping_since is None or event == RECORD_STOP):
            log_ns = int(now_s * 1e9)
            self._write(
                lambda: self._writer.write_pedal_event(
                    int(event), stamp_ns, source=source, detail=detail, log_time_ns=log_ns
                ),
                200,
            )
        if event == TARGET_REACHED and self._writer is not None:
            self.log('info', f'target reached marked at {stamp_s:.3f} s in {self.status.bag_path}')
            if self.config.stop_on_target_reached:
                self.stop(now_s, 'target reached')
        elif event == RECORD_STOP and self.config.start_on_pedal:
            if self._writer is None:
                self.log('warn', 'RECORD_STOP ignored: not recording')
            else:
                self.stop(now_s, 'pedal RECORD_STOP')
        if event not in PEDAL_EVENT_NAMES:
            self.log('warn', f'pedal sent {name}; recorded as is')

    # ----------------------------------------------------------------------------------------------
    # Periodic work

    def poll(self, now_s):
        """Resolve frames that waited too long, finish a pending stop, check the disk; return the status."""
        if self._writer is not None:
            if any(self._given_up(received, now_s) for _, _, received in self._pending):
                self._resolve_pending(now_s, force=False, expire=True)
            if self._stopping_since is not None and not self._pending:
                self._finish(now_s)
        if self._writer is not None:
            free = self.disk.free_bytes()
            self.status.disk_free_bytes = free
            if free < self.config.min_free_bytes:
                if self._stop_reason == 'disk guard' and self._stopping_since is not None:
                    self._finish(now_s)  # no room left to wait for the last frames' poses
                else:
                    self._stop_disk_full(free, now_s)
        else:
            self.status.disk_free_bytes = self.disk.free_bytes()
        self._refresh_bytes()
        self.status.frames_pending = len(self._pending)
        return self.status

    def pose_lag_s(self, now_s):
        """How far the newest pose received lags behind ``now_s`` (None before the first pose)."""
        return None if self._newest_pose_s is None else now_s - self._newest_pose_s

    def pose_backlog_s(self, now_s):
        """How long ago the newest pose processed arrived: the recorder's queueing delay (None before any)."""
        return None if self._pose_arrival_s is None else now_s - self._pose_arrival_s

    def _given_up(self, frame_received_s, now_s):
        """True when a waiting frame can no longer get a pose after it (see the module docstring)."""
        wait = self.config.max_pending_s
        if self._pose_arrival_s is not None and self._pose_arrival_s - frame_received_s > wait:
            return True  # poses that arrived long after the frame brought none after its stamp
        silent = self._pose_processed_at_s is None or now_s - self._pose_processed_at_s > wait
        return silent and now_s - frame_received_s > wait

    def take_sync_gap_ms(self):
        """Largest pose-sample interval around a frame since the last call (ms), then reset."""
        value, self._gap_window_ms = self._gap_window_ms, 0.0
        return value

    # ----------------------------------------------------------------------------------------------
    # Internals

    def _resolve_pending(self, now_s, force, expire=False):
        """Write the synced pose of waiting frames that now have a pose after them (or must go now)."""
        still_waiting = []
        for stamp_s, stamp_ns, received in self._pending:
            ready = self._newest_pose_s is not None and stamp_s <= self._newest_pose_s
            expired = expire and self._given_up(received, now_s)
            if ready or expired or force:
                self._write_synced(stamp_s, stamp_ns, now_s)
            else:
                still_waiting.append((stamp_s, stamp_ns, received))
            if self._writer is None:
                return
        self._pending = still_waiting

    def _write_synced(self, stamp_s, stamp_ns, now_s):
        result = self.poses.pose_at(stamp_s)
        gap_ms = 1e3 * max(result.gap_before_s, 0.0) + 1e3 * max(result.gap_after_s, 0.0)
        self._gap_window_ms = max(self._gap_window_ms, gap_ms)
        self.status.max_sync_gap_ms = max(self.status.max_sync_gap_ms, gap_ms)
        T = result.T_mm if result.valid else None
        log_ns = int(now_s * 1e9)
        if self._write(
            lambda: self._writer.write_synced_pose(
                T, stamp_ns, result.valid, result.gap_before_s, result.gap_after_s, log_time_ns=log_ns
            ),
            300,
        ):
            if not result.valid:
                self.status.frames_unsynced += 1
                if self.status.frames_unsynced == 1 or self.status.frames_unsynced % 100 == 0:
                    self.log(
                        'warn',
                        f'frame at {stamp_s:.6f} s has no valid pose ({result.reason}); '
                        f'flagged invalid ({self.status.frames_unsynced} so far)',
                    )

    def _write(self, write, nbytes):
        """Run one writer call; on a disk-full or I/O error stop the recording. Return True on success."""
        if self._writer is None:
            return False
        try:
            write()
        except OSError as error:
            if type(error).__name__ == 'DiskSpaceLow':  # the writer's own reserve check closed the bag
                self._writer = None
                self.last_closed_bag = self.status.bag_path
                self._pending = []
                self.status.state = RecorderState.STOPPED_DISK_FULL
                self.status.message = (
                    self._disk_message(error.free_bytes, 'recording stopped')
                    + f'; {self.status.bag_path} is closed and complete'
                )
                self.log('error', self.status.message)
            else:
                self._enter_failure(error, 'writing to the bag failed')
            return False
        except ValueError as error:  # refused by the writer before anything was written
            self.log('error', f'not written to the bag: {error}')
            return False
        self.disk.charge(nbytes)
        return True

    def _enter_failure(self, error, what, bag_cut_off=True):
        """A write failed: leave the bag as it is on disk (repairable) and report why.

        After a failed write (or a failed close) the writer leaves the bag marked in progress,
        possibly ending in a partial record: everything before is intact and ``echo-guidance bag
        repair`` completes it, which the message says.
        """
        path = self.status.bag_path
        writer, self._writer = self._writer, None
        self._pending = []
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the bag stays cut off either way; the message says so
                pass
        repair = (
            f'; the bag is cut off: repair it with `echo-guidance bag repair {path}`' if bag_cut_off else ''
        )
        if _is_disk_full(error):
            self.status.state = RecorderState.STOPPED_DISK_FULL
            self.status.message = f'disk full: {what} ({error.strerror}); recording stopped{repair}'
        else:
            self.status.state = RecorderState.ERROR
            self.status.message = f'{what}: {error}{repair}'
        self.log('error', self.status.message)

    def _disk_message(self, free, what):
        quota = (
            f' (quota {self.config.disk_quota_bytes / 1e6:.1f} MB)' if self.config.disk_quota_bytes else ''
        )
        return (
            f'{what}: only {free / 1e6:.1f} MB free for {self.output_dir}{quota}, below the guard of '
            f'{self.config.min_free_bytes / 1e6:.1f} MB (recorder parameter min_free_bytes)'
        )

    def _stop_disk_full(self, free, now_s):
        """Stop before the disk fills: no more frames, the waiting ones get their poses, the bag is closed."""
        if self._stop_reason == 'disk guard' and self._stopping_since is not None:
            return
        self._stopping_since = None  # a user stop in progress becomes a disk-guard stop
        self.log('warn', self._disk_message(free, 'disk guard reached') + '; closing the bag')
        self.stop(now_s, 'disk guard')

    def _refresh_bytes(self):
        path = self.status.bag_path
        if not path:
            return
        try:
            self.status.bytes_written = sum(
                entry.stat().st_size for entry in os.scandir(path) if entry.is_file()
            )
        except OSError:
            pass
