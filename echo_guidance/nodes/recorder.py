"""Recorder node: one rosbag2 (MCAP) bag per demonstration, started and stopped by pedal or service.

A thin wrapper around :class:`echo_guidance.recording.recorder.DemonstrationRecorder`.

Subscribes, with QoS matching the publishers:

* ``/us/image`` (sensor_msgs/Image) and ``/us/frame_info`` (frame sequence numbers, for the
  dropped-frame count): reliable, like the capture node's publisher (``image_qos`` =
  ``best_effort`` for a best-effort camera driver);
* ``/arm/probe_pose`` (geometry_msgs/PoseStamped): reliable, keep-last 5000, as the arm-state node
  publishes it; ``/arm/wrench``: best-effort;
* ``/pedal/event`` (echo_guidance/PedalEvent): reliable.

Services ``/recorder/start`` and ``/recorder/stop`` (std_srvs/Trigger; the response message is the
bag path, or why the request was refused). Publishes ``/recorder/status``
(echo_guidance/RecorderStatus) at 2 Hz and ``/diagnostics`` at 1 Hz (with the synchronisation
figures: pending frames, largest pose gap around a frame).

Keeping up with the pose stream: each pose and frame is handed to the recorder with the time the
middleware received it (``MessageInfo.received_timestamp``), so frames wait for their poses in arrival
time and a recorder that processes its queue late (a loaded machine) flags nothing for that; the pose
callback also takes up to :data:`POSE_DRAIN_MAX` further queued poses itself, without a trip through
the executor (which costs more than the recorder's own work per pose); publication sequence numbers
count poses lost on the way (``poses_lost`` in diagnostics: the subscriber queue overflowed).

Acknowledgement: ``frames_recorded`` in a published RecorderStatus counts only frames the bag
writer has already flushed to the operating system, so after a ``kill -9`` the repaired bag holds
at least that many frames.
"""

import subprocess
import sys
import threading
import time
from pathlib import Path

import echo_guidance

IMAGE_QOS_CHOICES = ('reliable', 'best_effort')
# Five seconds of 1 kHz poses: the recorder may fall behind for that long without losing one.
POSE_QOS_DEPTH = 5000
IMAGE_QOS_DEPTH = 60
POSE_DRAIN_MAX = 50
"""Queued poses the pose callback takes itself after its own (a backlog is worked off without the
executor's per-message overhead; at most this many, so frames and timers still get their turn)."""


def arrival_s(info, now_s, wall_ns=None):
    """When a message arrived (``MessageInfo.received_timestamp``, system clock) on the clock of ``now_s``.

    The age of the message on the system clock is subtracted from ``now_s``; without a usable
    timestamp the message counts as arriving now.
    """
    received_ns = (info or {}).get('received_timestamp')
    if not received_ns:
        return now_s
    wall_ns = time.time_ns() if wall_ns is None else wall_ns
    return now_s - max(wall_ns - int(received_ns), 0) * 1e-9


def publication_sequence(info):
    """(publisher id, publication sequence number) of a message, or None when the middleware gives none."""
    info = info or {}
    number = info.get('publication_sequence_number')
    if number is None:
        return None
    gid = info.get('publisher_gid') or {}
    return bytes(gid.get('data', b'')), int(number)


