"""The decimated pose topic of the arm-state and arm-control nodes, as real processes over DDS.

The test subscribes to both the full and the decimated topic (reliable, deep queues: nothing is lost)
and checks that the decimated one carries exactly every k-th message of the full one, unchanged.
"""

import math
import time

import numpy as np
import pytest
from recording_helpers import node_args, start_arm

rclpy = pytest.importorskip("rclpy")

FULL, DECIMATED = "/arm/probe_pose", "/arm/probe_pose/decimated"


class TwoTopics:
    """The test's node: records every message of the full and the decimated pose topic."""

    def __init__(self, context):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        self.node = rclpy.create_node("pose_decimation_test", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=5000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self.messages = {FULL: [], DECIMATED: []}
        self.diagnostics = {}
        for topic, received in self.messages.items():
            self.node.create_subscription(PoseStamped, topic, received.append, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)

    def _on_diagnostics(self, msg):
        for status in msg.status:
            self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    def spin_until(self, condition, timeout, what, processes=()):
        deadline = time.monotonic() + timeout
        while not condition():
            for process in processes:
                if process.popen.poll() is not None:
                    raise AssertionError(
                        f"{process.name} exited while waiting for {what}:\n{process.output()}"
                    )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self.executor.spin_once(timeout_sec=0.02)

    def spin_for(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def topics(rclpy_context):
    t = TwoTopics(rclpy_context)
    yield t
    t.close()


def stamp_ns(msg):
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def pose_tuple(msg):
    p, q = msg.pose.position, msg.pose.orientation
    return (msg.header.frame_id, p.x, p.y, p.z, q.x, q.y, q.z, q.w)


def matched(topics, window_s):
    """Both streams flowing: spin ``window_s`` more; return (full, decimated) over the full stream's span."""
    topics.spin_until(
        lambda: len(topics.messages[FULL]) > 0 and len(topics.messages[DECIMATED]) > 0, 30, "both topics"
    )
    topics.spin_for(window_s)
    full = list(topics.messages[FULL])
    first, last = stamp_ns(full[0]), stamp_ns(full[-1])
    decimated = [m for m in topics.messages[DECIMATED] if first <= stamp_ns(m) <= last]
    return full, decimated


def test_scripted_arm_decimated_topic_is_every_tenth_1khz_sample_unchanged(processes, topics):
    epoch = float(math.floor(time.time()))
    arm = start_arm(processes, f"scripted.epoch_s:={epoch}", "diagnostics_period_s:=0.2")
    full, decimated = matched(topics, 1.5)
    by_stamp = {stamp_ns(m): pose_tuple(m) for m in full}
    full_ticks = np.array([round((stamp_ns(m) * 1e-9 - epoch) * 1000) for m in full])
    assert len(full) > 800 and np.all(np.diff(full_ticks) == 1), "the full topic keeps every 1 kHz sample"
    ticks = np.array([round((stamp_ns(m) * 1e-9 - epoch) * 1000) for m in decimated])
    assert len(decimated) >= len(full) // 10 - 1
    assert np.all(ticks % 10 == 0), f"decimated stamps off the 10 ms grid: {ticks[ticks % 10 != 0][:5]}"
    assert np.all(np.diff(ticks) == 10), "every 10th sample, none missing"
    for msg in decimated:  # the very same sample: identical stamp, frame and numbers
        assert by_stamp[stamp_ns(msg)] == pose_tuple(msg)
    topics.spin_until(
        lambda: int(topics.diagnostics.get("echo_guidance: arm_state", {}).get("published_decimated", 0)) > 0,
        10,
        "the decimated count in diagnostics",
        [arm],
    )
    values = topics.diagnostics["echo_guidance: arm_state"]
    published, decimated_count = int(values["published"]), int(values["published_decimated"])
    # About a tenth (the stream may start and stop mid-period; an overloaded arm thread may skip samples).
    assert abs(10 * decimated_count - published) <= 0.02 * published + 20, (published, decimated_count)


def test_arm_control_decimated_topic_is_every_kth_published_pose(processes, topics):
    arm = processes.start(
        node_args(
            "arm_control",
            "backend:=kinematic",
            "kinematic.start_pose:=[500.0, 0.0, 200.0, 180.0, 0.0, 90.0]",
            "kinematic.rate_hz:=1000.0",  # a new state stamp for every publication
            "state_publish_rate_hz:=200.0",
            "decimated_pose_rate_hz:=50.0",
            files=("arm_control.yaml",),
        ),
        name="arm_control",
    )
    full, decimated = matched(topics, 1.5)
    assert len(full) > 100
    keys = [(stamp_ns(m), pose_tuple(m)) for m in full]
    positions, start = [], 0
    for msg in decimated:  # the decimated messages, found in order in the full stream
        start = keys.index((stamp_ns(msg), pose_tuple(msg)), start)
        positions.append(start)
    assert len(decimated) >= len(full) // 4 - 1
    assert np.all(np.diff(positions) == 4), "every 4th message of the full topic"
    assert arm.popen.poll() is None


@pytest.mark.parametrize(
    "module, files, params, message",
    [
        (
            "arm_state",
            ("arm_calibration.yaml", "arm_scripted.yaml"),
            ("decimated_pose_rate_hz:=300.0",),
            "decimated_pose_rate_hz = 300 Hz must be scripted.rate_hz (1000 Hz) divided by a whole number",
        ),
        (
            "arm_state",
            ("arm_calibration.yaml", "arm_scripted.yaml"),
            ("decimated_pose_rate_hz:=0.0",),
            "parameter 'decimated_pose_rate_hz'",
        ),
        (
            "arm_state",
            ("arm_calibration.yaml", "arm_scripted.yaml"),
            (f"decimated_pose_topic:={FULL}",),
            f"decimated_pose_topic '{FULL}' is pose_topic",
        ),
        (
            "arm_control",
            ("arm_control.yaml",),
            ("state_publish_rate_hz:=50.0", "kinematic.start_pose:=[500.0, 0.0, 200.0, 180.0, 0.0, 90.0]"),
            "decimated_pose_rate_hz = 100 Hz must be state_publish_rate_hz (50 Hz) divided by a whole number",
        ),
    ],
)
def test_bad_decimation_settings_refuse_to_start_with_the_reason(processes, module, files, params, message):
    node = processes.start(node_args(module, *params, files=files), name=module)
    assert node.wait(timeout=60) == 2, node.output()
    assert message in node.output()
