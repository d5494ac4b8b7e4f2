"""Guidance node: runs the exported model on the newest ultrasound frame and publishes how to move the probe.

Topics (docs/guidance.md):

- subscribes ``/us/image`` (sensor_msgs/Image, mono8) with a depth-1 queue: only the newest frame is
  kept, a worker thread processes it, and a frame replaced before it was processed is counted as
  skipped, so a slow model never builds a backlog;
- subscribes ``/arm/probe_pose/decimated`` (geometry_msgs/PoseStamped, 100 Hz: the arm's own samples,
  thinned by the arm-state / arm-control node): the pose at each frame's stamp (interpolated from a
  small buffer, echo_guidance.sync) moves past predictions into the current probe frame for temporal
  fusion. The full 1 kHz ``/arm/probe_pose`` works too but costs about a third of a core to receive;
- publishes ``/guidance`` (echo_guidance/msg/Guidance, header.stamp = the frame's stamp),
  ``/guidance/markers`` (visualization_msgs/MarkerArray, probe frame), ``/guidance/overlay``
  (sensor_msgs/Image rgb8: the frame with arrows and numbers) and ``/diagnostics`` (latency, rate,
  frames skipped, invalid frames);
- service ``/guidance/set_target_plane`` (echo_guidance/srv/SetTargetPlane); the parameter
  ``target_plane`` does the same. Unknown planes are refused with the reason.

A missing or unusable model file, or a requested CUDA backend without CUDA, stops the node at start
with exit code 2 and the reason. Bad frames (wrong encoding or size) and NaN outputs are published
as ``valid: false`` with the reason in ``status``; the node keeps running.
"""

import collections
import threading
import time

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from echo_guidance.guidance.backends import BACKENDS
from echo_guidance.guidance.settings import (  # noqa: F401 (fusion_config, reached_config: also the node's API)
    echo_config,
    engine_settings,
    fusion_config,
    reached_config,
    stage_config,
)
from echo_guidance.nodes._common import (
    DIAGNOSTICS_QOS,
    DiagnosticsPublisher,
    ParameterValidationError,
    ParamSpec,
    declare_parameters,
    run_node,
)
from echo_guidance.nodes.arm_state import DECIMATED_POSE_TOPIC
from echo_guidance.planes import GUIDANCE_PLANES

NEWEST_FRAME_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
"""Frames in: only the newest is worth processing."""
GUIDANCE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
POSE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=200,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
"""Best effort matches both reliable and best-effort pose publishers."""
STATS_WINDOW = 300


def _nonempty(value, name):
    if not str(value).strip():
        raise ValueError(f'{name} must not be empty')


def _six_positive(value):
    if any(v <= 0 for v in value):
        raise ValueError('needs 6 positive numbers (mm x3, deg x3)')


def check_parameters(p):
    """Rules across parameters, checked at start (before the model loads) and by ``echo-guidance up --check``.

    Returns:
        (model file, fine model file or None), with ``model_path: default`` resolved to the default
        models.

    Raises:
        ParameterValidationError: naming the parameters.
    """
    from pathlib import Path

    if (p['expected_width'] == 0) != (p['expected_height'] == 0):
        raise ParameterValidationError(
            'expected_width and expected_height must both be 0 or both > 0, '
            f'got {p["expected_width"]}x{p["expected_height"]}'
        )
    from echo_guidance.guidance.default_models import DefaultModelError, resolve_model_paths

    if not str(p['model_path']).strip():
        raise ParameterValidationError(
            'cannot load the guidance model: no model file given (parameter model_path is empty; '
            '"default" selects the default models)'
        )
    try:
        path, fine = resolve_model_paths(p['model_path'], p.get('fine_model_path', ''))
    except DefaultModelError as err:
        raise ParameterValidationError(f'cannot load the default guidance models: {err}') from None
    if not Path(path).is_file():
        raise ParameterValidationError(f'cannot load the guidance model: model file {path} does not exist')
    if fine and not Path(fine).is_file():
        raise ParameterValidationError(
            f'cannot load the fine guidance model: model file {fine} does not exist'
        )
    return path, fine


