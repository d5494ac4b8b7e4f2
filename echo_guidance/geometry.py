"""The 6-D action and pose conventions of echo_guidance, in one place (see docs/conventions.md).

An action a = (x, y, z, roll, pitch, yaw) has its translation in millimetres and its rotation in
degrees. U(a) is the 4x4 homogeneous transform with translation (x, y, z) and rotation
R = Rz(yaw) · Ry(pitch) · Rx(roll) (SciPy's ``Rotation.from_euler("xyz", ..., degrees=True)``,
the same as ROS/tf2 RPY). Every 4x4 transform inside echo_guidance is in millimetres; ROS
messages are in metres, and only the ``*_msg`` / ``*_pose_stamped`` conversion functions here convert.

All functions are batched over leading dimensions. The action, transform, error and quaternion
functions accept NumPy arrays or torch tensors and return the same kind (torch is imported only when
a tensor is passed; a NumPy argument next to a tensor is converted to the tensor's dtype and device).
NumPy results are float64. Torch results keep the input's floating dtype and device, and the torch
versions are differentiable, so that the world-model loss can backpropagate through a composed action.

Validation:
    NumPy inputs are fully checked (shape, finiteness, rigid rotation blocks, unit quaternions) and
    raise GeometryError naming the problem and, for batches, the first offending index. Torch
    tensors are checked for shape always, and for NaN/inf only when they live on the CPU and are not
    being traced, scripted or compiled: checking the values of a GPU tensor forces a device-to-host
    synchronisation on every training step, and a traced graph (ONNX export) must not contain Python
    branches on values. Rigidity of torch transforms is not checked (the training data is validated
    when the dataset is built).

Gimbal lock:
    At pitch = ±90° only yaw − roll (pitch +90°) or yaw + roll (pitch −90°) is determined.
    matrix_to_action then returns yaw = 0 and puts the whole rotation about the vertical axis into
    roll; U of the result reproduces the matrix. "At" means |cos(pitch)| below 1e-12 for float64
    (≈ 6e-11° from ±90°), or 8 machine epsilons for lower-precision torch tensors (≈ 5e-5° for
    float32, below which float32 cannot resolve yaw anyway). Close to the lock the Euler angles
    themselves are ill-conditioned: d(yaw)/dR grows as 1/cos(pitch). The torch gradients stay finite
    (bounded by ~1e12 for float64 and ~1e6 for float32), and are zero for yaw inside the lock.
"""

import math

import numpy as np

ROTATION_TOLERANCE = 1e-5
"""Largest allowed deviation of R^T R from I (max abs entry) and of det R from 1."""

BOTTOM_ROW_TOLERANCE = 1e-9
"""Largest allowed deviation of a transform's bottom row from [0, 0, 0, 1]."""

QUATERNION_NORM_TOLERANCE = 1e-3
"""Quaternions whose norm is within this of 1 are normalised; others are rejected."""

GIMBAL_LOCK_COS_FLOAT64 = 1e-12
"""|cos(pitch)| below which yaw is set to 0 (float64; see the module docstring for other dtypes)."""


class GeometryError(ValueError):
    """A pose, action or transform that violates the conventions (shape, NaN, non-rigid rotation)."""


# ---------------------------------------------------------------------------------------------
# Input handling


def _is_torch(x):
    return type(x).__module__.startswith('torch')


def _shape_text(tail):
    return '(..., ' + ', '.join(str(d) for d in tail) + ')'


def _check_shape(x, tail, what):
    shape = tuple(x.shape)
    if len(shape) < len(tail) or shape[len(shape) - len(tail):] != tail:
        raise GeometryError(f'{what} must have shape {_shape_text(tail)}, got {shape}')


def _first_bad_index(mask):
    """Text naming the first True entry of a batch mask, e.g. ' (first at index (2, 0))'."""
    if mask.ndim == 0:
        return ''
    return f' (first at index {tuple(int(i) for i in np.argwhere(mask)[0])})'


def _as_checked_array(x, tail, what):
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f'{what} must be numeric, got {type(x).__name__}: {exc}') from None
    _check_shape(arr, tail, what)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        per_item = ~finite.reshape(arr.shape[:arr.ndim - len(tail)] + (-1,)).all(axis=-1)
        raise GeometryError(f'{what} contains {bad} NaN or infinite value(s){_first_bad_index(per_item)}')
    return arr


