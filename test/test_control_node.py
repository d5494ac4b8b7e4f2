"""The arm-control node as a real process over DDS, with the kinematic simulated arm.

The test process plays the other nodes: it publishes the deadman, frame info and guidance at 20 Hz
(and the e-stop when told), and watches ``/arm_control/state`` and the probe pose the node
publishes. Deadman release, e-stop, stale guidance, NaN guidance and the death of the guidance
node's process must each stop (or hold) the arm, and the probe must then stay where it is.
"""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from recording_helpers import node_args

START_POSE = [500.0, 0.0, 200.0, 180.0, 0.0, 90.0]
NODE_PARAMS = (
    'backend:=kinematic',
    f'kinematic.start_pose:={START_POSE}',
    # A busy 2-core machine delays DDS delivery by tens of ms at times: wider ages than on a robot.
    'limits.frame_max_age_s:=0.5',
    'limits.guidance_max_age_s:=0.5',
    'limits.deadman_timeout_s:=0.4',
    'limits.pose_max_age_s:=0.3',
    'limits.wrench_max_age_s:=0.3',
    'limits.liveness_timeout_s:=1.0',
    'planner.min_estimates:=1',
)


class Driver:
    """The test's rclpy side: plays pedal, capture and guidance; records the node's state and poses."""

    def __init__(self, context, publish_guidance=True):
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from std_msgs.msg import Bool, String, UInt64MultiArray

        from echo_guidance.msg import Deadman, Guidance

        self.node = rclpy.create_node('control_test', context=context)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.deadman_pub = self.node.create_publisher(Deadman, '/pedal/deadman', reliable)
        self.frame_pub = self.node.create_publisher(UInt64MultiArray, '/us/frame_info', reliable)
        self.guidance_pub = (
            self.node.create_publisher(Guidance, '/guidance', reliable) if publish_guidance else None
        )
        self.estop_pub = self.node.create_publisher(Bool, '/control/estop', reliable)
        self.types = (Deadman, Guidance, UInt64MultiArray, Bool)
        self.lock = threading.Lock()
        self.states, self.poses = [], []
        self.node.create_subscription(String, '/arm_control/state', self._on_state, reliable)
        self.node.create_subscription(PoseStamped, '/arm/probe_pose', self._on_pose, qos_profile_sensor_data)
        self.held = False
        self.guidance_mode = 'track'  # track | off | nan
        self.direction = 1.0
        self.node.create_timer(0.05, self._tick)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.running = True
        self.thread.start()

    def _spin(self):
        while self.running:
            self.executor.spin_once(timeout_sec=0.05)

    def close(self):
        self.running = False
        self.thread.join(2.0)
        self.node.destroy_node()

    def _on_state(self, msg):
        with self.lock:
            self.states.append(json.loads(msg.data))

    def _on_pose(self, msg):
        from echo_guidance.geometry import pose_msg_to_matrix

        with self.lock:
            self.poses.append((time.monotonic(), pose_msg_to_matrix(msg.pose)))

    def _tick(self):
        Deadman, Guidance, UInt64MultiArray, _ = self.types
        now = self.node.get_clock().now()
        stamp = now.to_msg()
        self.deadman_pub.publish(
            Deadman(header=self._header(stamp), held=self.held, reason='' if self.held else 'released')
        )
        self.frame_pub.publish(UInt64MultiArray(data=[now.nanoseconds, 0, 0, 0]))
        if self.guidance_pub is None or self.guidance_mode == 'off':
            return
        action = [8.0 * self.direction, 0.0, 0.0, 0.0, 0.0, 0.0]
        if self.guidance_mode == 'nan':
            action[0] = math.nan
        self.guidance_pub.publish(
            Guidance(
                header=self._header(stamp),
                target_plane='PLAX',
                valid=True,
                action=action,
                axis_confidence=[0.9] * 6,
                confidence=0.9,
            )
        )

    @staticmethod
    def _header(stamp):
        from std_msgs.msg import Header

        return Header(stamp=stamp, frame_id='probe')

    def estop(self, active):
        _, _, _, Bool = self.types
        self.estop_pub.publish(Bool(data=active))

    def latest_state(self):
        with self.lock:
            return self.states[-1] if self.states else None

    def pose_at_or_after(self, t):
        with self.lock:
            return next((pose for stamp, pose in self.poses if stamp >= t), None)

    def newest_pose(self):
        with self.lock:
            return self.poses[-1][1] if self.poses else None


