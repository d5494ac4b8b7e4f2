"""Crash-safe writer of demonstration bags (rosbag2 directory, one unchunked MCAP file).

Every message is handed to the operating system as soon as it is written (the MCAP file is not
chunked and the stream is flushed after each message), so killing the recording process loses at
most the message being written. The data-section checksum (CRC-32 in ``DataEnd``) is computed
incrementally as the bytes are written and stored on close, with the summary checksum. Surviving a
power cut additionally needs the data on disk: ``fsync_interval_s`` / ``fsync_every_messages``
choose how often that is forced (see docs/bag-format.md, "Crash safety"). ``metadata.yaml`` is
written when the bag is opened, marked "in progress", and rewritten with the final counts on
close; a bag killed mid-recording is therefore recognisably unfinished and ``repair_bag`` can
complete it.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import yaml

import echo_guidance
from echo_guidance.bags import _metadata, schema
from echo_guidance.bags._convert import check_rigid_matrix, matrix_mm_to_position_quaternion, split_stamp_ns
from echo_guidance.bags.integrity import CHECKSUMS_KEY, CHECKSUMS_MARK


class BagWriteError(RuntimeError):
    """The bag cannot be written (closed, failed earlier, or the target path is unusable)."""


class InvalidFrameError(ValueError):
    """An image given to the writer does not match the session's mono8 frame geometry."""


class InvalidSessionError(ValueError):
    """The session description given to the writer is incomplete or malformed."""


class DiskSpaceLow(OSError):
    """Free disk space fell below the writer's reserve; the bag was finalised before raising.

    Attributes:
        free_bytes: free space reported at the check.
        reserve_bytes: the configured reserve.
        bag_path: the (finalised, readable) bag.
    """

    def __init__(self, free_bytes, reserve_bytes, bag_path):
        """Record the numbers and build the message."""
        self.free_bytes = int(free_bytes)
        self.reserve_bytes = int(reserve_bytes)
        self.bag_path = str(bag_path)
        super().__init__(
            f'disk space low: {self.free_bytes} bytes free, reserve is {self.reserve_bytes} bytes; '
            f'bag {self.bag_path} was closed and finalised with everything written so far'
        )


def _default_free_space(path):
    """Return the free bytes on the filesystem holding ``path``."""
    return shutil.disk_usage(path).free