def _values_checkable(t):
    """Whether reading a tensor's values is cheap and allowed here (CPU, not traced or compiled)."""
    import torch
    if t.device.type != 'cpu' or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    compiler = getattr(torch, 'compiler', None)
    return not (compiler is not None and compiler.is_compiling())


def _as_checked_tensor(t, tail, what):
    """Check a tensor's shape (and finiteness where cheap); integer tensors become the default float dtype."""
    import torch
    if torch.jit.is_tracing():
        # Sizes are traced values here: comparing them would record Python branches in the graph
        # (TracerWarning); the example inputs of the trace were checked when they were made.
        return t
    _check_shape(t, tail, what)
    if not (t.is_floating_point() or t.is_complex()):
        t = t.to(torch.get_default_dtype())
    elif t.is_complex():
        raise GeometryError(f'{what} must be real, got a {t.dtype} tensor')
    if _values_checkable(t):
        finite = torch.isfinite(t.detach())
        if not bool(finite.all()):
            per_item = ~finite.reshape(t.shape[:t.dim() - len(tail)] + (-1,)).all(dim=-1)
            bad = int((~finite).sum())
            raise GeometryError(f'{what} contains {bad} NaN or infinite value(s)'
                                f'{_first_bad_index(per_item.numpy())}')
    return t


def _to_kind_of(reference, x):
    """Return ``x`` as a tensor on ``reference``'s dtype and device if ``reference`` is a tensor."""
    if not _is_torch(reference) or _is_torch(x):
        return x
    import torch
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f'cannot combine a tensor with {type(x).__name__}: {exc}') from None
    dtype = reference.dtype if reference.is_floating_point() else torch.get_default_dtype()
    return torch.as_tensor(arr, dtype=dtype, device=reference.device)


def _same_kind(*xs):
    """All arguments as tensors (on the first tensor's dtype/device) if any is a tensor, else unchanged."""
    reference = next((x for x in xs if _is_torch(x)), None)
    if reference is None:
        return xs
    return tuple(_to_kind_of(reference, x) for x in xs)


def check_transform(T, what='transform'):
    """Return ``T`` as a float64 array (..., 4, 4) after checking it is a rigid transform.

    Raises GeometryError for a wrong shape, NaN/inf, a bottom row other than [0, 0, 0, 1] (within
    BOTTOM_ROW_TOLERANCE), or a rotation block that is not orthonormal with determinant +1 (within
    ROTATION_TOLERANCE).
    """
    T = _as_checked_array(T, (4, 4), what)
    bottom = T[..., 3, :]
    bad_bottom = np.any(np.abs(bottom - np.array([0.0, 0.0, 0.0, 1.0])) > BOTTOM_ROW_TOLERANCE, axis=-1)
    if np.any(bad_bottom):
        first = bottom[bad_bottom][0]
        raise GeometryError(f'{what} must have bottom row [0, 0, 0, 1], got {first.tolist()}'
                            f'{_first_bad_index(bad_bottom)}')
    check_rotation(T[..., :3, :3], what=f'rotation block of {what}')
    return T


def check_rotation(R, what='rotation'):
    """Return ``R`` as a float64 array (..., 3, 3) after checking it is a proper rotation.

    Raises GeometryError for a wrong shape, NaN/inf, max |R^T R - I| above ROTATION_TOLERANCE
    (not orthonormal: scaled, sheared) or |det R - 1| above ROTATION_TOLERANCE (a reflection).
    """
    R = _as_checked_array(R, (3, 3), what)
    if R.size == 0:
        return R
    gram = np.einsum('...ji,...jk->...ik', R, R)
    ortho_err = np.max(np.abs(gram - np.eye(3)), axis=(-2, -1))
    bad = ortho_err > ROTATION_TOLERANCE
    if np.any(bad):
        raise GeometryError(
            f'{what} is not orthonormal: max |R^T R - I| = {float(np.max(ortho_err)):.3g} '
            f'(tolerance {ROTATION_TOLERANCE:g}){_first_bad_index(bad)}')
    det = np.linalg.det(R)
    bad = np.abs(det - 1.0) > ROTATION_TOLERANCE
    if np.any(bad):
        first = float(det[bad][0] if det.ndim else det)
        raise GeometryError(f'{what} has determinant {first:.6g}, expected +1 '
                            f'(a reflection is not a rotation){_first_bad_index(bad)}')
    return R


