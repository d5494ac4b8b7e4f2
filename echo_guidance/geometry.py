"""The 6-D action and pose conventions of echo_guidance, in one place (see docs/conventions.md).

An action a = (x, y, z, roll, pitch, yaw) has its translation in millimetres and its rotation in
degrees. U(a) is the 4x4 homogeneous transform with translation (x, y, z) and rotation
R = Rz(yaw) · Ry(pitch) · Rx(roll) (SciPy's ``Rotation.from_euler("xyz", ..., degrees=True)``,
the same as ROS/tf2 RPY). Every 4x4 transform inside echo_guidance is in millimetres; ROS
messages are in metres, and only the ``*_msg`` conversion functions here convert.

All functions are batched over leading dimensions. The action/matrix functions accept NumPy
arrays or torch tensors and return the same kind (torch is imported only when a tensor is
passed), and the torch versions are differentiable so that the world-model loss can
backpropagate through a composed action.

Validation: NumPy inputs are fully checked (shapes, finiteness, rigid rotation blocks) and raise
GeometryError naming the problem. Torch inputs are checked for shape only: checking values would
force a device-to-host copy on every training step; the training data is validated when the
dataset is built instead.
"""

import numpy as np

ROTATION_TOLERANCE = 1e-5
"""Largest allowed deviation of R^T R from I (max abs entry) and of det R from 1."""

QUATERNION_NORM_TOLERANCE = 1e-3
"""Quaternions whose norm is within this of 1 are normalised; others are rejected."""

# Below this value of cos(pitch) the yaw angle is undetermined (gimbal lock): it is set to 0 and the
# whole rotation about the vertical axis is expressed as roll, so the matrix is still reproduced.
_GIMBAL_EPS = 1e-12


class GeometryError(ValueError):
    """A pose, action or transform that violates the conventions (shape, NaN, non-rigid rotation)."""


def _is_torch(x):
    return type(x).__module__.startswith('torch')


def _check_shape(x, tail, what):
    shape = tuple(x.shape)
    if len(shape) < len(tail) or shape[len(shape) - len(tail):] != tail:
        expected = '(..., ' + ', '.join(str(d) for d in tail) + ')'
        raise GeometryError(f'{what} must have shape {expected}, got {shape}')


def _as_checked_array(x, tail, what):
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f'{what} must be numeric, got {type(x).__name__}: {exc}') from None
    _check_shape(arr, tail, what)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise GeometryError(f'{what} contains {bad} NaN or infinite value(s)')
    return arr


def check_transform(T, what='transform'):
    """Return ``T`` as a float64 array (..., 4, 4) after checking it is a rigid transform.

    Raises GeometryError for a wrong shape, NaN/inf, a bottom row other than [0, 0, 0, 1], or a
    rotation block that is not orthonormal with determinant +1 (within ROTATION_TOLERANCE).
    """
    T = _as_checked_array(T, (4, 4), what)
    bottom = T[..., 3, :]
    if np.any(np.abs(bottom - np.array([0.0, 0.0, 0.0, 1.0])) > 1e-9):
        raise GeometryError(f'{what} must have bottom row [0, 0, 0, 1], got {bottom.reshape(-1, 4)[0]}')
    check_rotation(T[..., :3, :3], what=f'rotation block of {what}')
    return T


def check_rotation(R, what='rotation'):
    """Return ``R`` as a float64 array (..., 3, 3) after checking it is a proper rotation."""
    R = _as_checked_array(R, (3, 3), what)
    gram = np.einsum('...ji,...jk->...ik', R, R)
    ortho_err = np.max(np.abs(gram - np.eye(3)), axis=(-2, -1)) if R.size else np.zeros(0)
    if np.any(ortho_err > ROTATION_TOLERANCE):
        raise GeometryError(
            f'{what} is not orthonormal: max |R^T R - I| = {float(np.max(ortho_err)):.3g} '
            f'(tolerance {ROTATION_TOLERANCE:g})')
    det = np.linalg.det(R)
    if np.any(np.abs(det - 1.0) > ROTATION_TOLERANCE):
        raise GeometryError(f'{what} has determinant {float(np.atleast_1d(det).flat[0]):.6g}, expected +1 '
                            '(a reflection or a scaled matrix is not a rotation)')
    return R


