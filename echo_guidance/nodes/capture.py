"""Capture node: publishes ultrasound frames from a frame source as mono8 images.

Topics (docs/capture.md):

- ``/us/image`` (sensor_msgs/Image, mono8, frame_id ``probe``): header.stamp = acquisition time on
  the ROS clock, device latency subtracted. QoS: reliable, keep-last ``IMAGE_QOS_DEPTH``.
- ``/us/frame_info`` (std_msgs/UInt64MultiArray): ``[stamp_ns, sequence, source_index,
  source_dropped_total]`` for every image, so receivers detect lost frames.
- ``/diagnostics``: rate, counters, stalls and resolution changes at 1 Hz.
- service ``~/accept_source_resolution`` (std_srvs/Trigger): accept a changed source resolution.
- in simulation (``source_kind: sim``) it subscribes to ``/arm/probe_pose/decimated`` (100 Hz) and
  renders at the newest pose received.

The frame loop runs in its own thread (sources block until their next frame); timers, services
and subscriptions run in the executor.
"""

import threading
import time

from rclpy.node import Node

from echo_guidance.nodes._common import (
    IMAGE_QOS,
    DiagnosticsPublisher,
    ParameterValidationError,
    ParamSpec,
    declare_parameters,
    run_node,
)
from echo_guidance.nodes.arm_state import DECIMATED_POSE_TOPIC
from echo_guidance.sources import (
    SOURCE_KINDS,
    CropSpec,
    EndOfStream,
    FrameFormatError,
    FrameInfo,
    FramePreprocessor,
    FrameReadError,
    ResolutionChangedError,
    SourceSpecError,
    open_source,
)
from echo_guidance.sources.frame_info import FRAME_INFO_FIELDS


def _check_crop(value):
    CropSpec.from_sequence(value)


PARAMETERS = [
    ParamSpec('source_kind', 'test_pattern', 'Frame source kind.', choices=SOURCE_KINDS, read_only=True),
    ParamSpec('source_spec', '', 'Source spec: device index/path/URL, GStreamer pipeline, file path, '
              "or test-pattern size such as '640x480'.", read_only=True),
    ParamSpec('rate_hz', 0.0, 'Frame rate; 0 = the source default (file timing, 30 Hz generated).',
              min_value=0.0, max_value=1000.0, read_only=True),
    ParamSpec('loop', False, 'Replay video/DICOM files from the start when they end.', read_only=True),
    ParamSpec('crop', [0, 0, 0, 0], 'Crop [x, y, width, height] in source pixels; width or height 0 = '
              'whole frame.', min_value=0, max_value=16384, length=4, check=_check_crop),
    ParamSpec('output_width', 0, 'Published width in pixels; 0 (with output_height 0) = crop width.',
              min_value=0, max_value=8192),
    ParamSpec('output_height', 0, 'Published height in pixels; 0 (with output_width 0) = crop height.',
              min_value=0, max_value=8192),
    ParamSpec('expected_source_width', 0, 'Source width the capture must deliver; 0 = lock on the '
              'first frame.', min_value=0, max_value=16384),
    ParamSpec('expected_source_height', 0, 'Source height the capture must deliver; 0 = lock on the '
              'first frame.', min_value=0, max_value=16384),
    ParamSpec('latency_s', 0.0, 'Device latency subtracted from the acquisition/receive time, seconds.',
              min_value=0.0, max_value=2.0),
    ParamSpec('frame_id', 'probe', 'header.frame_id of the images.',
              check=lambda v: _nonempty(v, 'frame_id')),
    ParamSpec('image_topic', '/us/image', 'Image topic.', read_only=True,
              check=lambda v: _nonempty(v, 'image_topic')),
    ParamSpec('frame_info_topic', '/us/frame_info', 'Companion frame-info topic.', read_only=True,
              check=lambda v: _nonempty(v, 'frame_info_topic')),
    ParamSpec('stall_periods', 5.0, 'No frame for this many frame periods is a stall (ERROR).',
              min_value=1.5, max_value=10000.0),
    ParamSpec('pose_topic', DECIMATED_POSE_TOPIC, 'Probe pose topic (sim source only); the 100 Hz decimated '
              'stream by default (rendering needs 30 poses a second).', read_only=True),
    ParamSpec('sim_seed', 0, 'Virtual patient seed (sim source only).', min_value=0, max_value=2 ** 31 - 1,
              read_only=True),
    ParamSpec('diagnostics_period_s', 1.0, 'Diagnostics period.', min_value=0.1, max_value=60.0,
              read_only=True),
]