# ---------------------------------------------------------------------------------------------
# Euler angles <-> rotation matrices


def _euler_rows(cr, sr, cp, sp, cy, sy):
    return [
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]


def euler_to_rotation(rpy_deg):
    """Rotation matrices (..., 3, 3) of roll, pitch, yaw in degrees: Rz(yaw) · Ry(pitch) · Rx(roll)."""
    if _is_torch(rpy_deg):
        return _euler_to_rotation_torch(_as_checked_tensor(rpy_deg, (3,), 'roll/pitch/yaw'))
    rpy = np.deg2rad(_as_checked_array(rpy_deg, (3,), 'roll/pitch/yaw'))
    c, s = np.cos(rpy), np.sin(rpy)
    rows = _euler_rows(c[..., 0], s[..., 0], c[..., 1], s[..., 1], c[..., 2], s[..., 2])
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def rotation_to_euler(R):
    """Roll, pitch, yaw in degrees (..., 3) of rotation matrices (..., 3, 3).

    Angles lie in (-180, 180], pitch in [-90, 90]. Yaw is read from the first column; roll and pitch
    are then read from Rz(yaw)^T · R, which stays accurate near pitch ±90° (where reading roll from
    R directly loses all precision). At gimbal lock yaw is 0 (see the module docstring).
    """
    if _is_torch(R):
        return _rotation_to_euler_torch(_as_checked_tensor(R, (3, 3), 'rotation'))
    R = check_rotation(R)
    r00, r10 = R[..., 0, 0], R[..., 1, 0]
    locked = np.abs(r00) + np.abs(r10) < GIMBAL_LOCK_COS_FLOAT64
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
        return _action_to_matrix_torch(_as_checked_tensor(a, (6,), 'action'))
    a = _as_checked_array(a, (6,), 'action')
    T = np.zeros(a.shape[:-1] + (4, 4))
    T[..., :3, :3] = euler_to_rotation(a[..., 3:])
    T[..., :3, 3] = a[..., :3]
    T[..., 3, 3] = 1.0
    return T


def matrix_to_action(T):
    """U⁻¹(T): the action (..., 6) of rigid transforms (..., 4, 4) in millimetres.

    Angles in (-180, 180], pitch in [-90, 90]; at gimbal lock yaw = 0 (module docstring).
    """
    if _is_torch(T):
        import torch
        T = _as_checked_tensor(T, (4, 4), 'transform')
        return torch.cat([T[..., :3, 3], _rotation_to_euler_torch(T[..., :3, :3])], dim=-1)
    T = check_transform(T)
    return np.concatenate([T[..., :3, 3], rotation_to_euler(T[..., :3, :3])], axis=-1)


def invert_transform(T):
    """T⁻¹ of rigid transforms (..., 4, 4), using R^T rather than a general matrix inverse."""
    if _is_torch(T):
        import torch
        T = _as_checked_tensor(T, (4, 4), 'transform')
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


def _checked_transform_any(T, what):
    return _as_checked_tensor(T, (4, 4), what) if _is_torch(T) else check_transform(T, what)


def relative_action(T1, T2):
    """â(1→2) = U⁻¹(T1⁻¹ · T2): pose T2 expressed in the frame of pose T1, as an action.

    With T1 the current probe pose and T2 the target plane's pose this is the guidance action:
    applying it reaches the target, T2 = T1 · U(â). Both broadcast over leading dimensions.
    """
    T1, T2 = _same_kind(T1, T2)
    return matrix_to_action(invert_transform(T1) @ _checked_transform_any(T2, 'T2'))


def compose_actions(a12, a2):
    """U⁻¹(U(a12) · U(a2)): the paper's Eq. 6, a'(t1) from â(t1→t2) and a'(t2)."""
    a12, a2 = _same_kind(a12, a2)
    return matrix_to_action(action_to_matrix(a12) @ action_to_matrix(a2))


def apply_action(T, a):
    """T · U(a): the pose reached by moving from pose T by action a (expressed in T's frame)."""
    T, a = _same_kind(T, a)
    return _checked_transform_any(T, 'T') @ action_to_matrix(a)