# ---------------------------------------------------------------------------------------------
# Euler angles <-> rotation matrices


def euler_to_rotation(rpy_deg):
    """Rotation matrices (..., 3, 3) of roll, pitch, yaw in degrees: Rz(yaw) · Ry(pitch) · Rx(roll)."""
    if _is_torch(rpy_deg):
        _check_shape(rpy_deg, (3,), 'roll/pitch/yaw')
        return _euler_to_rotation_torch(rpy_deg)
    rpy = np.deg2rad(_as_checked_array(rpy_deg, (3,), 'roll/pitch/yaw'))
    cr, sr = np.cos(rpy[..., 0]), np.sin(rpy[..., 0])
    cp, sp = np.cos(rpy[..., 1]), np.sin(rpy[..., 1])
    cy, sy = np.cos(rpy[..., 2]), np.sin(rpy[..., 2])
    rows = [
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def rotation_to_euler(R):
    """Roll, pitch, yaw in degrees (..., 3) of rotation matrices (..., 3, 3).

    Angles lie in (-180, 180], pitch in [-90, 90]. Yaw is read from the first column; roll and pitch
    are then read from Rz(yaw)^T · R, which stays accurate near pitch ±90° (where reading roll from
    R directly loses all precision). At exact gimbal lock yaw is 0.
    """
    if _is_torch(R):
        _check_shape(R, (3, 3), 'rotation')
        return _rotation_to_euler_torch(R)
    R = check_rotation(R)
    r00, r10 = R[..., 0, 0], R[..., 1, 0]
    locked = np.hypot(r00, r10) < _GIMBAL_EPS
    yaw = np.where(locked, 0.0, np.arctan2(r10, np.where(locked, 1.0, r00)))
    cy, sy = np.cos(yaw), np.sin(yaw)
    # M = Rz(yaw)^T R = Ry(pitch) Rx(roll) = [[cp, sp sr, sp cr], [0, cr, -sr], [-sp, cp sr, cp cr]]
    m00 = cy * r00 + sy * r10
    m20 = R[..., 2, 0]
    m11 = -sy * R[..., 0, 1] + cy * R[..., 1, 1]
    m12 = -sy * R[..., 0, 2] + cy * R[..., 1, 2]
    pitch = np.clip(np.arctan2(-m20, m00), -np.pi / 2, np.pi / 2)  # rounding can overshoot ±90° by 1 ulp
    roll = np.arctan2(-m12, m11)
    return _wrap_degrees(np.rad2deg(np.stack([roll, pitch, yaw], axis=-1)))


def _wrap_degrees(angles):
    """Map angles to (-180, 180]; pitch is already in [-90, 90] and unaffected."""
    wrapped = np.where(angles <= -180.0, angles + 360.0, angles)
    return np.where(wrapped > 180.0, wrapped - 360.0, wrapped)


# ---------------------------------------------------------------------------------------------
# Actions <-> transforms


def action_to_matrix(a):
    """U(a): the 4x4 transform (..., 4, 4) of actions (..., 6) = (x, y, z mm, roll, pitch, yaw deg)."""
    if _is_torch(a):
        _check_shape(a, (6,), 'action')
        return _action_to_matrix_torch(a)
    a = _as_checked_array(a, (6,), 'action')
    T = np.zeros(a.shape[:-1] + (4, 4))
    T[..., :3, :3] = euler_to_rotation(a[..., 3:])
    T[..., :3, 3] = a[..., :3]
    T[..., 3, 3] = 1.0
    return T


def matrix_to_action(T):
    """U⁻¹(T): the action (..., 6) of rigid transforms (..., 4, 4) in millimetres."""
    if _is_torch(T):
        _check_shape(T, (4, 4), 'transform')
        import torch
        return torch.cat([T[..., :3, 3], _rotation_to_euler_torch(T[..., :3, :3])], dim=-1)
    T = check_transform(T)
    return np.concatenate([T[..., :3, 3], rotation_to_euler(T[..., :3, :3])], axis=-1)


def invert_transform(T):
    """T⁻¹ of rigid transforms (..., 4, 4), using R^T rather than a general matrix inverse."""
    if _is_torch(T):
        _check_shape(T, (4, 4), 'transform')
        import torch
        Rt = T[..., :3, :3].transpose(-1, -2)
        t = -(Rt @ T[..., :3, 3:4])
        top = torch.cat([Rt, t], dim=-1)
        bottom = torch.zeros_like(T[..., 3:4, :])
        bottom[..., 3] = 1.0
        return torch.cat([top, bottom], dim=-2)
    T = check_transform(T)
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    inv = np.zeros_like(T)
    inv[..., :3, :3] = Rt
    inv[..., :3, 3] = -np.einsum('...ij,...j->...i', Rt, T[..., :3, 3])
    inv[..., 3, 3] = 1.0
    return inv


def relative_action(T1, T2):
    """â(1→2) = U⁻¹(T1⁻¹ · T2): pose T2 expressed in the frame of pose T1, as an action.

    With T1 the current probe pose and T2 the target plane's pose this is the guidance action:
    applying it reaches the target, T2 = T1 · U(â).
    """
    return matrix_to_action(invert_transform(T1) @ _checked_or_tensor(T2))


def compose_actions(a12, a2):
    """U⁻¹(U(a12) · U(a2)): the paper's Eq. 6, a'(t1) from â(t1→t2) and a'(t2)."""
    return matrix_to_action(action_to_matrix(a12) @ action_to_matrix(a2))


def apply_action(T, a):
    """T · U(a): the pose reached by moving from pose T by action a (expressed in T's frame)."""
    return _checked_or_tensor(T) @ action_to_matrix(a)


def _checked_or_tensor(T):
    return T if _is_torch(T) else check_transform(T)


# ---------------------------------------------------------------------------------------------
# Errors between poses or actions (the metrics of docs/conventions.md)


def _rotation_and_translation(x, what):
    """Split an action (..., 6) or transform (..., 4, 4) into rotation matrix and translation."""
    if _is_torch(x):
        if tuple(x.shape[-2:]) == (4, 4):
            return x[..., :3, :3], x[..., :3, 3]
        _check_shape(x, (6,), what)
        return _euler_to_rotation_torch(x[..., 3:]), x[..., :3]
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape[-2:] == (4, 4):
        arr = check_transform(arr, what)
        return arr[..., :3, :3], arr[..., :3, 3]
    arr = _as_checked_array(arr, (6,), what)
    return euler_to_rotation(arr[..., 3:]), arr[..., :3]


def translation_error_mm(a, b):
    """Euclidean distance (mm) between the translations of two actions or two transforms."""
    _, ta = _rotation_and_translation(a, 'first argument')
    _, tb = _rotation_and_translation(b, 'second argument')
    diff = ta - tb
    return (diff * diff).sum(-1) ** 0.5


def geodesic_rotation_error_deg(a, b):
    """Angle (degrees) of the rotation between two actions or two transforms.

    Computed as atan2(sin, cos) of M = Ra^T Rb rather than acos((tr M - 1) / 2), which loses half
    the digits near zero error (acos of 1 - 1e-16 is already 1e-6 degrees).
    """
    Ra, _ = _rotation_and_translation(a, 'first argument')
    Rb, _ = _rotation_and_translation(b, 'second argument')
    M = Ra.swapaxes(-1, -2) @ Rb if not _is_torch(Ra) else Ra.transpose(-1, -2) @ Rb
    cos = (M[..., 0, 0] + M[..., 1, 1] + M[..., 2, 2] - 1.0) / 2.0
    axis = [M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0], M[..., 1, 0] - M[..., 0, 1]]
    sin = 0.5 * (axis[0] ** 2 + axis[1] ** 2 + axis[2] ** 2) ** 0.5
    if _is_torch(cos):
        import torch
        return torch.rad2deg(torch.atan2(sin, cos))
    return np.rad2deg(np.arctan2(sin, cos))