PARAMETERS = [
    ParamSpec(
        'model_path',
        'default',
        'Model file: .onnx for onnxruntime-* backends (echo-guidance export or guidance quantize), '
        'checkpoint .pt for torch-* backends; "default": the default coarse and fine models '
        '(models/guidance/, docs/guidance-models.md).',
        read_only=True,
    ),
    ParamSpec(
        'fine_model_path',
        '',
        'Optional fine model (same kind of file as model_path): coarse-to-fine guidance, the fine model '
        'answering near the plane (stages.*); empty = one model.',
        read_only=True,
    ),
    ParamSpec('backend', 'onnxruntime-cpu', 'Inference backend.', choices=BACKENDS, read_only=True),
    ParamSpec('threads', 2, 'CPU threads of the backend.', min_value=1, max_value=64, read_only=True),
    ParamSpec('target_plane', 'PLAX', 'Target standard plane.', choices=GUIDANCE_PLANES),
    ParamSpec(
        'expected_width',
        0,
        'Frame width the node accepts; 0 = any (frames are resized to the model input either way).',
        min_value=0,
        max_value=16384,
        read_only=True,
    ),
    ParamSpec(
        'expected_height',
        0,
        'Frame height the node accepts; 0 = any.',
        min_value=0,
        max_value=16384,
        read_only=True,
    ),
    ParamSpec(
        'image_topic',
        '/us/image',
        'Input frames (mono8).',
        read_only=True,
        check=lambda v: _nonempty(v, 'image_topic'),
    ),
    ParamSpec(
        'pose_topic',
        DECIMATED_POSE_TOPIC,
        'Probe pose in base (PoseStamped), 100 Hz decimated by default; empty = no pose.',
        read_only=True,
    ),
    ParamSpec(
        'pose_tolerance_s',
        0.02,
        'Largest gap between a frame stamp and the pose samples around it '
        '(two sample periods of the 100 Hz decimated stream).',
        min_value=1e-4,
        max_value=1.0,
        read_only=True,
    ),
    ParamSpec(
        'guidance_topic',
        '/guidance',
        'Output Guidance topic; markers and overlay go to '
        '<guidance_topic>/markers and /overlay, the service to <guidance_topic>/set_target_plane.',
        read_only=True,
        check=lambda v: _nonempty(v, 'guidance_topic'),
    ),
    ParamSpec('fusion.enabled', True, 'Fuse recent frames moved by the measured probe motion.'),
    ParamSpec('fusion.window_s', 1.0, 'Fusion window (s).', min_value=0.01, max_value=10.0),
    ParamSpec('fusion.max_frames', 30, 'Most frames fused.', min_value=1, max_value=300),
    ParamSpec(
        'fusion.half_life_s',
        0.5,
        'Age at which a past prediction weighs half.',
        min_value=0.01,
        max_value=10.0,
    ),
    ParamSpec(
        'fusion.method',
        'median',
        'Fusion: per-axis weighted median or outlier-trimmed mean.',
        choices=('median', 'mean'),
    ),
    ParamSpec(
        'fusion.outlier_sigma',
        2.5,
        'Method mean: drop predictions beyond this many robust standard deviations of the median.',
        min_value=0.1,
        max_value=100.0,
    ),
    ParamSpec(
        'fusion.motion_scale_mm',
        1.0,
        'Probe travel (mm) since a past frame that lowers its weight to 0.61; 0 = off.',
        min_value=0.0,
        max_value=1000.0,
    ),
    ParamSpec(
        'fusion.motion_scale_deg',
        1.0,
        'Probe rotation (deg) since a past frame that lowers its weight to 0.61; 0 = off.',
        min_value=0.0,
        max_value=180.0,
    ),
    ParamSpec(
        'fusion.min_frames',
        4.0,
        'Effective frames needed for full confidence.',
        min_value=1.0,
        max_value=300.0,
    ),
    ParamSpec(
        'fusion.confidence_scale',
        [3.0, 3.0, 3.0, 5.0, 5.0, 5.0],
        'Per-axis spread (mm x3, deg x3) at which confidence is 0.61.',
        length=6,
        check=_six_positive,
    ),
    ParamSpec(
        'reached.enter_mm', 5.0, 'Plane reached within this translation.', min_value=0.1, max_value=100.0
    ),
    ParamSpec('reached.enter_deg', 5.0, 'Plane reached within this rotation.', min_value=0.1, max_value=90.0),
    ParamSpec('reached.exit_mm', 7.0, 'Plane left beyond this translation.', min_value=0.1, max_value=100.0),
    ParamSpec('reached.exit_deg', 7.0, 'Plane left beyond this rotation.', min_value=0.1, max_value=90.0),
    ParamSpec(
        'reached.enter_frames',
        3,
        'Consecutive frames inside to turn "reached" on.',
        min_value=1,
        max_value=300,
    ),
    ParamSpec(
        'reached.exit_frames', 3, 'Consecutive frames outside to turn it off.', min_value=1, max_value=300
    ),
    ParamSpec(
        'reached.min_confidence', 0.3, 'Confidence needed to turn "reached" on.', min_value=0.0, max_value=1.0
    ),
    ParamSpec(
        'reached.max_distance',
        0.6,
        'Stop judgement (models with a distance head): median distance of the still frames, in units of '
        'the 5 mm / 5 deg window, at most this to turn "reached" on.',
        min_value=0.01,
        max_value=10.0,
    ),
    ParamSpec(
        'reached.exit_distance',
        1.0,
        'Distance above which the plane counts as left.',
        min_value=0.01,
        max_value=10.0,
    ),
    ParamSpec(
        'reached.distance_window_s',
        1.0,
        'Distance answers of frames at most this old are combined.',
        min_value=0.01,
        max_value=10.0,
    ),
    ParamSpec(
        'reached.still_mm',
        0.5,
        'Frames taken within this of the current pose count as still.',
        min_value=0.01,
        max_value=50.0,
    ),
    ParamSpec('reached.still_deg', 0.5, 'And within this rotation.', min_value=0.01, max_value=45.0),
    ParamSpec(
        'stages.enter_mm',
        8.0,
        'Coarse estimate within this: the fine model takes over.',
        min_value=0.1,
        max_value=100.0,
    ),
    ParamSpec('stages.enter_deg', 8.0, 'And within this rotation.', min_value=0.1, max_value=90.0),
    ParamSpec(
        'stages.exit_mm',
        14.0,
        'Fine estimate beyond this: back to the coarse model.',
        min_value=0.1,
        max_value=100.0,
    ),
    ParamSpec('stages.exit_deg', 14.0, 'Or beyond this rotation.', min_value=0.1, max_value=90.0),
    ParamSpec(
        'stages.enter_frames',
        2,
        'Consecutive near frames before the fine model answers.',
        min_value=1,
        max_value=300,
    ),
    ParamSpec(
        'stages.exit_frames',
        3,
        'Consecutive far frames before the coarse model answers again.',
        min_value=1,
        max_value=300,
    ),
    ParamSpec(
        'echo.level',
        40,
        'No-echo test: grey level a pixel must exceed to count as echo.',
        min_value=0,
        max_value=254,
    ),
    ParamSpec(
        'echo.min_fraction',
        0.025,
        'No-echo test: a frame with a smaller share of echo pixels gets confidence 0 (0 = off).',
        min_value=0.0,
        max_value=0.99,
    ),
    ParamSpec('overlay.enabled', True, 'Publish the overlay image.'),
    ParamSpec(
        'overlay.every_n',
        1,
        'Publish the overlay for every n-th processed frame.',
        min_value=1,
        max_value=1000,
    ),
    ParamSpec(
        'overlay.min_side',
        384,
        'Overlay height at least this (frame scaled up).',
        min_value=64,
        max_value=4096,
    ),
    ParamSpec('markers.enabled', True, 'Publish RViz markers.'),
    ParamSpec(
        'diagnostics_period_s', 1.0, 'Diagnostics period.', min_value=0.1, max_value=60.0, read_only=True
    ),
]