# ---------------------------------------------------------------------------------------------
# Errors between poses or actions (the metrics of docs/conventions.md)


def _rotation_and_translation(x, what):
    """Split an action (..., 6) or transform (..., 4, 4) into rotation matrix and translation."""
    if _is_torch(x):
        if tuple(x.shape[-2:]) == (4, 4):
            x = _as_checked_tensor(x, (4, 4), what)
            return x[..., :3, :3], x[..., :3, 3]
        x = _as_checked_tensor(x, (6,), what)
        return _euler_to_rotation_torch(x[..., 3:]), x[..., :3]
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f'{what} must be numeric, got {type(x).__name__}: {exc}') from None
    if arr.shape[-2:] == (4, 4):
        arr = check_transform(arr, what)
        return arr[..., :3, :3], arr[..., :3, 3]
    if arr.shape[-1:] != (6,):
        raise GeometryError(f'{what} must be an action (..., 6) or a transform (..., 4, 4), '
                            f'got shape {arr.shape}')
    arr = _as_checked_array(arr, (6,), what)
    return euler_to_rotation(arr[..., 3:]), arr[..., :3]


def _norm_last(v):
    """Euclidean norm over the last axis with a finite (zero) gradient at 0 for tensors."""
    squared = (v * v).sum(-1)
    if _is_torch(v):
        import torch
        # d sqrt(s)/ds is infinite at s = 0 and 0 * inf = NaN: the error of a perfect prediction
        # must not poison a training step, so zero error gets a zero (sub)gradient instead.
        positive = squared > 0
        return torch.where(positive, torch.sqrt(torch.where(positive, squared, torch.ones_like(squared))),
                           torch.zeros_like(squared))
    return np.sqrt(squared)


def translation_error_mm(a, b):
    """Euclidean distance (mm) between the translations of two actions or two transforms (batched)."""
    a, b = _same_kind(a, b)
    _, ta = _rotation_and_translation(a, 'first argument')
    _, tb = _rotation_and_translation(b, 'second argument')
    return _norm_last(ta - tb)


def geodesic_rotation_error_deg(a, b):
    """Angle (degrees, in [0, 180]) of the rotation between two actions or two transforms (batched).

    Computed as atan2(sin, cos) of M = Ra^T Rb rather than acos((tr M - 1) / 2), which loses half
    the digits near zero error (acos of 1 - 1e-16 is already 1e-6 degrees).
    """
    a, b = _same_kind(a, b)
    Ra, _ = _rotation_and_translation(a, 'first argument')
    Rb, _ = _rotation_and_translation(b, 'second argument')
    M = Ra.transpose(-1, -2) @ Rb if _is_torch(Ra) else np.swapaxes(Ra, -1, -2) @ Rb
    cos = (M[..., 0, 0] + M[..., 1, 1] + M[..., 2, 2] - 1.0) / 2.0
    axis = [M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0], M[..., 1, 0] - M[..., 0, 1]]
    if _is_torch(cos):
        import torch
        sin = 0.5 * _norm_last(torch.stack(axis, dim=-1))
        return torch.rad2deg(torch.atan2(sin, cos))
    sin = 0.5 * _norm_last(np.stack(axis, axis=-1))
    return np.rad2deg(np.arctan2(sin, cos))



def plane_distance(action, tolerance_mm=5.0, tolerance_deg=5.0):
    """Normalised distance of the pose an action leads to: max(‖t‖ / tolerance_mm, angle / tolerance_deg).

    For a guidance action (the target in the probe frame) it is the probe's distance to the plane in
    units of the success window: <= 1 means within ``tolerance_mm`` and ``tolerance_deg`` (geodesic).
    Batched over leading dimensions; NumPy or torch like its input.
    """
    zero = action * 0
    translation = translation_error_mm(action, zero)
    rotation = geodesic_rotation_error_deg(action, zero)
    if _is_torch(translation):
        import torch

        return torch.maximum(translation / tolerance_mm, rotation / tolerance_deg)
    return np.maximum(translation / tolerance_mm, rotation / tolerance_deg)

# ---------------------------------------------------------------------------------------------
# Quaternions (x, y, z, w, as in ROS)


