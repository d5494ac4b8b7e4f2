"""echo_guidance.geometry (NumPy) against SciPy and against the conventions in docs/conventions.md."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from echo_guidance import geometry as g

N = 4000


def random_actions(rng, n=N, pitch=None):
    """Uniformly random actions; optionally with a fixed pitch."""
    return np.column_stack([
        rng.uniform(-80, 80, (n, 3)),
        rng.uniform(-180, 180, n),
        rng.uniform(-90, 90, n) if pitch is None else np.full(n, pitch),
        rng.uniform(-180, 180, n),
    ])


def random_poses(rng, n=N):
    """Rigid transforms (mm) with rotations uniform over SO(3) (not drawn through Euler angles)."""
    T = np.zeros((n, 4, 4))
    T[:, :3, :3] = Rotation.random(n, random_state=rng).as_matrix()
    T[:, :3, 3] = rng.uniform(-500, 500, (n, 3))
    T[:, 3, 3] = 1.0
    return T


def scipy_matrix(a):
    """U(a) built with SciPy, the reference the conventions name."""
    a = np.atleast_2d(a)
    T = np.zeros(a.shape[:-1] + (4, 4))
    T[..., :3, :3] = Rotation.from_euler('xyz', a[..., 3:], degrees=True).as_matrix()
    T[..., :3, 3] = a[..., :3]
    T[..., 3, 3] = 1.0
    return T


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


# ---------------------------------------------------------------------------------------------
# U(a) and U⁻¹(T)


def test_action_to_matrix_matches_scipy_xyz_extrinsic(rng):
    a = random_actions(rng)
    T = g.action_to_matrix(a)
    assert T.shape == (N, 4, 4) and T.dtype == np.float64
    np.testing.assert_allclose(T, scipy_matrix(a), atol=1e-12)
    np.testing.assert_array_equal(T[:, 3], np.tile([0, 0, 0, 1.0], (N, 1)))


def test_rotation_order_is_rz_ry_rx():
    roll, pitch, yaw = 10.0, 20.0, 30.0
    expected = (Rotation.from_euler('z', yaw, degrees=True) * Rotation.from_euler('y', pitch, degrees=True)
                * Rotation.from_euler('x', roll, degrees=True)).as_matrix()
    np.testing.assert_allclose(g.euler_to_rotation([roll, pitch, yaw]), expected, atol=1e-12)
    np.testing.assert_allclose(g.rotation_to_euler(expected), [roll, pitch, yaw], atol=1e-12)


def test_batched_over_leading_dimensions(rng):
    a = random_actions(rng, 24).reshape(2, 3, 4, 6)
    T = g.action_to_matrix(a)
    assert T.shape == (2, 3, 4, 4, 4)
    np.testing.assert_allclose(g.matrix_to_action(T), a, atol=1e-9)
    assert g.relative_action(T, T[0, 0, 0]).shape == (2, 3, 4, 6)  # broadcasting against one pose
    assert g.action_to_matrix(np.zeros((0, 6))).shape == (0, 4, 4)
    assert g.matrix_to_action(np.zeros((0, 4, 4))).shape == (0, 6)


def test_matrix_to_action_inverts_and_matches_scipy_angles(rng):
    a = random_actions(rng)
    back = g.matrix_to_action(g.action_to_matrix(a))
    np.testing.assert_allclose(back, a, atol=1e-9)
    scipy_angles = Rotation.from_matrix(scipy_matrix(a)[:, :3, :3]).as_euler('xyz', degrees=True)
    np.testing.assert_allclose(back[:, 3:], scipy_angles, atol=1e-9)


def test_round_trip_of_uniform_random_rotations(rng):
    T = random_poses(rng)
    a = g.matrix_to_action(T)
    assert np.all((a[:, 3:] > -180) & (a[:, 3:] <= 180)) and np.all(np.abs(a[:, 4]) <= 90)
    np.testing.assert_allclose(g.action_to_matrix(a), T, atol=1e-12)
    np.testing.assert_allclose(scipy_matrix(a), T, atol=1e-12)


@pytest.mark.parametrize('pitch', [90.0, -90.0, 90 - 1e-9, 90 - 1e-6, 90 - 1e-4, 90 - 1e-3, 90 - 1e-2,
                                   -90 + 1e-7, -90 + 1e-6, -90 + 1e-2])
def test_near_gimbal_lock_the_matrix_is_reproduced(rng, pitch):
    a = random_actions(rng, 2000, pitch=pitch)
    T = scipy_matrix(a)
    back = g.matrix_to_action(T)
    # Euler angles are not unique (or ill-conditioned) here: compare matrices, and the pitch.
    np.testing.assert_allclose(g.action_to_matrix(back), T, atol=1e-12)
    np.testing.assert_allclose(scipy_matrix(back), T, atol=1e-12)
    assert np.all(np.abs(back[:, 4]) <= 90.0)
    np.testing.assert_allclose(back[:, 4], pitch, atol=1e-6)
    assert np.all((back[:, 3:] > -180) & (back[:, 3:] <= 180))


def test_near_gimbal_lock_on_composed_matrices(rng):
    # Products of transforms carry ~1e-16 absolute rounding in every entry, which is all there is
    # of cos(pitch) at the lock: the angles may move, the matrix must not.
    a = random_actions(rng, 2000, pitch=90.0)
    T = g.action_to_matrix(a)
    step = g.action_to_matrix(np.column_stack([np.zeros((2000, 3)), np.zeros(2000), np.zeros(2000),
                                               rng.uniform(-1e-8, 1e-8, 2000)]))
    T2 = step @ T
    np.testing.assert_allclose(g.action_to_matrix(g.matrix_to_action(T2)), T2, atol=1e-12)


def test_angle_ranges_and_boundaries():
    for yaw in (180.0, -180.0):
        back = g.matrix_to_action(g.action_to_matrix([0, 0, 0, 0, 0, yaw]))
        assert back[5] == 180.0  # (-180, 180]: -180 is written as 180
    for roll in (180.0, -180.0):
        assert g.matrix_to_action(g.action_to_matrix([0, 0, 0, roll, 0, 0]))[3] == 180.0
    # pitch 120 is the same rotation as roll 180, pitch 60, yaw 180
    back = g.matrix_to_action(g.action_to_matrix([0, 0, 0, 0, 120, 0]))
    np.testing.assert_allclose(back[3:], [180, 60, 180], atol=1e-9)
    # angles outside (-180, 180] are accepted and wrapped
    np.testing.assert_allclose(g.matrix_to_action(g.action_to_matrix([0, 0, 0, 370, -10, -190])),
                               [0, 0, 0, 10, -10, 170], atol=1e-9)
    for corner in ([180, 90, 180], [-180, -90, -180], [180, 0, -180], [0, 90, 180], [-180, -90, 0]):
        T = g.action_to_matrix([0, 0, 0] + corner)
        back = g.matrix_to_action(T)
        assert np.all((back[3:] > -180) & (back[3:] <= 180)) and abs(back[4]) <= 90
        np.testing.assert_allclose(g.action_to_matrix(back), T, atol=1e-12)


def test_gimbal_lock_canonical_yaw_is_zero():
    # docs/conventions.md: pitch +90 keeps yaw - roll = 20, written as roll -20, yaw 0.
    back = g.matrix_to_action(g.action_to_matrix([1, 2, 3, 10, 90, 30]))
    np.testing.assert_allclose(back, [1, 2, 3, -20, 90, 0], atol=1e-9)
    # pitch -90 keeps yaw + roll = 40
    back = g.matrix_to_action(g.action_to_matrix([0, 0, 0, 10, -90, 30]))
    np.testing.assert_allclose(back, [0, 0, 0, 40, -90, 0], atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Relative actions and composition


def test_relative_action_reaches_the_target(rng):
    T_now, T_target = random_poses(rng), random_poses(rng)
    a = g.relative_action(T_now, T_target)
    np.testing.assert_allclose(g.apply_action(T_now, a), T_target, atol=1e-9)
    np.testing.assert_allclose(g.action_to_matrix(a), np.linalg.inv(T_now) @ T_target, atol=1e-9)


def test_composition_eq6_on_random_poses(rng):
    T1, T2, T_star = random_poses(rng), random_poses(rng), random_poses(rng)
    a12 = g.relative_action(T1, T2)
    a2 = g.relative_action(T2, T_star)
    a1 = g.relative_action(T1, T_star)
    # U(a(t1→t2)) · U(a(t2)) = U(a(t1))
    np.testing.assert_allclose(g.action_to_matrix(a12) @ g.action_to_matrix(a2), g.action_to_matrix(a1),
                               atol=1e-9)
    composed = g.compose_actions(a12, a2)
    np.testing.assert_allclose(g.action_to_matrix(composed), g.action_to_matrix(a1), atol=1e-9)
    # away from gimbal lock the angles themselves agree too
    ok = np.abs(a1[:, 4]) < 89
    np.testing.assert_allclose(composed[ok], a1[ok], atol=1e-7)


def test_documented_examples():
    # The worked example in docs/conventions.md ("Examples with numbers").
    T_probe = g.action_to_matrix([100, 0, 300, 0, 0, 90])
    T_target = g.action_to_matrix([100, 20, 300, 0, 0, 120])
    np.testing.assert_allclose(g.relative_action(T_probe, T_target), [20, 0, 0, 0, 0, 30], atol=1e-9)
    np.testing.assert_allclose(g.compose_actions([0, 0, 10, 0, 0, 0], [20, 0, 0, 0, 0, 30]),
                               [20, 0, 10, 0, 0, 30], atol=1e-9)
    np.testing.assert_allclose(g.compose_actions([0, 0, 0, 0, 0, 90], [10, 0, 0, 0, 0, 0]),
                               [0, 10, 0, 0, 0, 90], atol=1e-9)
    np.testing.assert_allclose(g.action_to_matrix([0, 0, 0, 0, 0, 90])[:3, :3],
                               [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)


def test_invert_transform(rng):
    T = random_poses(rng)
    np.testing.assert_allclose(g.invert_transform(T) @ T, np.broadcast_to(np.eye(4), T.shape), atol=1e-12)
    np.testing.assert_allclose(g.invert_transform(T), np.linalg.inv(T), atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Errors


def test_errors_between_poses():
    a = np.array([0, 0, 0, 0, 0, 0.0])
    b = np.array([3, 4, 0, 0, 0, 30.0])
    assert g.translation_error_mm(a, b) == pytest.approx(5.0)
    assert g.geodesic_rotation_error_deg(a, b) == pytest.approx(30.0)
    assert g.geodesic_rotation_error_deg(b, b) == pytest.approx(0.0, abs=1e-12)
    Ta, Tb = g.action_to_matrix(a), g.action_to_matrix([0, 0, 0, 25, 0, 0])
    assert g.geodesic_rotation_error_deg(Ta, Tb) == pytest.approx(25.0)
    assert g.geodesic_rotation_error_deg(a, Tb) == pytest.approx(25.0)  # an action against a transform
    assert g.geodesic_rotation_error_deg(a, [0, 0, 0, 0, 0, 179.5]) == pytest.approx(179.5)
    assert g.geodesic_rotation_error_deg(a, [0, 0, 0, 180, 0, 0]) == pytest.approx(180.0)
    assert g.geodesic_rotation_error_deg(a, [0, 0, 0, 0, 0, 1e-7]) == pytest.approx(1e-7, rel=1e-6)


def test_geodesic_error_matches_scipy(rng):
    a, b = random_actions(rng), random_actions(rng)
    ra = Rotation.from_euler('xyz', a[:, 3:], degrees=True)
    rb = Rotation.from_euler('xyz', b[:, 3:], degrees=True)
    np.testing.assert_allclose(g.geodesic_rotation_error_deg(a, b), np.rad2deg((ra.inv() * rb).magnitude()),
                               atol=1e-7)
    np.testing.assert_allclose(g.translation_error_mm(a, b), np.linalg.norm(a[:, :3] - b[:, :3], axis=1))


# ---------------------------------------------------------------------------------------------
# Quaternions and interpolation


def test_quaternion_roundtrip_matches_scipy(rng):
    half_turns = Rotation.from_rotvec(np.pi * np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1],
                                                        [0.6, 0.8, 0], [0, 0.6, 0.8]]))
    R = np.concatenate([Rotation.random(N, random_state=1).as_matrix(), half_turns.as_matrix(),
                        np.eye(3)[None]])
    q = g.rotation_to_quaternion(R)
    assert np.all(q[:, 3] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-15)
    reference = Rotation.from_matrix(R).as_quat()
    np.testing.assert_allclose(np.abs(np.sum(q * reference, axis=1)), 1.0, atol=1e-12)  # same up to sign
    np.testing.assert_allclose(g.quaternion_to_rotation(q), R, atol=1e-12)
    np.testing.assert_allclose(g.quaternion_to_rotation(reference), R, atol=1e-12)


def test_small_quaternion_deviations_are_normalised_large_ones_rejected():
    q = np.array([0.0, 0.0, np.sin(0.25), np.cos(0.25)])
    np.testing.assert_allclose(g.quaternion_to_rotation(q * (1 + 5e-4)), g.quaternion_to_rotation(q),
                               atol=1e-15)
    with pytest.raises(g.GeometryError, match='not unit length'):
        g.quaternion_to_rotation(q * 1.01)
    with pytest.raises(g.GeometryError, match=r'first at index \(1,\)'):
        g.quaternion_to_rotation([q, 0.5 * q])


def test_interpolation_matches_scipy_slerp(rng):
    n = 2000
    T0, T1 = random_poses(rng, n), random_poses(rng, n)
    alpha = rng.uniform(0, 1, n)
    out = g.interpolate_pose(10 + alpha * 0.004, 10.0, T0, 10.004, T1)
    r0, r1 = Rotation.from_matrix(T0[:, :3, :3]), Rotation.from_matrix(T1[:, :3, :3])
    reference = r0 * Rotation.from_rotvec((r0.inv() * r1).as_rotvec() * alpha[:, None])
    np.testing.assert_allclose(out[:, :3, :3], reference.as_matrix(), atol=1e-9)
    linear = (1 - alpha[:, None]) * T0[:, :3, 3] + alpha[:, None] * T1[:, :3, 3]
    np.testing.assert_allclose(out[:, :3, 3], linear, atol=1e-9)
    for i in range(0, n, 97):  # and SciPy's own Slerp class on a sample
        slerp = Slerp([0, 1], Rotation.from_matrix([T0[i, :3, :3], T1[i, :3, :3]]))
        np.testing.assert_allclose(out[i, :3, :3], slerp([alpha[i]]).as_matrix()[0], atol=1e-9)
    np.testing.assert_allclose(g.interpolate_pose(10.0, 10.0, T0, 10.004, T1), T0, atol=1e-12)
    np.testing.assert_allclose(g.interpolate_pose(10.004, 10.0, T0, 10.004, T1), T1, atol=1e-9)


def test_interpolation_of_nearly_equal_rotations_is_exact():
    T0 = g.action_to_matrix([0, 0, 0, 10, 20, 30])
    T1 = g.action_to_matrix([2, 0, 0, 10, 20, 30 + 1e-9])
    mid = g.matrix_to_action(g.interpolate_pose(0.25, 0, T0, 1, T1))
    np.testing.assert_allclose(mid, [0.5, 0, 0, 10, 20, 30 + 0.25e-9], atol=1e-12)
    np.testing.assert_allclose(g.interpolate_pose(0.5, 0, T0, 1, T0), T0, atol=1e-15)


def test_interpolation_takes_the_shortest_arc():
    T0 = g.action_to_matrix([0, 0, 0, 0, 0, 170])
    T1 = g.action_to_matrix([0, 0, 0, 0, 0, -170])
    mid = g.matrix_to_action(g.interpolate_pose(0.5, 0, T0, 1, T1))
    assert mid[5] == pytest.approx(180.0)  # through 180, not through 0
    quarter = g.matrix_to_action(g.interpolate_pose(0.25, 0, T0, 1, T1))
    assert quarter[5] == pytest.approx(175.0)


def test_interpolation_rejects_bad_times():
    T = np.eye(4)
    with pytest.raises(g.GeometryError, match='t1 > t0'):
        g.interpolate_pose(0.5, 1.0, T, 1.0, T)
    with pytest.raises(g.GeometryError, match="t contains 1 NaN"):
        g.interpolate_pose(np.nan, 0.0, T, 1.0, T)
    with pytest.raises(g.GeometryError, match='T1'):
        g.interpolate_pose(0.5, 0.0, T, 1.0, np.diag([1, 1, 1, 2.0]))


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize('bad, func, message', [
    (np.full(6, np.nan), g.action_to_matrix, 'action contains 6 NaN'),
    (np.zeros(5), g.action_to_matrix, r'shape \(\.\.\., 6\), got \(5,\)'),
    (np.zeros((3, 7)), g.action_to_matrix, r'got \(3, 7\)'),
    (np.eye(3), g.matrix_to_action, r'shape \(\.\.\., 4, 4\), got \(3, 3\)'),
    (np.diag([1, 1, 2, 1.0]), g.matrix_to_action, 'not orthonormal'),
    (np.diag([1, 1, -1, 1.0]), g.matrix_to_action, 'determinant -1'),
    (np.vstack([np.eye(4)[:3], [0, 0.5, 0, 1.0]]), g.matrix_to_action, 'bottom row'),
    (np.where(np.eye(4) > 0, np.inf, 0.0), g.invert_transform, 'NaN or infinite'),
    ('not numbers', g.action_to_matrix, 'numeric'),
    (np.zeros((2, 5)), lambda x: g.translation_error_mm(x, x), r'action \(\.\.\., 6\) or a transform'),
    (np.diag([1, 1, 2.0]), g.rotation_to_quaternion, 'not orthonormal'),
])
def test_bad_input_raises_clear_error(bad, func, message):
    with pytest.raises(g.GeometryError, match=message):
        func(bad)


def test_errors_name_the_first_bad_item_in_a_batch(rng):
    T = g.action_to_matrix(random_actions(rng, 6)).reshape(2, 3, 4, 4)
    T[1, 2, 0, 0] = np.nan
    with pytest.raises(g.GeometryError, match=r'1 NaN or infinite value\(s\) \(first at index \(1, 2\)\)'):
        g.matrix_to_action(T)
    T[1, 2] = np.diag([1.0, 1.0, 1.001, 1.0])
    with pytest.raises(g.GeometryError, match=r'first at index \(1, 2\)'):
        g.relative_action(T, T)


def test_rotation_tolerance():
    R = Rotation.from_euler('xyz', [10, 20, 30], degrees=True).as_matrix()
    T = np.eye(4)
    T[:3, :3] = R * (1 + 1e-7)  # float32 storage or a rounded bag value: accepted
    g.matrix_to_action(T)
    T[:3, :3] = R * (1 + 1e-4)
    with pytest.raises(g.GeometryError, match=r'tolerance 1e-05'):
        g.matrix_to_action(T)
    float32_pose = g.action_to_matrix([1, 2, 3, 40, 50, 60]).astype(np.float32)
    np.testing.assert_allclose(g.matrix_to_action(float32_pose), [1, 2, 3, 40, 50, 60], atol=1e-4)


def test_geometry_import_does_not_import_torch():
    code = 'import sys, echo_guidance.geometry, echo_guidance.sync; print("torch" in sys.modules)'
    repo = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == 'False'