# ---------------------------------------------------------------------------------------------
# Quaternions (x, y, z, w, as in ROS) and interpolation


def quaternion_to_rotation(q):
    """Rotation matrices (..., 3, 3) of quaternions (..., 4) ordered x, y, z, w.

    Quaternions within QUATERNION_NORM_TOLERANCE of unit norm are normalised; others (including
    the all-zero quaternion of an uninitialised ROS Pose) raise GeometryError.
    """
    q = _as_checked_array(q, (4,), 'quaternion (x, y, z, w)')
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(np.abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE):
        worst = float(np.max(np.abs(norm - 1.0)))
        raise GeometryError(f'quaternion is not unit length (|q| off by {worst:.3g}); '
                            'an all-zero quaternion usually means an uninitialised Pose')
    x, y, z, w = np.moveaxis(q / norm, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def rotation_to_quaternion(R):
    """Unit quaternions (..., 4) ordered x, y, z, w with w >= 0, of rotation matrices (..., 3, 3)."""
    from scipy.spatial.transform import Rotation
    R = check_rotation(R)
    flat = R.reshape(-1, 3, 3)
    q = Rotation.from_matrix(flat).as_quat() if len(flat) else np.zeros((0, 4))
    q = np.where(q[:, 3:4] < 0, -q, q)
    return q.reshape(R.shape[:-2] + (4,))


def interpolate_pose(t, t0, T0, t1, T1):
    """Pose at time t between poses T0 (at t0) and T1 (at t1): linear translation, SLERP rotation.

    Broadcasts over leading dimensions (e.g. many frames at once). t outside [t0, t1] extrapolates,
    which callers that need bracketing samples (echo_guidance.sync) never ask for. The rotation
    follows the shortest arc.
    """
    T0 = check_transform(T0, 'T0')
    T1 = check_transform(T1, 'T1')
    t, t0, t1 = (np.asarray(v, dtype=np.float64) for v in (t, t0, t1))
    span = t1 - t0
    if np.any(span <= 0):
        raise GeometryError('interpolate_pose needs t1 > t0 for every pair of samples')
    alpha = (t - t0) / span
    from scipy.spatial.transform import Rotation
    shape = np.broadcast_shapes(T0.shape[:-2], T1.shape[:-2], alpha.shape)
    R0 = np.broadcast_to(T0[..., :3, :3], shape + (3, 3)).reshape(-1, 3, 3)
    R1 = np.broadcast_to(T1[..., :3, :3], shape + (3, 3)).reshape(-1, 3, 3)
    alpha_flat = np.broadcast_to(alpha, shape).reshape(-1)
    rot0 = Rotation.from_matrix(R0)
    delta = (rot0.inv() * Rotation.from_matrix(R1)).as_rotvec()
    R = (rot0 * Rotation.from_rotvec(delta * alpha_flat[:, None])).as_matrix()
    out = np.zeros(shape + (4, 4))
    out[..., :3, :3] = R.reshape(shape + (3, 3))
    a = np.broadcast_to(alpha, shape)[..., None]
    out[..., :3, 3] = (1 - a) * T0[..., :3, 3] + a * T1[..., :3, 3]
    out[..., 3, 3] = 1.0
    return out


# ---------------------------------------------------------------------------------------------
# ROS messages (metres) <-> transforms (millimetres)


def pose_msg_to_matrix(pose):
    """4x4 transform in mm of a geometry_msgs/Pose (metres, unit quaternion)."""
    p, o = pose.position, pose.orientation
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation([o.x, o.y, o.z, o.w])
    T[:3, 3] = _as_checked_array([p.x, p.y, p.z], (3,), 'pose position') * 1000.0
    return T


def matrix_to_pose_msg(T):
    """geometry_msgs/Pose (metres) of a single 4x4 transform in mm."""
    from geometry_msgs.msg import Pose
    T = check_transform(T)
    if T.shape != (4, 4):
        raise GeometryError(f'matrix_to_pose_msg takes one 4x4 transform, got shape {T.shape}')
    q = rotation_to_quaternion(T[:3, :3])
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) / 1000.0 for v in T[:3, 3])
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)
    return pose