def quaternion_to_rotation(q):
    """Rotation matrices (..., 3, 3) of quaternions (..., 4) ordered x, y, z, w.

    NumPy: quaternions within QUATERNION_NORM_TOLERANCE of unit norm are normalised; others
    (including the all-zero quaternion of an uninitialised Pose) raise GeometryError. Tensors are
    normalised without a value check (see the module docstring).
    """
    if _is_torch(q):
        import torch
        q = _as_checked_tensor(q, (4,), 'quaternion (x, y, z, w)')
        q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
        x, y, z, w = q.unbind(-1)
        rows = _quaternion_rows(x, y, z, w)
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)
    q = _as_checked_array(q, (4,), 'quaternion (x, y, z, w)')
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    bad = np.abs(norm[..., 0] - 1.0) > QUATERNION_NORM_TOLERANCE
    if np.any(bad):
        worst = float(np.max(np.abs(norm - 1.0)))
        raise GeometryError(f'quaternion is not unit length (|q| off by up to {worst:.3g}, tolerance '
                            f'{QUATERNION_NORM_TOLERANCE:g}){_first_bad_index(bad)}; '
                            'an all-zero quaternion usually means an uninitialised Pose')
    return _quaternion_to_rotation_np(q / norm)


def _quaternion_rows(x, y, z, w):
    return [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]


def rotation_to_quaternion(R):
    """Return unit quaternions (..., 4) ordered x, y, z, w with w >= 0 of rotation matrices (..., 3, 3).

    Shepperd's method: the largest of |w|, |x|, |y|, |z| is taken from the diagonal and the others
    from the off-diagonal entries, so every component keeps full precision (and torch gradients stay
    finite) for every rotation, including half turns.
    """
    if _is_torch(R):
        return _rotation_to_quaternion(_as_checked_tensor(R, (3, 3), 'rotation'))
    return _rotation_to_quaternion(check_rotation(R))


def _rotation_to_quaternion(R):
    """rotation_to_quaternion without input checks (NumPy or torch)."""
    torch_input = _is_torch(R)
    if torch_input:
        import torch
        lib, stack = torch, (lambda xs: torch.stack(xs, dim=-1))
    else:
        lib, stack = np, (lambda xs: np.stack(xs, axis=-1))
    r = [[R[..., i, j] for j in range(3)] for i in range(3)]
    # 4w², 4x², 4y², 4z² (each ≥ 0 for a rotation, and the largest is ≥ 1 since they sum to 4).
    four_sq = stack([1 + r[0][0] + r[1][1] + r[2][2], 1 + r[0][0] - r[1][1] - r[2][2],
                     1 - r[0][0] + r[1][1] - r[2][2], 1 - r[0][0] - r[1][1] + r[2][2]])
    # Candidates whose big component is small are never selected; the floor keeps them finite.
    big = lib.sqrt(lib.clip(four_sq, 0.1, None)) / 2
    bw, bx, by, bz = (big[..., k] for k in range(4))
    candidates = [
        [(r[2][1] - r[1][2]) / (4 * bw), (r[0][2] - r[2][0]) / (4 * bw), (r[1][0] - r[0][1]) / (4 * bw), bw],
        [bx, (r[0][1] + r[1][0]) / (4 * bx), (r[0][2] + r[2][0]) / (4 * bx), (r[2][1] - r[1][2]) / (4 * bx)],
        [(r[0][1] + r[1][0]) / (4 * by), by, (r[1][2] + r[2][1]) / (4 * by), (r[0][2] - r[2][0]) / (4 * by)],
        [(r[0][2] + r[2][0]) / (4 * bz), (r[1][2] + r[2][1]) / (4 * bz), bz, (r[1][0] - r[0][1]) / (4 * bz)],
    ]
    if not torch_input:
        best = np.argmax(four_sq, axis=-1)
        q = np.stack([stack(c) for c in candidates], axis=-2)  # (..., 4 candidates, 4)
        q = np.take_along_axis(q, best[..., None, None], axis=-2)[..., 0, :]
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
        return np.where(q[..., 3:4] < 0, -q, q)
    best = torch.argmax(four_sq, dim=-1)
    q = torch.stack([stack(c) for c in candidates], dim=-2)
    q = torch.gather(q, -2, best[..., None, None].expand(best.shape + (1, 4)))[..., 0, :]
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return q * torch.where(q[..., 3:4] < 0, -1.0, 1.0).to(q.dtype)