def normalise_session(session):
    """Return a complete, validated copy of a session dictionary (fields: schema.SESSION_FIELDS).

    Required: target_plane (PLAX, PSAX-AV, PSAX-MV or A4C), width, height (output image size in
    pixels), flange_to_probe (4x4 calibration in mm; np.eye(4) for the simulator).
    Optional: operator_id, subject_id, probe_model, crop (x, y, width, height; default the whole
    image), image_latency (s, default 0), software_version (default this package's version),
    extra_yaml (YAML text or a dict), stamp_ns (session start; default the first message's time).

    Raises:
        InvalidSessionError: naming the missing, unknown or malformed field.
    """
    if not isinstance(session, dict):
        raise InvalidSessionError(
            f'session must be a dict with fields {schema.SESSION_FIELDS}, got {type(session)}'
        )
    unknown = sorted(set(session) - set(schema.SESSION_FIELDS))
    if unknown:
        raise InvalidSessionError(
            f'unknown session field(s) {unknown}; known fields: {schema.SESSION_FIELDS}'
        )
    missing = [k for k in schema.SESSION_REQUIRED if session.get(k) is None]
    if missing:
        raise InvalidSessionError(
            f'session is missing required field(s) {missing} (required: {schema.SESSION_REQUIRED}; '
            'flange_to_probe is the 4x4 flange->probe calibration in mm, np.eye(4) in simulation)'
        )
    out = {}
    plane = session['target_plane']
    if plane not in schema.SESSION_PLANES:
        raise InvalidSessionError(f'session target_plane {plane!r} is not one of {schema.SESSION_PLANES}')
    out['target_plane'] = plane
    for key in ('width', 'height'):
        value = session[key]
        if isinstance(value, bool) or int(value) != value or not 0 < int(value) < 2**31:
            raise InvalidSessionError(f'session {key} must be a positive integer pixel count, got {value!r}')
        out[key] = int(value)
    try:
        out['flange_to_probe'] = check_rigid_matrix(session['flange_to_probe'], 'session flange_to_probe')
    except ValueError as exc:
        raise InvalidSessionError(str(exc)) from None
    crop = session.get('crop')
    crop = (0, 0, out['width'], out['height']) if crop is None else tuple(crop)
    if len(crop) != 4 or any(int(c) != c for c in crop) or crop[2] <= 0 or crop[3] <= 0 or min(crop[:2]) < 0:
        raise InvalidSessionError(f'session crop must be 4 integers (x, y, width>0, height>0), got {crop!r}')
    out['crop'] = tuple(int(c) for c in crop)
    latency = float(session.get('image_latency') or 0.0)
    if not math.isfinite(latency) or latency < 0:
        raise InvalidSessionError(
            f'session image_latency must be a finite number of seconds >= 0, got {latency!r}'
        )
    out['image_latency'] = latency
    for key in ('operator_id', 'subject_id', 'probe_model'):
        value = session.get(key) or ''
        if not isinstance(value, str):
            raise InvalidSessionError(f'session {key} must be a string, got {value!r}')
        out[key] = value
    out['software_version'] = str(
        session.get('software_version') or f'echo_guidance {echo_guidance.__version__}'
    )
    extra = session.get('extra_yaml')
    if extra is None:
        extra_text = ''
    elif isinstance(extra, dict):
        extra_text = yaml.safe_dump(extra, default_flow_style=False, sort_keys=True)
    elif isinstance(extra, str):
        try:
            yaml.safe_load(extra)
        except yaml.YAMLError as exc:
            raise InvalidSessionError(f'session extra_yaml is not valid YAML: {exc}') from None
        extra_text = extra
    else:
        raise InvalidSessionError(f'session extra_yaml must be YAML text or a dict, got {type(extra)}')
    out['extra_yaml'] = extra_text
    stamp = session.get('stamp_ns')
    if stamp is not None:
        split_stamp_ns(stamp)
        stamp = int(stamp)
    out['stamp_ns'] = stamp
    return out


