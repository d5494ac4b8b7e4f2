"""The arm-state node as a real rclpy process: 1 kHz probe poses, NaN/stale refusal, missing calibration."""

import math

import numpy as np
import pytest
from recording_helpers import Watcher, node_args, start_arm

from echo_guidance.arm.calibration import FlangeToProbeCalibration
from echo_guidance.arm.trajectory import SinusoidTrajectory

CALIBRATION = FlangeToProbeCalibration.from_config(
    {'translation_mm': [0.0, 0.0, 135.0], 'rpy_deg': [0.0, 0.0, 90.0]}
)


def pose_matrix(msg):
    from echo_guidance.geometry import pose_msg_to_matrix

    return pose_msg_to_matrix(msg.pose)


@pytest.fixture
def watcher(rclpy_context):
    w = Watcher(rclpy_context)
    yield w
    w.close()


def test_scripted_arm_publishes_calibrated_probe_poses_at_1khz(processes, watcher):
    import time

    epoch = float(math.floor(time.time()))
    arm = start_arm(processes, f'scripted.epoch_s:={epoch}')
    watcher.spin_until(lambda: len(watcher.poses) > 0, 30, 'first probe pose', [arm])
    first = len(watcher.poses)
    watcher.spin_for(1.0)
    received = watcher.poses[first:]
    # 1000 Hz nominal; a loaded 2-core machine may deliver in bursts but loses nothing.
    stamps = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in received])
    ticks = np.round((stamps - epoch) * 1000).astype(int)
    assert len(received) > 500
    assert np.all(np.diff(ticks) == 1), 'probe poses must be consecutive 1 ms grid samples'
    assert {m.header.frame_id for m in received} == {'base'}
    trajectory = SinusoidTrajectory(epoch_s=epoch)
    for msg, stamp in list(zip(received, stamps))[::97]:
        expected = trajectory.probe_pose(stamp, CALIBRATION)
        # The stamp round-trips through float seconds, so allow sub-micrometre slack.
        np.testing.assert_allclose(pose_matrix(msg), expected, atol=1e-4)
    watcher.spin_until(lambda: watcher.diagnostic_values('arm_state').get('published'), 5, 'arm diagnostics')
    assert watcher.diagnostics['echo_guidance: arm_state'].level == b'\x00'


def test_franka_ros2_backend_refuses_nan_and_stale_poses(processes, watcher):
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import qos_profile_sensor_data

    arm = processes.start(
        node_args(
            'arm_state',
            'backend:=franka_ros2',
            'diagnostics_period_s:=0.2',
            'timeout_s:=10.0',
            files=('arm_calibration.yaml',),
        ),
        name='arm_state',
    )
    franka = watcher.node.create_publisher(
        PoseStamped, '/franka_robot_state_broadcaster/current_pose', qos_profile_sensor_data
    )  # best-effort, like franka_ros2
    watcher.spin_until(
        lambda: franka.get_subscription_count() > 0 and watcher.node.count_publishers('/arm/probe_pose') > 0,
        30,
        'arm node discovery',
        [arm],
    )
    watcher.spin_for(0.3)

    def send(x_m, age_s=0.0, nan=False):
        msg = PoseStamped()
        now = watcher.node.get_clock().now().nanoseconds - int(age_s * 1e9)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        msg.header.frame_id = 'fr3_link0'
        msg.pose.position.x, msg.pose.position.z = (math.nan if nan else x_m), 0.4
        msg.pose.orientation.x, msg.pose.orientation.w = 1.0, 0.0  # flange pointing down
        franka.publish(msg)
        watcher.spin_for(0.05)

    send(0.50)
    send(0.51, nan=True)
    send(0.52, age_s=1.0)
    send(0.53)
    watcher.spin_until(lambda: len(watcher.poses) >= 2, 5, 'the two good poses', [arm])
    watcher.spin_for(0.5)
    assert [round(pose_matrix(m)[0, 3], 3) for m in watcher.poses] == [500.0, 530.0]
    flange = np.diag([1.0, -1.0, -1.0, 1.0])
    flange[:3, 3] = [500.0, 0.0, 400.0]
    np.testing.assert_allclose(pose_matrix(watcher.poses[0]), CALIBRATION.probe_pose(flange), atol=1e-6)
    watcher.spin_until(
        lambda: watcher.diagnostic_values('arm_state').get('rejected_stale') == '1',
        5,
        'diagnostics counting the refused poses',
        [arm],
    )
    values = watcher.diagnostic_values('arm_state')
    assert values['rejected_nan'] == '1' and values['accepted'] == '2'
    status = watcher.diagnostics['echo_guidance: arm_state']
    assert status.level == b'\x01' and 'refused' in status.message
    assert 'does not advance past the last published' in values['last_rejection']


def test_arm_node_without_calibration_exits_naming_the_file(processes):
    arm = processes.start(node_args('arm_state', 'backend:=scripted'), name='arm_state')
    assert arm.wait(timeout=30) == 2
    output = arm.output()
    assert 'translation_mm' in output and 'arm_calibration.yaml' in output
