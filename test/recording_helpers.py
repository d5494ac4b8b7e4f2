"""Shared helpers of the arm/recorder node tests: start nodes as processes, watch topics from the test.

The nodes under test run as real rclpy processes (conftest's ``processes`` fixture, on the test's own
ROS domain); :class:`Watcher` is the test's side: an rclpy node in a private context that subscribes
to the recorder's status, the arm's poses and /diagnostics, publishes pedal events and images, and
calls the recorder's services.
"""

import tempfile
import time

import yaml

from echo_guidance.recording.profiles import NodeSpec, node_command


def node_args(module, *params, files=(), name=None, params_dir=None):
    """Argv running ``echo_guidance.nodes.<module>`` with parameter files and ``name:=value`` params.

    The ``name:=value`` params go into a generated parameter file loaded last (as ``echo-guidance
    record`` does), so they win over the files' values for this node; a ``-p`` would not.
    """
    parameters = {}
    for param in params:
        key, value = param.split(':=', 1)
        parameters[key] = yaml.safe_load(value)
    spec = NodeSpec(name or module, module, tuple(files), parameters)
    return node_command(spec, params_dir=params_dir or tempfile.mkdtemp(prefix='recording-test-'))


def start_arm(processes, *params):
    """Start the arm-state node on the scripted 1 kHz trajectory."""
    return processes.start(
        node_args('arm_state', *params, files=('arm_calibration.yaml', 'arm_scripted.yaml')), name='arm_state'
    )


def start_capture(processes, *params):
    """Start the capture node on the 640x480 test pattern at 30 fps."""
    return processes.start(
        node_args('capture', 'source_kind:=test_pattern', 'source_spec:=640x480', 'rate_hz:=30.0', *params),
        name='capture',
    )


def start_recorder(processes, output_dir, *params):
    """Start the recorder node writing into ``output_dir``; its params file is recorder.yaml."""
    return processes.start(
        node_args(
            'recorder',
            f'output_dir:={output_dir}',
            'min_free_bytes:=0',
            *params,
            files=('arm_calibration.yaml', 'recorder.yaml'),
        ),
        name='recorder',
    )


class Watcher:
    """The test's rclpy node: recorder status, diagnostics, arm poses; pedal and image publishers."""

    def __init__(self, context, pose_qos_reliable=True):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_srvs.srv import Trigger

        from echo_guidance.msg import PedalEvent, RecorderStatus
        from echo_guidance.nodes._common import EVENT_QOS, IMAGE_QOS

        self.node = rclpy.create_node('recording_test', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.statuses, self.diagnostics, self.poses = [], {}, []
        self.node.create_subscription(RecorderStatus, '/recorder/status', self.statuses.append, 50)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        reliability = ReliabilityPolicy.RELIABLE if pose_qos_reliable else ReliabilityPolicy.BEST_EFFORT
        self.node.create_subscription(
            PoseStamped,
            '/arm/probe_pose',
            self.poses.append,
            QoSProfile(depth=5000, history=HistoryPolicy.KEEP_LAST, reliability=reliability),
        )
        self.pedal = self.node.create_publisher(PedalEvent, '/pedal/event', EVENT_QOS)
        self.images = self.node.create_publisher(Image, '/us/image', IMAGE_QOS)
        self.start_client = self.node.create_client(Trigger, '/recorder/start')
        self.stop_client = self.node.create_client(Trigger, '/recorder/stop')
        self._trigger = Trigger
        self._pedal_type = PedalEvent
        self._image_type = Image

    def _on_diagnostics(self, msg):
        for status in msg.status:
            self.diagnostics[status.name] = status

    def spin_for(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)

    def spin_until(self, condition, timeout, what, processes=()):
        """Spin until ``condition()`` is truthy; fail naming ``what`` (and any process that died)."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            for process in processes:
                if process.popen.poll() is not None:
                    raise AssertionError(
                        f'{process.name} exited ({process.popen.returncode}) while waiting for '
                        f'{what}:\n{process.output()}'
                    )
            if time.monotonic() > deadline:
                raise AssertionError(f'timed out after {timeout} s waiting for {what}')
            self.executor.spin_once(timeout_sec=0.02)

    def diagnostic_values(self, fragment):
        """Values of the newest diagnostics status whose name contains ``fragment`` (empty dict if none)."""
        for name, status in self.diagnostics.items():
            if fragment in name:
                return {kv.key: kv.value for kv in status.values}
        return {}

    def recorder_receiving(self, frames=3, poses=100):
        """True once the recorder's diagnostics show it receives both streams (subscriptions matched)."""
        values = self.diagnostic_values('recorder')
        return (
            int(values.get('frames_received_total', 0)) >= frames
            and int(values.get('poses_received_total', 0)) >= poses
        )

    def last_status(self):
        return self.statuses[-1] if self.statuses else None

    def call(self, client, timeout=10.0):
        """Call a Trigger service; return the response."""
        assert client.wait_for_service(timeout_sec=timeout), f'{client.srv_name} not available'
        future = client.call_async(self._trigger.Request())
        self.spin_until(future.done, timeout, f'answer of {client.srv_name}')
        return future.result()

    def send_pedal(self, event, detail=''):
        msg = self._pedal_type(event=event, source='test', detail=detail)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pedal.publish(msg)

    def send_image(self, data, width, height, encoding='mono8', step=None):
        msg = self._image_type(width=width, height=height, encoding=encoding, step=step or width)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.header.frame_id = 'probe'
        msg.data = bytes(data)
        self.images.publish(msg)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