def wait_state(driver, wait_until, state, reason=None, timeout=15.0, since=None):
    """Wait for a state message (received after index ``since``, default: any) with this state and reason."""

    def reached():
        with driver.lock:
            recent = driver.states[since or 0 :]
        return next(
            (s for s in recent if s['state'] == state and (reason is None or s['reason'] == reason)), None
        )

    try:
        return wait_until(reached, timeout, message=f'arm_control state {state} ({reason})')
    except TimeoutError:
        raise AssertionError(f'expected state {state} ({reason}), last: {driver.latest_state()}') from None


def mark(driver):
    """Index of the next state message (to wait for what comes after an event)."""
    with driver.lock:
        return len(driver.states)


def arm_and_move(driver, wait_until):
    """Release, press, and wait until the node moves the probe."""
    driver.held = False
    # 'deadman_released' (not 'inputs_starting'): every watched topic is up and the release counts.
    wait_until(
        lambda: (driver.latest_state() or {}).get('reason') == 'deadman_released',
        15,
        message='deadman seen released',
    )
    time.sleep(0.3)
    since = mark(driver)
    driver.held = True
    driver.direction = -driver.direction
    wait_state(driver, wait_until, 'moving', timeout=15, since=since)
    start = driver.newest_pose()
    wait_until(
        lambda: np.linalg.norm(driver.newest_pose()[:3, 3] - start[:3, 3]) > 0.5, 10, message='probe moving'
    )


def assert_probe_still(driver, since, seconds=0.6, tolerance_mm=0.05):
    """The probe does not move between ``since`` + 0.3 s and ``seconds`` later."""
    time.sleep(0.3 + seconds)
    first = driver.pose_at_or_after(since + 0.3)
    last = driver.newest_pose()
    moved = np.linalg.norm(last[:3, 3] - first[:3, 3])
    assert moved < tolerance_mm, f'the probe moved {moved:.3f} mm after the stop'


def assert_stopped_quickly(driver, event_time, since, wait_until, state, reason, limit_s=1.5):
    found = wait_state(driver, wait_until, state, reason, timeout=10, since=since)
    seen = time.monotonic()
    latency = seen - event_time
    assert latency < limit_s, f'{reason}: took {latency:.2f} s to {state} ({found})'
    return seen


@pytest.fixture
def arm_control(processes, wait_until, rclpy_context):
    node = processes.start(
        node_args('arm_control', *NODE_PARAMS, files=('arm_control.yaml',)), name='arm_control'
    )
    return node


def test_deadman_estop_stale_and_nan_guidance_stop_the_arm(arm_control, rclpy_context, wait_until):
    driver = Driver(rclpy_context)
    try:
        wait_until(lambda: driver.latest_state() and driver.newest_pose() is not None, 30, message='node up')
        start = driver.newest_pose()
        np.testing.assert_allclose(start[:3, 3], START_POSE[:3], atol=1e-6)

        arm_and_move(driver, wait_until)
        since, released = mark(driver), time.monotonic()
        driver.held = False  # deadman released
        seen = assert_stopped_quickly(driver, released, since, wait_until, 'stopped', 'deadman_released')
        assert_probe_still(driver, seen)
        since = mark(driver)
        driver.held = True  # released, then pressed again: a fresh press re-arms
        wait_state(driver, wait_until, 'moving', timeout=10, since=since)

        since, pressed = mark(driver), time.monotonic()
        driver.estop(True)
        seen = assert_stopped_quickly(driver, pressed, since, wait_until, 'stopped', 'estop')
        assert_probe_still(driver, seen)
        driver.estop(False)
        time.sleep(0.5)
        assert driver.latest_state()['state'] == 'stopped', (
            'a cleared e-stop must not re-arm without a release'
        )
        arm_and_move(driver, wait_until)

        since, nan_time = mark(driver), time.monotonic()
        driver.guidance_mode = 'nan'
        seen = assert_stopped_quickly(driver, nan_time, since, wait_until, 'armed', 'guidance_nan')
        assert_probe_still(driver, seen)
        since = mark(driver)
        driver.guidance_mode = 'track'
        wait_state(driver, wait_until, 'moving', timeout=10, since=since)

        since, silent = mark(driver), time.monotonic()
        driver.guidance_mode = 'off'  # the guidance stops coming: stale, then the node counts as dead
        seen = assert_stopped_quickly(
            driver, silent, since, wait_until, 'armed', 'guidance_stale', limit_s=2.0
        )
        assert_probe_still(driver, seen)
        wait_state(driver, wait_until, 'fault', 'node_dead', timeout=10, since=since)
        driver.guidance_mode = 'track'
        time.sleep(0.5)
        assert driver.latest_state()['state'] == 'fault', (
            'a fault must stay latched until the deadman is released'
        )
        arm_and_move(driver, wait_until)
    finally:
        driver.close()