def pose_stamped_to_matrix(msg):
    """4x4 transform in mm of a geometry_msgs/PoseStamped (its header is not used: see time_msg_to_ns)."""
    return pose_msg_to_matrix(msg.pose)


def matrix_to_pose_stamped(T, stamp, frame_id):
    """geometry_msgs/PoseStamped of a 4x4 transform in mm; stamp is a Time message or integer nanoseconds."""
    from geometry_msgs.msg import PoseStamped
    msg = PoseStamped()
    msg.header.frame_id = frame_id
    msg.header.stamp = stamp if not isinstance(stamp, (int, np.integer)) else ns_to_time_msg(stamp)
    msg.pose = matrix_to_pose_msg(T)
    return msg


def time_msg_to_ns(stamp):
    """Integer nanoseconds of a builtin_interfaces/Time."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def time_msg_to_seconds(stamp):
    """Seconds (float) of a builtin_interfaces/Time."""
    return stamp.sec + stamp.nanosec * 1e-9


def ns_to_time_msg(ns):
    """builtin_interfaces/Time of integer nanoseconds (must be non-negative)."""
    from builtin_interfaces.msg import Time
    ns = int(ns)
    if ns < 0:
        raise GeometryError(f'a ROS time cannot be negative, got {ns} ns')
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


# ---------------------------------------------------------------------------------------------
# Torch implementations (differentiable)


def _euler_to_rotation_torch(rpy_deg):
    import torch
    rpy = torch.deg2rad(rpy_deg)
    cr, sr = torch.cos(rpy[..., 0]), torch.sin(rpy[..., 0])
    cp, sp = torch.cos(rpy[..., 1]), torch.sin(rpy[..., 1])
    cy, sy = torch.cos(rpy[..., 2]), torch.sin(rpy[..., 2])
    rows = [
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def _rotation_to_euler_torch(R):
    import torch
    r00, r10 = R[..., 0, 0], R[..., 1, 0]
    # atan2(0, 0) has a NaN gradient: at gimbal lock feed it (0, 1) instead, which gives yaw = 0.
    locked = (r00.abs() + r10.abs()) < _GIMBAL_EPS
    yaw = torch.atan2(torch.where(locked, torch.zeros_like(r10), r10),
                      torch.where(locked, torch.ones_like(r00), r00))
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    m00 = cy * r00 + sy * r10
    m20 = R[..., 2, 0]
    m11 = -sy * R[..., 0, 1] + cy * R[..., 1, 1]
    m12 = -sy * R[..., 0, 2] + cy * R[..., 1, 2]
    pitch = torch.atan2(-m20, m00).clamp(-torch.pi / 2, torch.pi / 2)
    roll = torch.atan2(-m12, m11)
    angles = torch.rad2deg(torch.stack([roll, pitch, yaw], dim=-1))
    return torch.where(angles <= -180.0, angles + 360.0, angles)


def _action_to_matrix_torch(a):
    import torch
    R = _euler_to_rotation_torch(a[..., 3:])
    top = torch.cat([R, a[..., :3, None]], dim=-1)
    bottom = torch.zeros(a.shape[:-1] + (1, 4), dtype=a.dtype, device=a.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


__all__ = [
    'GeometryError', 'check_transform', 'check_rotation', 'euler_to_rotation', 'rotation_to_euler',
    'action_to_matrix', 'matrix_to_action', 'invert_transform', 'relative_action', 'compose_actions',
    'apply_action', 'translation_error_mm', 'geodesic_rotation_error_deg', 'quaternion_to_rotation',
    'rotation_to_quaternion', 'interpolate_pose', 'pose_msg_to_matrix', 'matrix_to_pose_msg',
    'pose_stamped_to_matrix', 'matrix_to_pose_stamped', 'time_msg_to_ns', 'time_msg_to_seconds',
    'ns_to_time_msg',
]