def _nonempty(value, name):
    if not str(value).strip():
        raise ValueError(f'{name} must not be empty')


class CaptureNode(Node):
    """Publishes frames from one source; see the module docstring."""

    def __init__(self, **node_kwargs):
        """Declare parameters, open the source and start the frame thread."""
        super().__init__('capture', **node_kwargs)
        from sensor_msgs.msg import Image
        from std_msgs.msg import UInt64MultiArray
        from std_srvs.srv import Trigger

        self.params = declare_parameters(self, PARAMETERS, on_change=self._on_parameters)
        p = self.params
        self._lock = threading.Lock()
        self._preprocessor = self._build_preprocessor(p)
        self._latest_pose_msg = None
        if p['source_kind'] == 'sim':
            self._subscribe_pose(p['pose_topic'])
        try:
            self.source = open_source(p['source_kind'], p['source_spec'], rate_hz=p['rate_hz'],
                                      loop=p['loop'], pose_provider=self._latest_pose_mm,
                                      sim_seed=p['sim_seed'])
        except SourceSpecError as err:
            raise ParameterValidationError(
                f'cannot open source {p["source_kind"]}:{p["source_spec"]!r}: {err}') from None
        rate = self.source.nominal_rate_hz or p['rate_hz'] or 30.0
        self._expected_period_s = 1.0 / rate
        self._image_publisher = self.create_publisher(Image, p['image_topic'], IMAGE_QOS)
        self._info_publisher = self.create_publisher(UInt64MultiArray, p['frame_info_topic'], IMAGE_QOS)
        self._image_msg_type = Image
        self._info_msg_type = UInt64MultiArray
        from std_msgs.msg import MultiArrayDimension
        self._info_dim = MultiArrayDimension(label=','.join(FRAME_INFO_FIELDS), size=len(FRAME_INFO_FIELDS),
                                             stride=len(FRAME_INFO_FIELDS))
        self.create_service(Trigger, '~/accept_source_resolution', self._accept_resolution)

        self.stats = {'frames_published': 0, 'frames_dropped_by_source': 0, 'frames_rejected': 0,
                      'read_failures': 0, 'stalls': 0, 'non_monotonic_stamps': 0}
        self._source_size = None
        self._resolution_error = ''
        self._format_error = ''
        self._last_error = ''
        self._last_error_log = 0.0
        self._last_frame_monotonic = time.monotonic()
        self._stalled = False
        self._ended = ''
        self._last_source_index = None
        self._last_stamp_ns = None
        self._window = (time.monotonic(), 0)
        self._measured_rate_hz = 0.0

        self._diagnostics = DiagnosticsPublisher(
            self, f'capture: {p["image_topic"]}', self.source.description, self._diagnostic_status,
            period_s=p['diagnostics_period_s'])
        self.create_timer(min(self._expected_period_s, 0.1), self._check_stall)
        self._stop = threading.Event()
        # rclpy shuts the context down on SIGINT/SIGTERM before close() runs: stop publishing then.
        self.context.on_shutdown(self._stop.set)
        self._thread = threading.Thread(target=self._frame_loop, name='capture-frames', daemon=True)
        self._thread.start()
        self.get_logger().info(
            f'capturing from {self.source.description} at ~{rate:g} Hz to {p["image_topic"]} '
            f'(crop {p["crop"]}, output {p["output_width"]}x{p["output_height"]}, '
            f'latency {p["latency_s"]:g} s)')

    # --- configuration -------------------------------------------------------------------------

    @staticmethod
    def _build_preprocessor(p):
        out = (p['output_width'], p['output_height'])
        if (out[0] == 0) != (out[1] == 0):
            raise ParameterValidationError(
                f'output_width and output_height must both be 0 or both > 0, got {out[0]}x{out[1]}')
        expected = (p['expected_source_width'], p['expected_source_height'])
        if (expected[0] == 0) != (expected[1] == 0):
            raise ParameterValidationError(
                'expected_source_width and expected_source_height must both be 0 or both > 0, '
                f'got {expected[0]}x{expected[1]}')
        try:
            return FramePreprocessor(CropSpec.from_sequence(p['crop']), out,
                                     expected if expected[0] else None)
        except ValueError as err:
            raise ParameterValidationError(str(err)) from None

    def _on_parameters(self, changed):
        geometry = {'crop', 'output_width', 'output_height', 'expected_source_width',
                    'expected_source_height'}
        if changed.keys() & geometry:
            merged = dict(self.params, **changed)
            preprocessor = self._build_preprocessor(merged)  # raises (rejects) when inconsistent
            if self._source_size is not None and preprocessor.locked_size is None:
                preprocessor.crop.resolve(*self._source_size)
            with self._lock:
                self._preprocessor = preprocessor
                self._resolution_error = ''
            self.get_logger().info(f'image geometry reconfigured: {changed}')

    def _accept_resolution(self, request, response):
        with self._lock:
            self._preprocessor.relock()
            previous = self._resolution_error
            self._resolution_error = ''
        response.success = True
        response.message = ('accepted the current source resolution' if previous
                            else 'no resolution change was pending; lock reset')
        self.get_logger().info(response.message)
        return response

    def _subscribe_pose(self, topic):
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import qos_profile_sensor_data

        try:
            from echo_guidance.geometry import pose_stamped_to_matrix
        except ImportError as err:
            raise ParameterValidationError(f'the sim source needs echo_guidance.geometry: {err}') from None
        self._pose_stamped_to_matrix = pose_stamped_to_matrix

        def on_pose(msg):
            # Only keep the message: the frame thread converts the one it renders at (30 a second),
            # so a full-rate pose topic costs just the receiving.
            self._latest_pose_msg = msg

        # Best effort matches both reliable and best-effort pose publishers.
        self.create_subscription(PoseStamped, topic, on_pose, qos_profile_sensor_data)

    def _latest_pose_mm(self):
        """The newest received probe pose as a 4x4 matrix in mm, or None (the sim source's pose provider)."""
        msg = self._latest_pose_msg
        # A malformed pose raises GeometryError here; the frame loop reports it as a read failure.
        return None if msg is None else self._pose_stamped_to_matrix(msg)

    # --- frame loop ----------------------------------------------------------------------------

    def _error(self, message, throttle_s=5.0):
        self._last_error = message
        now = time.monotonic()
        if now - self._last_error_log >= throttle_s:
            self._last_error_log = now
            self.get_logger().error(message)

    def _frame_loop(self):
        while not self._stop.is_set():
            try:
                frame = self.source.read()
            except FrameReadError as err:
                self.stats['read_failures'] += 1
                self._error(f'source read failed: {err}')
                self._stop.wait(min(self._expected_period_s, 0.05))
                continue
            except EndOfStream as err:
                self._ended = str(err)
                self.get_logger().warning(f'source ended: {err}')
                return
            except Exception as err:  # a source bug must not kill the node silently
                self.stats['read_failures'] += 1
                self._error(f'source raised {type(err).__name__}: {err}')
                self._stop.wait(0.1)
                continue
            try:
                self._handle_frame(frame)
            except Exception as err:
                if self._stop.is_set() or not self.context.ok():
                    return
                self._error(f'publishing frame {frame.index} failed: {type(err).__name__}: {err}')

    def _handle_frame(self, frame):
        receive_wall = time.time()
        ros_now_ns = self.get_clock().now().nanoseconds
        if self._last_source_index is not None and frame.index > self._last_source_index + 1:
            self.stats['frames_dropped_by_source'] += frame.index - self._last_source_index - 1
        self._last_source_index = frame.index
        shape = getattr(frame.image, 'shape', ())
        if len(shape) >= 2:
            self._source_size = (int(shape[1]), int(shape[0]))
        with self._lock:
            preprocessor = self._preprocessor
        try:
            image = preprocessor.process(frame.image, frame.color_order)
        except ResolutionChangedError as err:
            self.stats['frames_rejected'] += 1
            if not self._resolution_error:
                self.get_logger().error(str(err))
            self._resolution_error = str(err)
            self._last_error = str(err)
            return
        except (FrameFormatError, ValueError) as err:
            self.stats['frames_rejected'] += 1
            self._format_error = f'frame {frame.index} rejected: {err}'
            self._error(self._format_error)
            return
        self._format_error = ''
        if self._resolution_error:
            self.get_logger().info('source is back at the locked resolution; publishing again')
            self._resolution_error = ''

        acquisition_wall = frame.acquisition_time_s if frame.acquisition_time_s is not None else receive_wall
        age_ns = int(round((receive_wall - acquisition_wall) * 1e9))
        stamp_ns = ros_now_ns - age_ns - int(round(self.params['latency_s'] * 1e9))
        if self._last_stamp_ns is not None and stamp_ns <= self._last_stamp_ns:
            self.stats['non_monotonic_stamps'] += 1
        self._last_stamp_ns = stamp_ns

        msg = self._image_msg_type()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        msg.header.frame_id = self.params['frame_id']
        msg.height, msg.width = image.shape
        msg.encoding = 'mono8'
        msg.is_bigendian = 0
        msg.step = image.shape[1]
        msg.data = image.tobytes()
        sequence = self.stats['frames_published']
        dropped_total = self.stats['frames_dropped_by_source'] + self.stats['frames_rejected']
        info = self._info_msg_type()
        info.layout.dim = [self._info_dim]
        info.data = FrameInfo(stamp_ns, sequence, frame.index, dropped_total).to_list()
        self._image_publisher.publish(msg)
        self._info_publisher.publish(info)
        self.stats['frames_published'] += 1
        self._last_frame_monotonic = time.monotonic()

    # --- supervision ---------------------------------------------------------------------------

    def _check_stall(self):
        silent_s = time.monotonic() - self._last_frame_monotonic
        limit_s = self.params['stall_periods'] * self._expected_period_s
        if silent_s > limit_s and not self._stalled and not self._ended:
            self._stalled = True
            self.stats['stalls'] += 1
            cause = self._resolution_error or self._format_error or self._last_error or 'no frame from source'
            self.get_logger().error(f'capture stalled: no frame published for {silent_s:.2f} s ({cause})')
        elif silent_s <= limit_s and self._stalled:
            self._stalled = False
            self.get_logger().info('capture resumed')

    def _diagnostic_status(self):
        now = time.monotonic()
        t0, n0 = self._window
        n = self.stats['frames_published']
        if now > t0:
            self._measured_rate_hz = (n - n0) / (now - t0)
        self._window = (now, n)
        values = dict(self.stats)
        values.update({
            'rate_hz': f'{self._measured_rate_hz:.2f}',
            'expected_rate_hz': f'{1.0 / self._expected_period_s:.2f}',
            'source_resolution': 'x'.join(map(str, self._source_size)) if self._source_size else '',
            'locked_resolution': 'x'.join(map(str, self._preprocessor.locked_size or ())),
            'latency_s': self.params['latency_s'],
            'last_error': self._last_error,
        })
        if self._resolution_error:
            return 'ERROR', self._resolution_error, values
        if self._stalled:
            cause = self._format_error or self._last_error or 'no frame from source'
            return 'ERROR', f'stalled: {cause}', values
        if self._ended:
            return 'WARN', f'source ended: {self._ended}', values
        if self._format_error:
            return 'ERROR', self._format_error, values
        return 'OK', f'publishing at {self._measured_rate_hz:.1f} Hz', values

    def close(self):
        """Stop the frame thread and close the source."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self.source.close()


def main(args=None):
    """Run the capture node."""
    return run_node(CaptureNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