GUIDANCE_PUBLISHER = textwrap.dedent(
    """
    import rclpy, time
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from echo_guidance.msg import Guidance
    rclpy.init()
    node = rclpy.create_node('fake_guidance')
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(Guidance, '/guidance', qos)
    print('publishing', flush=True)
    while True:
        msg = Guidance(target_plane='PLAX', valid=True, action=[8.0, 0, 0, 0, 0, 0], confidence=0.9)
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        time.sleep(0.05)
    """
)


def test_death_of_the_guidance_process_stops_the_arm(arm_control, rclpy_context, ros_env, wait_until):
    guidance = subprocess.Popen(
        [sys.executable, '-c', GUIDANCE_PUBLISHER],
        env=ros_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    driver = Driver(rclpy_context, publish_guidance=False)
    try:
        assert guidance.stdout.readline().strip() == 'publishing'
        wait_until(lambda: driver.latest_state() and driver.newest_pose() is not None, 30, message='node up')
        arm_and_move(driver, wait_until)
        since, killed = mark(driver), time.monotonic()
        os.kill(guidance.pid, signal.SIGKILL)  # no goodbye on the graph: only its silence tells
        seen = assert_stopped_quickly(
            driver, killed, since, wait_until, 'armed', 'guidance_stale', limit_s=2.0
        )
        assert_probe_still(driver, seen)
        found = wait_state(driver, wait_until, 'fault', 'node_dead', timeout=10, since=since)
        assert any('/guidance' in entry for entry in found['dead_nodes']), found
    finally:
        driver.close()
        if guidance.poll() is None:
            guidance.kill()
        guidance.wait(5)


def test_a_starting_graph_is_not_a_fault_until_the_grace_runs_out(processes, rclpy_context, wait_until):
    node = processes.start(
        node_args('arm_control', *NODE_PARAMS, 'startup_grace_s:=4.0', files=('arm_control.yaml',)),
        name='arm_control',
    )
    driver = Driver(rclpy_context, publish_guidance=False)  # pedal and frames, never guidance
    try:
        first = wait_state(driver, wait_until, 'idle', 'inputs_starting', timeout=30)
        assert '/guidance: ' in first['detail'], first
        driver.held = True  # pressed while the graph starts: nothing may arm or move
        found = wait_state(driver, wait_until, 'fault', 'node_dead', timeout=15)
        assert '/guidance: no publisher' in found['dead_nodes'], found
        with driver.lock:
            before = [s for s in driver.states if s['stamp'] < found['stamp']]
        assert before and all(s['state'] == 'idle' and s['reason'] == 'inputs_starting' for s in before), [
            (s['state'], s['reason']) for s in before
        ]
        assert found['stamp'] - before[0]['stamp'] <= 4.5
    finally:
        driver.close()
    assert node.popen.poll() is None, node.output()


def test_malformed_limits_refuse_to_start(processes):
    node = processes.start(
        node_args(
            'arm_control',
            'backend:=kinematic',
            f'kinematic.start_pose:={START_POSE}',
            'limits.max_contact_force_n:=500.0',
            files=('arm_control.yaml',),
        ),
        name='arm_control_bad',
    )
    assert node.wait(timeout=30) == 2
    assert 'limits.max_contact_force_n = 500 N is out of range' in node.output()