class DemonstrationBagWriter:
    """Write one demonstration into a new rosbag2 bag directory (see docs/bag-format.md).

    Typical use::

        with DemonstrationBagWriter('out/demo_001', session) as bag:
            bag.write_probe_pose(T_mm, stamp_ns)
            bag.write_image(frame_u8, stamp_ns)
            bag.write_synced_pose(T_mm, stamp_ns, True, 0.0004, 0.0006)

    Log times (the rosbag2 receive time of each message) must increase across the whole bag. When
    ``log_time_ns`` is not given the message's own stamp is used. A log time that is not greater
    than the previous one is raised to previous + 1 ns; when the caller gave it explicitly this is
    counted in ``log_times_clamped`` (and recorded in metadata.yaml). Stamps are never changed.

    Args:
        path: bag directory to create (must not exist, or be an empty directory).
        session: session description, see :func:`normalise_session`.
        fsync_interval_s: force written data to disk this often, in seconds, from a background
            thread so the writing thread is not blocked by the disk (0: synchronously after every
            message; None: only at open and close). Flushing to the OS after every message already
            survives a killed process; fsync is what survives a power cut or a kernel crash.
        fsync_every_messages: also force data to disk synchronously every this many messages (0: off).
        disk_check_every: check free disk space every this many messages.
        disk_reserve_bytes: when free space drops below this, finalise the bag and raise DiskSpaceLow.
        free_space_fn: ``fn(path) -> free bytes``; default ``shutil.disk_usage(path).free``.
    """

    def __init__(
        self,
        path,
        session,
        *,
        fsync_interval_s=1.0,
        fsync_every_messages=0,
        disk_check_every=100,
        disk_reserve_bytes=256 * 2**20,
        free_space_fn=None,
    ):
        """Create the bag directory, write the MCAP header, schemas and channels, and metadata.yaml."""
        self.path = Path(path)
        self.session = normalise_session(session)
        if fsync_interval_s is not None and not fsync_interval_s >= 0:
            raise ValueError(f'fsync_interval_s must be >= 0 or None, got {fsync_interval_s!r}')
        if int(fsync_every_messages) < 0 or int(disk_check_every) < 1 or int(disk_reserve_bytes) < 0:
            raise ValueError(
                'fsync_every_messages >= 0, disk_check_every >= 1 and disk_reserve_bytes >= 0 '
                f'are required, got {fsync_every_messages}, {disk_check_every}, {disk_reserve_bytes}'
            )
        self._fsync_interval_s = fsync_interval_s
        self._fsync_every = int(fsync_every_messages)
        self._disk_check_every = int(disk_check_every)
        self._disk_reserve = int(disk_reserve_bytes)
        self._free_space_fn = free_space_fn or _default_free_space

        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise BagWriteError(
                f'{self.path} exists and is not an empty directory; refusing to overwrite a bag'
            )
        parent = self.path.parent if self.path.parent != Path('') else Path('.')
        parent.mkdir(parents=True, exist_ok=True)
        free = self._free_space_fn(parent)
        if free < self._disk_reserve:
            raise DiskSpaceLow(free, self._disk_reserve, self.path)
        self.path.mkdir(exist_ok=True)

        self._store = schema.get_typestore()
        self._types = self._store.types
        self._hashes = {t: self._store.hash_rihs01(t) for t in set(schema.TOPIC_TYPES.values())}
        self.mcap_name = f'{self.path.name}_0.mcap'
        self.mcap_path = self.path / self.mcap_name

        self.message_counts = dict.fromkeys(schema.TOPIC_TYPES, 0)
        self.log_times_clamped = 0
        self._first_log_time = None
        self._last_log_time = None
        self._session_written = False
        self._closed = False
        self._failed = None
        self._messages_since_fsync = 0
        self._fsync_error = None
        self._fsync_stop = threading.Event()
        self._fsync_thread = None
        self._messages_since_disk_check = 0

        from mcap.writer import CompressionType, Writer

        self._stream = open(self.mcap_path, 'wb')
        try:
            self._mcap = Writer(
                self._stream, use_chunking=False, compression=CompressionType.NONE, enable_data_crcs=True
            )
            self._mcap.start(
                profile=schema.MCAP_PROFILE,
                library=f'echo_guidance {echo_guidance.__version__} bag writer (mcap python)',
            )
            schema_ids = {}
            self._channels = {}
            for topic, msgtype in schema.TOPIC_TYPES.items():
                if msgtype not in schema_ids:
                    definition, _ = self._store.generate_msgdef(msgtype, ros_version=2)
                    schema_ids[msgtype] = self._mcap.register_schema(msgtype, 'ros2msg', definition.encode())
                self._channels[topic] = self._mcap.register_channel(
                    topic,
                    schema.SERIALIZATION,
                    schema_ids[msgtype],
                    {
                        'offered_qos_profiles': _metadata.qos_for_mcap_channel(topic),
                        'topic_type_hash': self._hashes[msgtype],
                    },
                )
            # The mcap writer buffers schema and channel records until its next record; the metadata
            # record comes after them so that all of them reach the file (and the data checksum) now.
            self._mcap.add_metadata(
                schema.MCAP_METADATA_NAME,
                {
                    'schema_version': schema.SCHEMA_VERSION,
                    'ros_distro': schema.ROS_DISTRO,
                    CHECKSUMS_KEY: CHECKSUMS_MARK,
                },
            )
            self._stream.flush()
            os.fsync(self._stream.fileno())
            self._write_metadata(schema.STATE_IN_PROGRESS)
        except BaseException:
            self._stream.close()
            raise
        if self._fsync_interval_s:
            self._fsync_thread = threading.Thread(
                target=self._fsync_loop, name=f'bag-fsync-{self.path.name}', daemon=True
            )
            self._fsync_thread.start()

    def _fsync_loop(self):
        """Force the MCAP file to disk every fsync_interval_s until stopped (runs in a thread)."""
        fileno = self._stream.fileno()
        while not self._fsync_stop.wait(self._fsync_interval_s):
            try:
                # fsync releases the GIL: the writing thread keeps appending meanwhile.
                os.fsync(fileno)
            except OSError as exc:
                self._fsync_error = f'fsync failed: {exc}'
                return

    # ----------------------------------------------------------------------------------- state

    @property
    def bytes_written(self):
        """Bytes written to the MCAP file so far."""
        return self._stream.tell() if not self._stream.closed else self.mcap_path.stat().st_size

    @property
    def closed(self):
        """Whether close() has completed."""
        return self._closed

    def __enter__(self):
        """Return the writer."""
        return self

    def __exit__(self, exc_type, exc, tb):
        """Finalise the bag, also when the block raised: what was written stays readable."""
        self.close()
        return False

    # --------------------------------------------------------------------------------- messages

    def _header(self, stamp_ns, frame_id):
        sec, nanosec = split_stamp_ns(stamp_ns)
        return self._types['std_msgs/msg/Header'](
            stamp=self._types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id=frame_id
        )

    def _pose(self, matrix_mm, what):
        position, quaternion = matrix_mm_to_position_quaternion(matrix_mm, what)
        t = self._types
        return t['geometry_msgs/msg/Pose'](
            position=t['geometry_msgs/msg/Point'](
                x=float(position[0]), y=float(position[1]), z=float(position[2])
            ),
            orientation=t['geometry_msgs/msg/Quaternion'](
                x=float(quaternion[0]), y=float(quaternion[1]), z=float(quaternion[2]), w=float(quaternion[3])
            ),
        )

    def _check_writable(self):
        if self._closed:
            raise BagWriteError(f'bag {self.path} is closed')
        if self._fsync_error is not None and self._failed is None:
            # Data the OS said it had may not be on disk: stop rather than record on a failing disk.
            self._failed = self._fsync_error
        if self._failed is not None:
            raise BagWriteError(
                f'bag {self.path} failed earlier ({self._failed}); run `echo-guidance bag repair`'
            )

    def _session_message(self, stamp_ns):
        s = self.session
        return self._types['echo_guidance/msg/SessionInfo'](
            header=self._header(stamp_ns, ''),
            operator_id=s['operator_id'],
            subject_id=s['subject_id'],
            target_plane=s['target_plane'],
            probe_model=s['probe_model'],
            flange_to_probe=self._pose(s['flange_to_probe'], 'flange_to_probe'),
            crop=np.asarray(s['crop'], dtype=np.int32),
            width=s['width'],
            height=s['height'],
            image_latency=s['image_latency'],
            software_version=s['software_version'],
            extra_yaml=s['extra_yaml'],
        )

    def _write(self, topic, message, log_time_ns, count_clamp=True):
        """Serialise, append and flush one message; apply the log-time rule and the disk guard."""
        data = self._store.serialize_cdr(message, schema.TOPIC_TYPES[topic])
        log_time = int(log_time_ns)
        if self._last_log_time is not None and log_time <= self._last_log_time:
            log_time = self._last_log_time + 1
            if count_clamp:
                self.log_times_clamped += 1
        try:
            self._mcap.add_message(
                self._channels[topic],
                log_time,
                data,
                log_time,
                sequence=self.message_counts[topic] & 0xFFFFFFFF,
            )
            self._stream.flush()
        except BaseException as exc:
            # A partial record may be on disk now (a disk error, or an exception such as
            # KeyboardInterrupt raised between the checksum update and the write): nothing more can be
            # appended after it, and close() leaves the bag unfinished for repair instead of sealing it.
            self._failed = f'{type(exc).__name__} while writing a {topic} message: {exc}'
            raise
        if self._first_log_time is None:
            self._first_log_time = log_time
        self._last_log_time = log_time
        self.message_counts[topic] += 1
        self._after_write()

    def _after_write(self):
        self._messages_since_fsync += 1
        if (
            self._fsync_every and self._messages_since_fsync >= self._fsync_every
        ) or self._fsync_interval_s == 0:
            os.fsync(self._stream.fileno())
            self._messages_since_fsync = 0
        self._messages_since_disk_check += 1
        if self._messages_since_disk_check >= self._disk_check_every:
            self._messages_since_disk_check = 0
            self.check_disk_space()

    def check_disk_space(self):
        """Finalise the bag and raise DiskSpaceLow when free space is below the reserve."""
        free = self._free_space_fn(self.path)
        if free < self._disk_reserve:
            self.close()
            raise DiskSpaceLow(free, self._disk_reserve, self.path)
        return free

    def _write_data(self, topic, message, stamp_ns, log_time_ns):
        self._check_writable()
        log_time = stamp_ns if log_time_ns is None else log_time_ns
        if not self._session_written:
            self._write_session(log_time)
        # Log times taken from stamps collide by design (a synced pose shares its frame's stamp):
        # only caller-given log times that go backwards are counted as clamped.
        self._write(topic, message, log_time, count_clamp=log_time_ns is not None)

    def _write_session(self, first_log_time):
        log_time = max(int(first_log_time) - 1, 0)
        stamp = self.session['stamp_ns'] if self.session['stamp_ns'] is not None else log_time
        self._write(schema.TOPIC_SESSION, self._session_message(stamp), log_time, count_clamp=False)
        self._session_written = True

    def write_image(self, image_u8_hw, stamp_ns, log_time_ns=None):
        """Write one ultrasound frame (mono8, the session's height x width) stamped with its acquisition time.

        Raises:
            InvalidFrameError: not a 2-D uint8 array of the session's size; nothing is written.
        """
        image = image_u8_hw
        height, width = self.session['height'], self.session['width']
        if not isinstance(image, np.ndarray):
            raise InvalidFrameError(
                f'image must be a numpy array (mono8, {height}x{width}), got {type(image)}'
            )
        if image.dtype != np.uint8 or image.ndim != 2:
            raise InvalidFrameError(
                f'image must be 2-D uint8 (mono8) of shape ({height}, {width}); got dtype {image.dtype}, '
                f'shape {image.shape}. Convert colour frames to grey before recording.'
            )
        if image.shape != (height, width):
            raise InvalidFrameError(
                f'image shape {image.shape} does not match the session size (height, width) = '
                f'({height}, {width})'
            )
        message = self._types['sensor_msgs/msg/Image'](
            header=self._header(stamp_ns, schema.FRAME_ID_PROBE),
            height=height,
            width=width,
            encoding=schema.IMAGE_ENCODING,
            is_bigendian=0,
            step=width,
            data=np.ascontiguousarray(image).reshape(-1),
        )
        self._write_data(schema.TOPIC_IMAGE, message, stamp_ns, log_time_ns)

    def write_probe_pose(self, T_base_probe_mm, stamp_ns, log_time_ns=None):  # noqa: N803 (transform name)
        """Write one probe pose sample: the probe frame in base, 4x4 in mm (stored in metres)."""
        message = self._types['geometry_msgs/msg/PoseStamped'](
            header=self._header(stamp_ns, schema.FRAME_ID_BASE),
            pose=self._pose(T_base_probe_mm, 'probe pose'),
        )
        self._write_data(schema.TOPIC_PROBE_POSE, message, stamp_ns, log_time_ns)

    def write_synced_pose(self, T_mm_or_none, stamp_ns, valid, gap_before_s, gap_after_s, log_time_ns=None):  # noqa: N803
        """Write the probe pose interpolated at a frame's time (same stamp as the frame).

        Args:
            T_mm_or_none: 4x4 probe-in-base transform in mm, or None when no pose could be synchronised.
            stamp_ns: the frame's stamp.
            valid: whether pose samples lay within tolerance on both sides (requires a transform).
            gap_before_s, gap_after_s: time to the pose samples around the frame (s); None or negative
                when there is none.
        """
        valid = bool(valid)
        if T_mm_or_none is None:
            if valid:
                raise ValueError('write_synced_pose: valid=True needs a transform, got None')
            pose = self._pose(np.eye(4), 'synced pose')
        else:
            pose = self._pose(T_mm_or_none, 'synced pose')
        gaps = []
        for name, gap in (('gap_before_s', gap_before_s), ('gap_after_s', gap_after_s)):
            gap = -1.0 if gap is None else float(gap)
            if math.isnan(gap):
                raise ValueError(
                    f'write_synced_pose: {name} is NaN; use None or a negative value for "no sample"'
                )
            gaps.append(gap)
        message = self._types['echo_guidance/msg/SyncedPose'](
            header=self._header(stamp_ns, schema.FRAME_ID_BASE),
            pose=pose,
            valid=valid,
            gap_before=gaps[0],
            gap_after=gaps[1],
        )
        self._write_data(schema.TOPIC_SYNCED_POSE, message, stamp_ns, log_time_ns)

    def write_pedal_event(self, event_code, stamp_ns, source='', detail='', log_time_ns=None):
        """Write one pedal / button-box event (codes as in PedalEvent.msg, e.g. 1 = TARGET_REACHED)."""
        pedal = self._types['echo_guidance/msg/PedalEvent']
        codes = {
            name: getattr(pedal, name)
            for name in (
                'TARGET_REACHED',
                'RECORD_START',
                'RECORD_STOP',
                'DEADMAN_PRESSED',
                'DEADMAN_RELEASED',
                'DEVICE_FAULT',
            )
        }
        if isinstance(event_code, str):
            if event_code not in codes:
                raise ValueError(f'unknown pedal event {event_code!r}; known: {sorted(codes)}')
            event_code = codes[event_code]
        if int(event_code) not in codes.values():
            raise ValueError(f'unknown pedal event code {event_code!r}; known: {codes}')
        message = pedal(
            header=self._header(stamp_ns, ''), event=int(event_code), source=str(source), detail=str(detail)
        )
        self._write_data(schema.TOPIC_PEDAL, message, stamp_ns, log_time_ns)

    def write_wrench(self, force_n, torque_nm, stamp_ns, frame_id=schema.FRAME_ID_BASE, log_time_ns=None):
        """Write one external wrench sample: force (N) and torque (N m), 3-vectors in ``frame_id``."""
        force = np.asarray(force_n, dtype=np.float64)
        torque = np.asarray(torque_nm, dtype=np.float64)
        if (
            force.shape != (3,)
            or torque.shape != (3,)
            or not (np.all(np.isfinite(force)) and np.all(np.isfinite(torque)))
        ):
            raise ValueError(f'wrench needs finite 3-vectors, got force {force!r}, torque {torque!r}')
        vector = self._types['geometry_msgs/msg/Vector3']
        message = self._types['geometry_msgs/msg/WrenchStamped'](
            header=self._header(stamp_ns, frame_id),
            wrench=self._types['geometry_msgs/msg/Wrench'](
                force=vector(x=float(force[0]), y=float(force[1]), z=float(force[2])),
                torque=vector(x=float(torque[0]), y=float(torque[1]), z=float(torque[2])),
            ),
        )
        self._write_data(schema.TOPIC_WRENCH, message, stamp_ns, log_time_ns)

    # ---------------------------------------------------------------------------------- closing

    def _write_metadata(self, state):
        extra = {schema.KEY_LOG_TIME_CLAMPED: self.log_times_clamped}
        document = _metadata.build_metadata(
            self.mcap_name,
            self.message_counts,
            self._hashes,
            self._first_log_time or 0,
            self._last_log_time or 0,
            state,
            extra,
        )
        _metadata.write_metadata_atomic(self.path, document)

    def _stop_fsync_thread(self):
        if self._fsync_thread is not None:
            self._fsync_stop.set()
            self._fsync_thread.join()
            self._fsync_thread = None

    def close(self):
        """Write the MCAP summary and footer, sync to disk, and finalise metadata.yaml. Idempotent."""
        if self._closed:
            return
        self._stop_fsync_thread()
        if self._failed is not None:
            # The file may end in a partial record: leave it "in progress" for repair_bag.
            self._stream.close()
            self._closed = True
            return
        if not self._session_written:
            stamp = self.session['stamp_ns']
            self._write_session(stamp + 1 if stamp is not None else time.time_ns())
        try:
            self._mcap.finish()
            self._stream.flush()
            os.fsync(self._stream.fileno())
        except BaseException as exc:
            # A summary cut short: the bag stays "in progress" (every message before it is intact).
            self._failed = f'{type(exc).__name__} while finishing: {exc}'
            self._stream.close()
            self._closed = True
            raise
        self._stream.close()
        self._write_metadata(schema.STATE_COMPLETE)
        self._closed = True
