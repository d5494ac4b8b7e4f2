"""ROS message conversions of echo_guidance.geometry: metres <-> millimetres, quaternions, time."""

import types

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseStamped

from echo_guidance import geometry as g


def test_ros_pose_roundtrip_in_metres():
    # docs/conventions.md example: 120 mm -> 0.12 m.
    T = g.action_to_matrix([120.0, -35.5, 410.25, 12, -33, 150])
    msg = g.matrix_to_pose_msg(T)
    assert isinstance(msg, Pose)
    position = (msg.position.x, msg.position.y, msg.position.z)
    assert position == pytest.approx((0.12, -0.0355, 0.41025), abs=1e-15)
    q = [msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w]
    assert np.linalg.norm(q) == pytest.approx(1.0) and msg.orientation.w >= 0
    np.testing.assert_allclose(g.pose_msg_to_matrix(msg), T, atol=1e-12)


def test_documented_quaternion_example():
    # yaw 90°: q = (0, 0, sin 45°, cos 45°)
    msg = g.matrix_to_pose_msg(g.action_to_matrix([0, 0, 0, 0, 0, 90]))
    q = [msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w]
    np.testing.assert_allclose(q, [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-15)


def test_random_poses_roundtrip():
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(5)
    for R in Rotation.random(200, random_state=rng).as_matrix():
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = rng.uniform(-900, 900, 3)
        np.testing.assert_allclose(g.pose_msg_to_matrix(g.matrix_to_pose_msg(T)), T, atol=1e-12)


def test_pose_stamped_and_time():
    T = g.action_to_matrix([1, 2, 3, 4, 5, 6])
    stamped = g.matrix_to_pose_stamped(T, 1_700_000_000_123_456_789, 'base')
    assert isinstance(stamped, PoseStamped) and stamped.header.frame_id == 'base'
    assert g.time_msg_to_ns(stamped.header.stamp) == 1_700_000_000_123_456_789
    np.testing.assert_allclose(g.pose_stamped_to_matrix(stamped), T, atol=1e-12)
    from_seconds = g.matrix_to_pose_stamped(T, 12.5, 'base')
    assert (from_seconds.header.stamp.sec, from_seconds.header.stamp.nanosec) == (12, 500_000_000)
    given = Time(sec=3, nanosec=7)
    assert g.matrix_to_pose_stamped(T, given, 'base').header.stamp == given
    assert g.time_msg_to_seconds(Time(sec=3, nanosec=250_000_000)) == 3.25
    assert g.seconds_to_ns(1.0000000004) == 1_000_000_000 and g.seconds_to_ns(2.9999999996) == 3_000_000_000
    assert g.seconds_to_time_msg(0.000000001) == Time(sec=0, nanosec=1)
    assert g.ns_to_time_msg(5_000_000_001) == Time(sec=5, nanosec=1)


def test_duck_typed_messages_work():
    # rosbags deserialises into its own classes with the same fields.
    pose = types.SimpleNamespace(position=types.SimpleNamespace(x=0.001, y=0.0, z=-0.5),
                                 orientation=types.SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0))
    np.testing.assert_allclose(g.pose_msg_to_matrix(pose)[:3, 3], [1, 0, -500])


def test_bad_messages_and_times():
    with pytest.raises(g.GeometryError, match='uninitialised Pose'):
        g.quaternion_to_rotation([0, 0, 0, 0])
    pose = Pose()
    pose.orientation.w = 0.0  # an all-zero quaternion, as a Pose filled in by hand often has
    with pytest.raises(g.GeometryError, match='unit length'):
        g.pose_msg_to_matrix(pose)
    np.testing.assert_allclose(g.pose_msg_to_matrix(Pose()), np.eye(4))  # ROS 2's default is identity
    pose = Pose()
    pose.position.x = float('nan')
    with pytest.raises(g.GeometryError, match='pose position contains 1 NaN'):
        g.pose_msg_to_matrix(pose)
    with pytest.raises(g.GeometryError, match='use pose_stamped_to_matrix'):
        g.pose_msg_to_matrix(PoseStamped())
    with pytest.raises(g.GeometryError, match='PoseStamped'):
        g.pose_stamped_to_matrix(Pose())
    with pytest.raises(g.GeometryError, match='one 4x4 transform'):
        g.matrix_to_pose_msg(np.stack([np.eye(4)] * 2))
    with pytest.raises(g.GeometryError, match='negative'):
        g.ns_to_time_msg(-1)
    with pytest.raises(g.GeometryError, match='negative'):
        g.seconds_to_time_msg(-0.5)
    with pytest.raises(g.GeometryError, match='finite'):
        g.seconds_to_time_msg(float('inf'))
    with pytest.raises(g.GeometryError, match='bool'):
        g.matrix_to_pose_stamped(np.eye(4), True, 'base')