def _percentile_ms(values, q):
    return f'{np.percentile(values, q) * 1e3:.1f}' if values else ''


class GuidanceNode(Node):
    """Publishes guidance for the newest frame; see the module docstring."""

    def __init__(self, **node_kwargs):
        """Declare parameters, load the model (exit 2 on failure), subscribe and start the worker."""
        super().__init__('guidance', **node_kwargs)
        from echo_guidance.guidance.backends import BackendError, load_backend
        from echo_guidance.guidance.engine import GuidanceEngine

        self.params = declare_parameters(self, PARAMETERS, on_change=self._on_parameters)
        p = self.params
        model_path, fine_model_path = check_parameters(p)
        expected = (p['expected_width'], p['expected_height'])
        try:
            backend = load_backend(model_path, p['backend'], threads=p['threads'])
        except BackendError as err:
            raise ParameterValidationError(f'cannot load the guidance model: {err}') from None
        fine_backend = None
        if fine_model_path:
            try:
                fine_backend = load_backend(fine_model_path, p['backend'], threads=p['threads'])
            except BackendError as err:
                raise ParameterValidationError(f'cannot load the fine guidance model: {err}') from None
        try:
            self.engine = GuidanceEngine(
                backend,
                p['target_plane'],
                expected_size=expected if expected[0] else None,
                fine_backend=fine_backend,
                **engine_settings(p),
            )
        except ValueError as err:
            raise ParameterValidationError(str(err)) from None
        self._engine_lock = threading.Lock()
        # (stamp_s, x, y, z m, qx, qy, qz, qw): 30 s of the 100 Hz decimated stream, 3 s at 1 kHz.
        self._raw_poses = collections.deque(maxlen=3000)
        self._pose_lock = threading.Lock()

        from sensor_msgs.msg import Image
        from visualization_msgs.msg import MarkerArray

        from echo_guidance.msg import Guidance
        from echo_guidance.srv import SetTargetPlane

        topic = p['guidance_topic'].rstrip('/') or '/guidance'
        self._guidance_pub = self.create_publisher(Guidance, topic, GUIDANCE_QOS)
        self._markers_pub = self.create_publisher(MarkerArray, f'{topic}/markers', GUIDANCE_QOS)
        self._overlay_pub = self.create_publisher(Image, f'{topic}/overlay', DIAGNOSTICS_QOS)
        self.create_service(SetTargetPlane, f'{topic}/set_target_plane', self._set_target_plane)
        self.create_subscription(Image, p['image_topic'], self._on_image, NEWEST_FRAME_QOS)
        if p['pose_topic'].strip():
            from geometry_msgs.msg import PoseStamped

            self.create_subscription(PoseStamped, p['pose_topic'], self._on_pose, POSE_QOS)

        self.stats = collections.Counter(
            frames_received=0,
            frames_processed=0,
            frames_skipped=0,
            invalid_published=0,
            frames_refused=0,
            nan_outputs=0,
            poses_rejected=0,
            frames_with_pose=0,
        )
        self._latency_s = collections.deque(maxlen=STATS_WINDOW)
        self._inference_s = collections.deque(maxlen=STATS_WINDOW)
        self._recent_valid = collections.deque(maxlen=30)
        self._last_status = ''
        self._last_pose_status = ''
        self._rate_window = (time.monotonic(), 0)
        self._rate_hz = 0.0
        self._pending = None
        self._condition = threading.Condition()
        self._stop = threading.Event()
        self.context.on_shutdown(self._wake_to_stop)
        self._diagnostics = DiagnosticsPublisher(
            self,
            f'guidance: {topic}',
            backend.model_id,
            self._diagnostic_status,
            period_s=p['diagnostics_period_s'],
        )
        self._worker = threading.Thread(target=self._work, name='guidance-worker', daemon=True)
        self._worker.start()
        if backend.warm_up_warning:
            self.get_logger().warning(backend.warm_up_warning)
        quant = backend.quantization
        self.get_logger().info(
            f'guidance ready: model {backend.model_id}, input {backend.input_size}x{backend.input_size}, '
            f'planes {", ".join(backend.planes)}, target {p["target_plane"]}, '
            f'quantization {quant["method"] if quant else "none"}, frames from {p["image_topic"]}, '
            f'poses from {p["pose_topic"] or "(none)"}, publishing {topic}'
        )

    # --- configuration -------------------------------------------------------------------------

    def _on_parameters(self, changed):
        merged = dict(self.params, **changed)
        fusion = fusion_config(merged) if any(k.startswith('fusion.') for k in changed) else None
        reached = reached_config(merged) if any(k.startswith('reached.') for k in changed) else None
        stages = stage_config(merged) if any(k.startswith('stages.') for k in changed) else None
        echo = echo_config(merged) if any(k.startswith('echo.') for k in changed) else None
        with self._engine_lock:
            if 'target_plane' in changed:
                self.engine.set_plane(changed['target_plane'])  # raises UnknownPlaneError -> rejected
                self.get_logger().info(f'target plane: {changed["target_plane"]}')
            if fusion is not None:
                self.engine.set_fusion(fusion)
            if stages is not None:
                from echo_guidance.guidance.stages import StageSwitch

                self.engine.switch = StageSwitch(stages, has_fine=self.engine.fine_backend is not None)
            if echo is not None:
                self.engine.echo = echo
            if reached is not None:
                from echo_guidance.guidance.fusion import PlaneReachedJudge

                self.engine.judge = PlaneReachedJudge(reached)

    def _set_target_plane(self, request, response):
        from rclpy.parameter import Parameter

        result = self.set_parameters(
            [Parameter('target_plane', Parameter.Type.STRING, request.target_plane)]
        )[0]
        response.success = bool(result.successful)
        response.message = (
            f'target plane is now {request.target_plane}'
            if result.successful
            else f'refused: {result.reason}'
        )
        return response

    # --- inputs --------------------------------------------------------------------------------

    def _on_pose(self, msg):
        # At 1 kHz this callback dominated the node's CPU (hence the decimated topic): only store the
        # numbers; the worker converts the two samples around each frame's stamp.
        p, q = msg.pose.position, msg.pose.orientation
        sample = (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, p.x, p.y, p.z, q.x, q.y, q.z, q.w)
        with self._pose_lock:
            self._raw_poses.append(sample)

    def _on_image(self, msg):
        with self._condition:
            self.stats['frames_received'] += 1
            if self._pending is not None:
                self.stats['frames_skipped'] += 1
            self._pending = msg
            self._condition.notify()

    def _pose_at(self, stamp_s):
        """The probe pose at a frame stamp (4x4 mm), or (None, reason); see echo_guidance.sync."""
        from echo_guidance.guidance.pose_lookup import pose_at_stamp

        with self._pose_lock:
            samples = list(self._raw_poses)
        pose, reason, rejected = pose_at_stamp(samples, stamp_s, self.params['pose_tolerance_s'])
        self.stats['poses_rejected'] += rejected
        return pose, reason

    # --- processing ----------------------------------------------------------------------------

    def _wake_to_stop(self):
        self._stop.set()
        with self._condition:
            self._condition.notify_all()

    def _work(self):
        while not self._stop.is_set():
            with self._condition:
                while self._pending is None and not self._stop.is_set():
                    self._condition.wait(0.5)
                msg, self._pending = self._pending, None
            if msg is None:
                continue
            try:
                self._process(msg)
            except Exception as err:  # never let one frame end the guidance
                if self._stop.is_set() or not self.context.ok():
                    return
                self._last_status = f'processing failed: {type(err).__name__}: {err}'
                self.get_logger().error(self._last_status, throttle_duration_sec=5.0)

    def _process(self, msg):
        from echo_guidance.guidance.preprocess import FrameFormatError, frame_from_image_fields
        from echo_guidance.guidance.presentation import draw_overlay
        from echo_guidance.guidance.ros_messages import guidance_markers, guidance_message, rgb_image_message

        stamp_s = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        frame_id = msg.header.frame_id or 'probe'
        try:
            frame = frame_from_image_fields(msg.encoding, msg.height, msg.width, msg.step, msg.data)
        except FrameFormatError as err:
            frame = None
            refused = f'frame refused: {err}'
        pose, pose_status = (
            self._pose_at(stamp_s) if self.params['pose_topic'].strip() else (None, 'no pose topic')
        )
        with self._engine_lock:
            if frame is None:
                result = self.engine.no_guidance(stamp_s, refused)
            else:
                result = self.engine.step(frame, pose, stamp_s)
        if self._stop.is_set():
            return
        self._guidance_pub.publish(guidance_message(result, msg.header.stamp, frame_id))
        published_ns = self.get_clock().now().nanoseconds
        if self.params['markers.enabled']:
            self._markers_pub.publish(guidance_markers(result, msg.header.stamp, frame_id))
        processed = self.stats['frames_processed']
        if (
            frame is not None
            and self.params['overlay.enabled']
            and processed % self.params['overlay.every_n'] == 0
        ):
            overlay = draw_overlay(frame, result, self.params['overlay.min_side'])
            self._overlay_pub.publish(rgb_image_message(overlay, msg.header.stamp, frame_id))
        self.stats['frames_processed'] += 1
        self._latency_s.append(published_ns * 1e-9 - stamp_s)
        self._recent_valid.append(result.valid)
        if result.pose_used:
            self.stats['frames_with_pose'] += 1
        self._last_pose_status = pose_status or result.pose_status
        if result.valid:
            self._inference_s.append(result.inference_s)
            self._last_status = ''
        else:
            self.stats['invalid_published'] += 1
            if result.status.startswith('frame refused'):
                self.stats['frames_refused'] += 1
            elif result.status.startswith('model output is not finite'):
                self.stats['nan_outputs'] += 1
            if result.status != self._last_status:
                self.get_logger().error(f'no guidance: {result.status}', throttle_duration_sec=5.0)
            self._last_status = result.status

    # --- supervision ---------------------------------------------------------------------------

    def _diagnostic_status(self):
        now = time.monotonic()
        t0, n0 = self._rate_window
        n = self.stats['frames_processed']
        if now > t0:
            self._rate_hz = (n - n0) / (now - t0)
        self._rate_window = (now, n)
        latency = list(self._latency_s)
        inference = list(self._inference_s)
        values = dict(self.stats)
        values.update(
            {
                'rate_hz': f'{self._rate_hz:.2f}',
                'latency_ms_p50': _percentile_ms(latency, 50),
                'latency_ms_p99': _percentile_ms(latency, 99),
                'inference_ms_p50': _percentile_ms(inference, 50),
                'inference_ms_p99': _percentile_ms(inference, 99),
                'target_plane': self.engine.plane,
                'model_id': self.engine.model_id,
                'backend': self.engine.backend.name,
                'fusion': 'on' if self.engine.fusion.config.enabled else 'off',
                'last_status': self._last_status,
                'pose_status': self._last_pose_status,
            }
        )
        if self._recent_valid and not any(self._recent_valid):
            return 'ERROR', f'no guidance: {self._last_status}', values
        if self._rate_hz == 0.0:
            return 'WARN', 'no frames received', values
        if self._last_status:
            return 'WARN', f'some frames without guidance: {self._last_status}', values
        return 'OK', f'guiding to {self.engine.plane} at {self._rate_hz:.1f} Hz', values

    def close(self):
        """Stop the worker and release the model."""
        self._wake_to_stop()
        if self._worker.is_alive():
            self._worker.join(2.0)
        self.engine.backend.close()


def main(args=None):
    """Run the guidance node."""
    return run_node(GuidanceNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