def _quaternion_to_rotation_np(q):
    """quaternion_to_rotation for unit quaternions, without input checks."""
    x, y, z, w = np.moveaxis(q, -1, 0)
    rows = _quaternion_rows(x, y, z, w)
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


# ---------------------------------------------------------------------------------------------
# Interpolation


def interpolate_pose(t, t0, T0, t1, T1):
    """Pose at time t between poses T0 (at t0) and T1 (at t1): linear translation, SLERP rotation.

    NumPy only; broadcasts over leading dimensions (e.g. many frames at once), returns float64
    (..., 4, 4). The rotation follows the shortest arc (at exactly 180° apart the direction is
    unspecified). t outside [t0, t1] extrapolates, which callers that need bracketing samples
    (echo_guidance.sync) never ask for. Raises GeometryError for non-rigid poses, non-finite times
    or t1 <= t0.
    """
    if any(_is_torch(x) for x in (t, t0, T0, t1, T1)):
        raise GeometryError('interpolate_pose takes NumPy arrays, got a torch tensor')
    T0 = check_transform(T0, 'T0')
    T1 = check_transform(T1, 'T1')
    t, t0, t1 = (_as_checked_array(v, (), name) for v, name in ((t, 't'), (t0, 't0'), (t1, 't1')))
    span = t1 - t0
    if np.any(span <= 0):
        raise GeometryError('interpolate_pose needs t1 > t0 for every pair of samples'
                            f'{_first_bad_index(span <= 0)}')
    return _interpolate_unchecked((t - t0) / span, T0, T1)


def _interpolate_unchecked(alpha, T0, T1):
    """Pose at fraction alpha of the way from T0 to T1 (validated float64 arrays, broadcast)."""
    shape = np.broadcast_shapes(T0.shape[:-2], T1.shape[:-2], np.shape(alpha))
    alpha = np.broadcast_to(alpha, shape)
    q0 = np.broadcast_to(_rotation_to_quaternion(T0[..., :3, :3]), shape + (4,))
    q1 = np.broadcast_to(_rotation_to_quaternion(T1[..., :3, :3]), shape + (4,))
    # q and -q are the same rotation: take the one nearer q0 for the shortest arc.
    q1 = np.where(np.sum(q0 * q1, axis=-1, keepdims=True) < 0, -q1, q1)
    # The angle between the quaternions, accurate for tiny angles (unlike arccos of their dot product).
    half = 2 * np.arctan2(np.linalg.norm(q1 - q0, axis=-1), np.linalg.norm(q1 + q0, axis=-1))
    small = half < 1e-9
    sin_half = np.where(small, 1.0, np.sin(half))
    w0 = np.where(small, 1 - alpha, np.sin((1 - alpha) * half) / sin_half)
    w1 = np.where(small, alpha, np.sin(alpha * half) / sin_half)
    q = w0[..., None] * q0 + w1[..., None] * q1
    out = np.zeros(shape + (4, 4))
    out[..., :3, :3] = _quaternion_to_rotation_np(q / np.linalg.norm(q, axis=-1, keepdims=True))
    a = alpha[..., None]
    out[..., :3, 3] = (1 - a) * T0[..., :3, 3] + a * T1[..., :3, 3]
    out[..., 3, 3] = 1.0
    return out


# ---------------------------------------------------------------------------------------------
# ROS messages (metres) <-> transforms (millimetres), ROS time


def pose_msg_to_matrix(pose):
    """4x4 transform in mm of a geometry_msgs/Pose (metres, unit quaternion x, y, z, w).

    Works with any object shaped like a Pose (rclpy or rosbags messages).
    """
    if not (hasattr(pose, 'position') and hasattr(pose, 'orientation')):
        hint = '; use pose_stamped_to_matrix for a PoseStamped' if hasattr(pose, 'pose') else ''
        raise GeometryError(f'expected a geometry_msgs/Pose, got {type(pose).__name__}{hint}')
    p, o = pose.position, pose.orientation
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation([o.x, o.y, o.z, o.w])
    T[:3, 3] = _as_checked_array([p.x, p.y, p.z], (3,), 'pose position') * 1000.0
    return T


