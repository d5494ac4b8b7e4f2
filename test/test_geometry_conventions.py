"""echo_guidance.geometry against SciPy and against the conventions in ../shared/CONVENTIONS.md."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation, Slerp

from echo_guidance import geometry as g

N = 4000


def random_actions(rng, n=N, pitch=None):
    """Uniformly random actions; optionally with a fixed pitch."""
    a = np.column_stack([
        rng.uniform(-80, 80, (n, 3)),
        rng.uniform(-180, 180, n),
        rng.uniform(-90, 90, n) if pitch is None else np.full(n, pitch),
        rng.uniform(-180, 180, n),
    ])
    return a


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


def test_action_to_matrix_matches_scipy_xyz_extrinsic(rng):
    a = random_actions(rng)
    T = g.action_to_matrix(a)
    assert T.shape == (N, 4, 4)
    np.testing.assert_allclose(T[:, :3, :3], Rotation.from_euler('xyz', a[:, 3:], degrees=True).as_matrix(),
                               atol=1e-12)
    np.testing.assert_allclose(T[:, :3, 3], a[:, :3])
    np.testing.assert_array_equal(T[:, 3], np.tile([0, 0, 0, 1.0], (N, 1)))


def test_rotation_order_is_rz_ry_rx():
    roll, pitch, yaw = 10.0, 20.0, 30.0
    expected = (Rotation.from_euler('z', yaw, degrees=True) * Rotation.from_euler('y', pitch, degrees=True)
                * Rotation.from_euler('x', roll, degrees=True)).as_matrix()
    np.testing.assert_allclose(g.euler_to_rotation([roll, pitch, yaw]), expected, atol=1e-12)


def test_batched_over_leading_dimensions(rng):
    a = random_actions(rng, 24).reshape(2, 3, 4, 6)
    T = g.action_to_matrix(a)
    assert T.shape == (2, 3, 4, 4, 4)
    np.testing.assert_allclose(g.matrix_to_action(T), a, atol=1e-9)


def test_matrix_to_action_inverts_and_matches_scipy_angles(rng):
    a = random_actions(rng)
    back = g.matrix_to_action(g.action_to_matrix(a))
    np.testing.assert_allclose(back, a, atol=1e-9)
    scipy_angles = Rotation.from_matrix(g.action_to_matrix(a)[:, :3, :3]).as_euler('xyz', degrees=True)
    np.testing.assert_allclose(back[:, 3:], scipy_angles, atol=1e-9)


@pytest.mark.parametrize('pitch', [90.0, -90.0, 90 - 1e-9, 90 - 1e-6, 90 - 1e-3, 90 - 1e-2,
                                   -90 + 1e-7, -90 + 1e-2])
def test_near_gimbal_lock_the_matrix_is_reproduced(rng, pitch):
    a = random_actions(rng, 2000, pitch=pitch)
    T = g.action_to_matrix(a)
    back = g.matrix_to_action(T)
    np.testing.assert_allclose(g.action_to_matrix(back), T, atol=1e-9)
    assert np.all(np.abs(back[:, 4]) <= 90.0)
    np.testing.assert_allclose(back[:, 4], pitch, atol=1e-6)


def test_angle_ranges_and_boundaries():
    for yaw in (180.0, -180.0):
        back = g.matrix_to_action(g.action_to_matrix([0, 0, 0, 0, 0, yaw]))
        assert back[5] == pytest.approx(180.0)  # (-180, 180]: -180 is written as 180
    back = g.matrix_to_action(g.action_to_matrix([0, 0, 0, -180, 0, 0]))
    assert back[3] == pytest.approx(180.0)
    # pitch 120 is the same rotation as roll 180, pitch 60, yaw 180
    back = g.matrix_to_action(g.action_to_matrix([0, 0, 0, 0, 120, 0]))
    np.testing.assert_allclose(back[3:], [180, 60, 180], atol=1e-9)


def test_gimbal_lock_canonical_yaw_is_zero():
    back = g.matrix_to_action(g.action_to_matrix([1, 2, 3, 10, 90, 30]))
    np.testing.assert_allclose(back, [1, 2, 3, -20, 90, 0], atol=1e-9)


def test_relative_action_reaches_the_target(rng):
    T_now = g.action_to_matrix(random_actions(rng))
    T_target = g.action_to_matrix(random_actions(rng))
    a = g.relative_action(T_now, T_target)
    np.testing.assert_allclose(g.apply_action(T_now, a), T_target, atol=1e-9)
    np.testing.assert_allclose(g.action_to_matrix(a), np.linalg.inv(T_now) @ T_target, atol=1e-9)


def test_composition_eq6_on_random_poses(rng):
    T1, T2, T_star = (g.action_to_matrix(random_actions(rng)) for _ in range(3))
    a12 = g.relative_action(T1, T2)
    a2 = g.relative_action(T2, T_star)
    a1 = g.relative_action(T1, T_star)
    # U(a(t1→t2)) · U(a(t2)) = U(a(t1))
    np.testing.assert_allclose(g.action_to_matrix(a12) @ g.action_to_matrix(a2), g.action_to_matrix(a1),
                               atol=1e-9)
    composed = g.compose_actions(a12, a2)
    np.testing.assert_allclose(g.action_to_matrix(composed), g.action_to_matrix(a1), atol=1e-9)


def test_invert_transform(rng):
    T = g.action_to_matrix(random_actions(rng))
    np.testing.assert_allclose(g.invert_transform(T) @ T, np.broadcast_to(np.eye(4), T.shape), atol=1e-12)


def test_errors_between_poses():
    a = np.array([0, 0, 0, 0, 0, 0.0])
    b = np.array([3, 4, 0, 0, 0, 30.0])
    assert g.translation_error_mm(a, b) == pytest.approx(5.0)
    assert g.geodesic_rotation_error_deg(a, b) == pytest.approx(30.0)
    assert g.geodesic_rotation_error_deg(b, b) == pytest.approx(0.0, abs=1e-9)
    Ta, Tb = g.action_to_matrix(a), g.action_to_matrix([0, 0, 0, 25, 0, 0])
    assert g.geodesic_rotation_error_deg(Ta, Tb) == pytest.approx(25.0)
    c = [0, 0, 0, 0, 0, 179.5]
    assert g.geodesic_rotation_error_deg(a, c) == pytest.approx(179.5)


def test_geodesic_error_matches_scipy(rng):
    a, b = random_actions(rng), random_actions(rng)
    ra = Rotation.from_euler('xyz', a[:, 3:], degrees=True)
    rb = Rotation.from_euler('xyz', b[:, 3:], degrees=True)
    np.testing.assert_allclose(g.geodesic_rotation_error_deg(a, b), np.rad2deg((ra.inv() * rb).magnitude()),
                               atol=1e-7)


def test_torch_matches_numpy_and_keeps_dtype(rng):
    a = random_actions(rng, 500)
    t = torch.tensor(a, dtype=torch.float64)
    np.testing.assert_allclose(g.action_to_matrix(t).numpy(), g.action_to_matrix(a), atol=1e-12)
    np.testing.assert_allclose(g.matrix_to_action(g.action_to_matrix(t)).numpy(), a, atol=1e-9)
    T1, T2 = g.action_to_matrix(a[:250]), g.action_to_matrix(a[250:])
    np.testing.assert_allclose(g.relative_action(torch.tensor(T1), torch.tensor(T2)).numpy(),
                               g.relative_action(T1, T2), atol=1e-9)
    assert g.compose_actions(t.float()[:3], t.float()[3:6]).dtype == torch.float32


def test_torch_compose_is_differentiable(rng):
    a12 = torch.tensor(random_actions(rng, 8, pitch=None) * [1, 1, 1, 0.3, 0.3, 0.3], requires_grad=True)
    a2 = torch.tensor(random_actions(rng, 8) * [1, 1, 1, 0.3, 0.3, 0.3], requires_grad=True)
    assert torch.autograd.gradcheck(g.compose_actions, (a12, a2), eps=1e-6, atol=1e-5)


def test_torch_gradient_finite_at_gimbal_lock():
    a = torch.tensor([[1.0, 2, 3, 10, 90, 30], [0, 0, 0, 0, -90, 0]], dtype=torch.float64, requires_grad=True)
    out = g.matrix_to_action(g.action_to_matrix(a))
    out.sum().backward()
    assert torch.isfinite(a.grad).all()


def test_quaternion_roundtrip_matches_scipy(rng):
    R = Rotation.random(1000, random_state=1)
    q = g.rotation_to_quaternion(R.as_matrix())
    assert np.all(q[:, 3] >= 0)
    np.testing.assert_allclose(g.quaternion_to_rotation(q), R.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(g.quaternion_to_rotation(R.as_quat()), R.as_matrix(), atol=1e-12)


def test_interpolation_matches_scipy_slerp(rng):
    T0 = g.action_to_matrix(random_actions(rng, 200))
    T1 = g.action_to_matrix(random_actions(rng, 200))
    alpha = rng.uniform(0, 1, 200)
    out = g.interpolate_pose(10 + alpha * 0.004, 10.0, T0, 10.004, T1)
    for i in range(0, 200, 17):
        slerp = Slerp([0, 1], Rotation.from_matrix([T0[i, :3, :3], T1[i, :3, :3]]))
        np.testing.assert_allclose(out[i, :3, :3], slerp([alpha[i]]).as_matrix()[0], atol=1e-9)
        np.testing.assert_allclose(out[i, :3, 3], (1 - alpha[i]) * T0[i, :3, 3] + alpha[i] * T1[i, :3, 3])
    np.testing.assert_allclose(g.interpolate_pose(10.0, 10.0, T0, 10.004, T1), T0, atol=1e-12)
    np.testing.assert_allclose(g.interpolate_pose(10.004, 10.0, T0, 10.004, T1), T1, atol=1e-9)


def test_interpolation_takes_the_shortest_arc():
    T0 = g.action_to_matrix([0, 0, 0, 0, 0, 170])
    T1 = g.action_to_matrix([0, 0, 0, 0, 0, -170])
    mid = g.matrix_to_action(g.interpolate_pose(0.5, 0, T0, 1, T1))
    assert abs(mid[5]) == pytest.approx(180.0)


def test_ros_pose_roundtrip_in_metres():
    T = g.action_to_matrix([120.0, -35.5, 410.25, 12, -33, 150])
    msg = g.matrix_to_pose_msg(T)
    assert msg.position.x == pytest.approx(0.12)
    assert msg.position.z == pytest.approx(0.41025)
    q = [msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w]
    assert np.linalg.norm(q) == pytest.approx(1.0)
    np.testing.assert_allclose(g.pose_msg_to_matrix(msg), T, atol=1e-9)
    stamped = g.matrix_to_pose_stamped(T, 1_700_000_000_123_456_789, 'base')
    assert stamped.header.frame_id == 'base'
    assert g.time_msg_to_ns(stamped.header.stamp) == 1_700_000_000_123_456_789
    np.testing.assert_allclose(g.pose_stamped_to_matrix(stamped), T, atol=1e-9)


@pytest.mark.parametrize('bad, func, message', [
    (np.full(6, np.nan), g.action_to_matrix, 'NaN'),
    (np.zeros(5), g.action_to_matrix, 'shape'),
    (np.zeros((3, 7)), g.action_to_matrix, 'shape'),
    (np.eye(3), g.matrix_to_action, 'shape'),
    (np.diag([1, 1, 2, 1.0]), g.matrix_to_action, 'orthonormal'),
    (np.diag([1, 1, -1, 1.0]), g.matrix_to_action, 'determinant'),
    (np.vstack([np.eye(4)[:3], [0, 0.5, 0, 1.0]]), g.matrix_to_action, 'bottom row'),
    (np.where(np.eye(4) > 0, np.inf, 0.0), g.invert_transform, 'NaN or infinite'),
    ('not numbers', g.action_to_matrix, 'numeric'),
])
def test_bad_input_raises_clear_error(bad, func, message):
    with pytest.raises(g.GeometryError, match=message):
        func(bad)


def test_bad_quaternion_and_time():
    with pytest.raises(g.GeometryError, match='uninitialised Pose'):
        g.quaternion_to_rotation([0, 0, 0, 0])
    from geometry_msgs.msg import Pose
    pose = Pose()
    pose.orientation.w = 0.0  # an all-zero quaternion, as a Pose filled in by hand often has
    with pytest.raises(g.GeometryError, match='unit length'):
        g.pose_msg_to_matrix(pose)
    np.testing.assert_allclose(g.pose_msg_to_matrix(Pose()), np.eye(4))  # ROS 2's default is identity
    with pytest.raises(g.GeometryError, match='negative'):
        g.ns_to_time_msg(-1)
    with pytest.raises(g.GeometryError, match='shape'):
        g.action_to_matrix(torch.zeros(4, 5))


def test_geometry_import_does_not_import_torch():
    import subprocess
    import sys
    code = 'import sys, echo_guidance.geometry, echo_guidance.sync; print("torch" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'