def software_version():
    """Return the package version, with the git commit when running from a clone."""
    version = echo_guidance.__version__
    root = Path(echo_guidance.__file__).resolve().parent.parent
    if (root / '.git').exists():
        try:
            commit = subprocess.run(
                ['git', '-C', str(root), 'rev-parse', '--short', 'HEAD'],
                capture_output=True,
                text=True,
                timeout=2,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = ''
        if commit:
            version += f'+g{commit}'
    return version


def parameter_specs():
    """The node's parameters (besides the calibration), as ParamSpecs."""
    from echo_guidance.nodes._common import ParamSpec as Spec
    from echo_guidance.planes import ALL_PLANES

    return [
        Spec(
            'output_dir', 'out/demonstrations', 'folder for the bags (one sub-folder per bag)', read_only=True
        ),
        Spec(
            'image_encoding', 'mono8', 'the only accepted image encoding', choices=('mono8',), read_only=True
        ),
        Spec('image_width', 640, 'accepted image width', 1, 16384, read_only=True),
        Spec('image_height', 480, 'accepted image height', 1, 16384, read_only=True),
        Spec(
            'image_qos',
            'reliable',
            'reliability of the image subscription (match the capture node)',
            choices=IMAGE_QOS_CHOICES,
            read_only=True,
        ),
        Spec(
            'sync_tolerance_s',
            0.005,
            'largest pose gap allowed on each side of a frame',
            1e-4,
            1.0,
            read_only=True,
        ),
        Spec('max_pending_s', 3.0, 'how long a frame waits for a pose after it', 1e-3, 30.0, read_only=True),
        Spec('pose_buffer_s', 5.0, 'pose history kept for interpolation', 0.01, 60.0, read_only=True),
        Spec(
            'min_free_bytes',
            256 * 1024 * 1024,
            'disk guard: stop before free space falls below this',
            0,
            2**62,
            read_only=True,
        ),
        Spec(
            'disk_quota_bytes',
            0,
            'byte budget for what this recorder writes (0 = none)',
            0,
            2**62,
            read_only=True,
        ),
        Spec(
            'fsync_interval_s',
            0.03,
            'force data to disk at least this often (power-loss safety)',
            0.0,
            60.0,
            read_only=True,
        ),
        Spec(
            'stop_on_target_reached', False, 'end the bag at the TARGET_REACHED pedal event', read_only=True
        ),
        Spec(
            'start_on_pedal',
            True,
            'RECORD_START / RECORD_STOP pedal events start and stop bags',
            read_only=True,
        ),
        Spec('status_period_s', 0.5, 'RecorderStatus period', 0.05, 10.0, read_only=True),
        Spec('image_topic', '/us/image', 'frames', read_only=True),
        Spec(
            'frame_info_topic', '/us/frame_info', 'frame sequence info from the capture node', read_only=True
        ),
        Spec('pose_topic', '/arm/probe_pose', 'probe poses', read_only=True),
        Spec('wrench_topic', '/arm/wrench', 'external wrench', read_only=True),
        Spec('pedal_topic', '/pedal/event', 'pedal events', read_only=True),
        Spec('session.operator_id', '', 'operator id'),
        Spec('session.subject_id', '', 'pseudonymous subject id (never a name or a hospital number)'),
        Spec('session.target_plane', 'PLAX', 'target plane of the next demonstrations', choices=ALL_PLANES),
        Spec('session.probe_model', '', 'ultrasound probe model'),
        Spec(
            'session.crop',
            [0, 0, 0, 0],
            'crop x, y, width, height in source pixels ([0, 0, 0, 0] = whole image)',
            0,
            16384,
            length=4,
        ),
        Spec('session.image_latency', 0.0, 'image latency the capture node corrects, seconds', 0.0, 10.0),
        Spec('session.extra_yaml', '', 'free-form YAML stored with each bag (profile, simulator seed, ...)'),
        Spec(
            'session.sim_patient_seed',
            -1,
            'simulated recordings: seed of the virtual patient the capture node renders; each bag then '
            "declares that patient's true target pose (extra_yaml simulator.target_pose_mm); "
            '-1 = real patient',
            -1,
            2**31 - 1,
            read_only=True,
        ),
    ]


def main(args=None):
    """Run the recorder node until shut down; return the exit status."""
    from geometry_msgs.msg import PoseStamped, WrenchStamped
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import UInt64MultiArray
    from std_srvs.srv import Trigger

    from echo_guidance.arm.calibration import calibration_from_node
    from echo_guidance.geometry import pose_msg_to_matrix
    from echo_guidance.msg import PedalEvent, RecorderStatus
    from echo_guidance.nodes._common import (
        EVENT_QOS,
        DiagnosticsPublisher,
        declare_parameters,
        run_node,
        time_msg_to_ns,
    )
    from echo_guidance.recording.recorder import (
        DemonstrationRecorder,
        RecorderConfig,
        RecorderError,
        RecorderState,
    )
    from echo_guidance.sources.frame_info import FrameInfo, FrameLossTracker

    class RecorderNode(Node):
        """Records demonstrations into bags; see the module docstring."""

        def __init__(self):
            super().__init__('recorder')
            self.context.on_shutdown(shutdown_requested.set)
            params = declare_parameters(self, parameter_specs())
            calibration = calibration_from_node(self)
            config = RecorderConfig(
                **{
                    key: params[key]
                    for key in (
                        'output_dir',
                        'image_encoding',
                        'image_width',
                        'image_height',
                        'sync_tolerance_s',
                        'max_pending_s',
                        'pose_buffer_s',
                        'min_free_bytes',
                        'disk_quota_bytes',
                        'stop_on_target_reached',
                        'start_on_pedal',
                        'fsync_interval_s',
                    )
                }
            )
            crop = params['session.crop']
            session = {
                'operator_id': params['session.operator_id'],
                'subject_id': params['session.subject_id'],
                'target_plane': params['session.target_plane'],
                'probe_model': params['session.probe_model'],
                'flange_to_probe': calibration.matrix_mm,
                'crop': None if crop == [0, 0, 0, 0] else crop,
                'image_latency': params['session.image_latency'],
                'software_version': software_version(),
                'extra_yaml': params['session.extra_yaml'] or None,
            }
            hook = None
            if params['session.sim_patient_seed'] >= 0:
                from echo_guidance.recording.simulated import simulated_patient_session

                hook = simulated_patient_session(params['session.sim_patient_seed'])
            self.recorder = DemonstrationRecorder(config, session, log=self._log, session_hook=hook)
            self.frame_loss = FrameLossTracker()
            self._lost_at_source = 0

            reliability = (
                ReliabilityPolicy.RELIABLE
                if params['image_qos'] == 'reliable'
                else ReliabilityPolicy.BEST_EFFORT
            )
            images = QoSProfile(
                depth=IMAGE_QOS_DEPTH, history=HistoryPolicy.KEEP_LAST, reliability=reliability
            )
            poses = QoSProfile(
                depth=POSE_QOS_DEPTH, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
            )
            self.create_subscription(Image, params['image_topic'], self._on_image, images)
            self.create_subscription(
                UInt64MultiArray, params['frame_info_topic'], self._on_frame_info, images
            )
            self._pose_subscription = self.create_subscription(
                PoseStamped, params['pose_topic'], self._on_pose, poses
            )
            self.create_subscription(
                WrenchStamped, params['wrench_topic'], self._on_wrench, qos_profile_sensor_data
            )
            self.create_subscription(PedalEvent, params['pedal_topic'], self._on_pedal, EVENT_QOS)
            self.status_pub = self.create_publisher(RecorderStatus, '~/status', 10)
            self.create_service(Trigger, '~/start', self._on_start)
            self.create_service(Trigger, '~/stop', self._on_stop)
            self.create_timer(0.05, self._poll)
            self.create_timer(params['status_period_s'], self._publish_status)
            self.diagnostics = DiagnosticsPublisher(
                self, 'echo_guidance: recorder', 'recorder', self._diagnostics
            )
            self.get_logger().info(
                f'recorder ready: bags in {Path(config.output_dir).resolve()}, {config.image_encoding} '
                f'{config.image_width}x{config.image_height}, '
                f'sync tolerance {config.sync_tolerance_s * 1e3:.1f} ms, '
                f'{calibration.describe()}'
            )

        def _log(self, level, message):
            # rclpy refuses one call site logging at different severities: one call per level.
            logger = self.get_logger()
            if level == 'error':
                logger.error(message)
            elif level == 'warn':
                logger.warning(message)
            else:
                logger.info(message)

        def _now_s(self):
            return self.get_clock().now().nanoseconds * 1e-9

        def _on_image(self, msg, info):  # two parameters: rclpy passes the MessageInfo
            ns = time_msg_to_ns(msg.header.stamp)
            self.frame_loss.on_image()
            now = self._now_s()
            self.recorder.on_image(
                msg.data,
                msg.encoding,
                msg.width,
                msg.height,
                msg.step,
                ns * 1e-9,
                ns,
                now,
                received_s=arrival_s(info, now),
            )

        def _on_frame_info(self, msg):
            try:
                info = FrameInfo.from_sequence(msg.data)
            except ValueError as error:
                self.get_logger().warning(
                    f'ignoring malformed frame info: {error}', throttle_duration_sec=5.0
                )
                return
            skipped = self.frame_loss.on_info(info)
            at_source = self.frame_loss.lost_at_source
            self.recorder.on_frames_dropped(skipped + max(at_source - self._lost_at_source, 0))
            self._lost_at_source = at_source

        def _on_pose(self, msg, info):  # two parameters: rclpy passes the MessageInfo
            self._take_pose(msg, info)
            subscription = self._pose_subscription
            for _ in range(POSE_DRAIN_MAX):  # work off a backlog without the executor's overhead
                try:
                    with subscription.handle:
                        taken = subscription.handle.take_message(subscription.msg_type, subscription.raw)
                except Exception:  # noqa: BLE001 - destroyed while shutting down: the executor goes on
                    return
                if taken is None:
                    return
                self._take_pose(*taken)

        def _take_pose(self, msg, info):
            ns = time_msg_to_ns(msg.header.stamp)
            try:
                T = pose_msg_to_matrix(msg.pose)  # checks the quaternion and position
            except ValueError as error:
                self.get_logger().warning(f'pose not usable: {error}', throttle_duration_sec=1.0)
                return
            now = self._now_s()
            self.recorder.on_pose(
                ns * 1e-9,
                ns,
                T,
                now,
                received_s=arrival_s(info, now),
                sequence=publication_sequence(info),
                checked=True,
            )

        def _on_wrench(self, msg):
            f, t = msg.wrench.force, msg.wrench.torque
            self.recorder.on_wrench(
                time_msg_to_ns(msg.header.stamp), (f.x, f.y, f.z), (t.x, t.y, t.z), self._now_s()
            )

        def _on_pedal(self, msg):
            ns = time_msg_to_ns(msg.header.stamp)
            self.recorder.on_pedal_event(
                msg.event, ns * 1e-9, ns, source=msg.source, detail=msg.detail, now_s=self._now_s()
            )

        def _on_start(self, request, response):
            try:
                response.message = self.recorder.start(self._now_s())
                response.success = True
            except RecorderError as error:
                response.success, response.message = False, str(error)
                self.get_logger().error(str(error))
            self._publish_status()
            return response

        def _on_stop(self, request, response):
            if not self.recorder.recording:
                response.success, response.message = False, 'not recording'
                return response
            response.message = self.recorder.stop(self._now_s(), 'stop service')
            response.success = True
            self._publish_status()
            return response

        def _poll(self):
            self.recorder.poll(self._now_s())

        def _publish_status(self):
            s = self.recorder.status
            # The recorder's own message first: `echo-guidance record` recognises "saved ..." at its start.
            message = '; '.join(text for text in (s.message, s.pedal_fault) if text)
            msg = RecorderStatus(
                state=int(s.state),
                bag_path=s.bag_path,
                target_plane=s.target_plane,
                frames_recorded=s.frames_recorded,
                poses_recorded=s.poses_recorded,
                frames_unsynced=s.frames_unsynced,
                frames_dropped=s.frames_dropped,
                bytes_written=s.bytes_written,
                disk_free_bytes=s.disk_free_bytes,
                message=message,
            )
            msg.header.stamp = self.get_clock().now().to_msg()
            self.status_pub.publish(msg)

        def _diagnostics(self):
            s = self.recorder.status
            now = self._now_s()
            lag = self.recorder.pose_lag_s(now)
            backlog = self.recorder.pose_backlog_s(now)
            level = 'ERROR' if s.state in (RecorderState.STOPPED_DISK_FULL, RecorderState.ERROR) else 'OK'
            if level == 'OK' and (
                s.pedal_fault or s.frames_rejected or s.frames_dropped or self.recorder.pose_losses.lost
            ):
                level = 'WARN'
            values = {
                'state': s.state.name,
                'bag_path': s.bag_path,
                'frames_recorded': s.frames_recorded,
                'frames_rejected': s.frames_rejected,
                'frames_unsynced': s.frames_unsynced,
                'frames_dropped': s.frames_dropped,
                'frames_pending': s.frames_pending,
                'poses_recorded': s.poses_recorded,
                'poses_rejected': self.recorder.poses_rejected,
                'frames_received_total': self.recorder.frames_received,
                'poses_received_total': self.recorder.poses_received,
                'sync_gap_max_ms': f'{self.recorder.take_sync_gap_ms():.3f}',
                'pose_lag_ms': 'none' if lag is None else f'{lag * 1e3:.1f}',
                'pose_backlog_ms': 'none' if backlog is None else f'{backlog * 1e3:.1f}',
                'poses_lost': self.recorder.pose_losses.lost,
                'bytes_written': s.bytes_written,
                'disk_free_bytes': s.disk_free_bytes,
                'pedal_fault': s.pedal_fault,
            }
            return level, s.pedal_fault or s.message or s.state.name, values

        def close(self):
            """Close any open bag (it is complete after this)."""
            self.recorder.close(self._now_s())
            try:
                self._publish_status()
            except Exception:  # noqa: BLE001 - the context may already be shut down (SIGINT)
                pass

    shutdown_requested = threading.Event()
    try:
        return run_node(RecorderNode, args=args)
    except RuntimeError as error:
        # rclpy can fail to take a message that arrives while SIGINT shuts the context down; the
        # node has closed cleanly by then (run_node's finally), so that is a normal exit.
        if shutdown_requested.is_set():
            print(f'recorder: ignored an error raised during shutdown: {error}', file=sys.stderr)
            return 0
        raise


if __name__ == '__main__':
    sys.exit(main())