def matrix_to_pose_msg(T):
    """geometry_msgs/Pose (metres, unit quaternion with w >= 0) of a single 4x4 transform in mm."""
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
    """4x4 transform in mm of a geometry_msgs/PoseStamped (use time_msg_to_ns / _seconds for its stamp)."""
    if not hasattr(msg, 'pose'):
        raise GeometryError(f'expected a geometry_msgs/PoseStamped, got {type(msg).__name__}')
    return pose_msg_to_matrix(msg.pose)


def matrix_to_pose_stamped(T, stamp, frame_id):
    """geometry_msgs/PoseStamped of a 4x4 transform in mm.

    ``stamp`` is a builtin_interfaces/Time, integer nanoseconds, or float seconds.
    """
    from geometry_msgs.msg import PoseStamped
    msg = PoseStamped()
    msg.header.frame_id = str(frame_id)
    if isinstance(stamp, (bool, np.bool_)):
        raise GeometryError('stamp must be a Time message, integer nanoseconds or float seconds, got a bool')
    if isinstance(stamp, (int, np.integer)):
        stamp = ns_to_time_msg(stamp)
    elif isinstance(stamp, (float, np.floating)):
        stamp = seconds_to_time_msg(stamp)
    msg.header.stamp = stamp
    msg.pose = matrix_to_pose_msg(T)
    return msg


def time_msg_to_ns(stamp):
    """Integer nanoseconds of a builtin_interfaces/Time (exact)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def time_msg_to_seconds(stamp):
    """Seconds (float) of a builtin_interfaces/Time (≈ 0.2 µs resolution for present-day epoch times)."""
    return stamp.sec + stamp.nanosec * 1e-9


def ns_to_time_msg(ns):
    """builtin_interfaces/Time of integer nanoseconds (must be non-negative)."""
    from builtin_interfaces.msg import Time
    ns = int(ns)
    if ns < 0:
        raise GeometryError(f'a ROS time cannot be negative, got {ns} ns')
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def seconds_to_ns(seconds):
    """Integer nanoseconds of float seconds, rounded to the nearest nanosecond."""
    seconds = float(seconds)
    if not math.isfinite(seconds):
        raise GeometryError(f'a time must be finite, got {seconds} s')
    return int(round(seconds * 1e9))


def seconds_to_time_msg(seconds):
    """builtin_interfaces/Time of float seconds (must be finite and non-negative)."""
    return ns_to_time_msg(seconds_to_ns(seconds))


# ---------------------------------------------------------------------------------------------
# Torch implementations (differentiable)


def _gimbal_lock_cos(dtype):
    import torch
    eps = torch.finfo(dtype).eps
    return GIMBAL_LOCK_COS_FLOAT64 if eps < 1e-10 else 8 * eps


def _euler_to_rotation_torch(rpy_deg):
    import torch
    rpy = torch.deg2rad(rpy_deg)
    c, s = torch.cos(rpy), torch.sin(rpy)
    rows = _euler_rows(c[..., 0], s[..., 0], c[..., 1], s[..., 1], c[..., 2], s[..., 2])
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def _rotation_to_euler_torch(R):
    import torch
    r00, r10 = R[..., 0, 0], R[..., 1, 0]
    # atan2(0, 0) has a NaN gradient: inside the lock feed it (0, 1) instead, which gives yaw = 0.
    locked = (r00.abs() + r10.abs()) < _gimbal_lock_cos(R.dtype)
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
    'GeometryError', 'ROTATION_TOLERANCE', 'BOTTOM_ROW_TOLERANCE', 'QUATERNION_NORM_TOLERANCE',
    'GIMBAL_LOCK_COS_FLOAT64', 'check_transform', 'check_rotation', 'euler_to_rotation', 'rotation_to_euler',
    'action_to_matrix', 'matrix_to_action', 'invert_transform', 'relative_action', 'compose_actions',
    'apply_action', 'translation_error_mm', 'geodesic_rotation_error_deg', 'quaternion_to_rotation',
    'rotation_to_quaternion', 'interpolate_pose', 'pose_msg_to_matrix', 'matrix_to_pose_msg',
    'pose_stamped_to_matrix', 'matrix_to_pose_stamped', 'time_msg_to_ns', 'time_msg_to_seconds',
    'ns_to_time_msg', 'seconds_to_ns', 'seconds_to_time_msg',
]
