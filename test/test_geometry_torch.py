"""echo_guidance.geometry on torch tensors: equal to NumPy, differentiable, keeps dtype/device."""

import warnings

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from echo_guidance import geometry as g


def random_actions(rng, n, pitch=None, angle_scale=1.0):
    """Random actions (mm, degrees); optionally with a fixed pitch."""
    return np.column_stack([
        rng.uniform(-80, 80, (n, 3)),
        angle_scale * rng.uniform(-180, 180, n),
        angle_scale * rng.uniform(-90, 90, n) if pitch is None else np.full(n, pitch),
        angle_scale * rng.uniform(-180, 180, n),
    ])


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_torch_matches_numpy(rng):
    a = random_actions(rng, 1000)
    t = torch.tensor(a)
    np.testing.assert_allclose(g.action_to_matrix(t).numpy(), g.action_to_matrix(a), atol=1e-12)
    np.testing.assert_allclose(g.matrix_to_action(g.action_to_matrix(t)).numpy(), a, atol=1e-9)
    T = np.zeros((1000, 4, 4))
    T[:, :3, :3] = Rotation.random(1000, random_state=3).as_matrix()
    T[:, :3, 3] = rng.uniform(-300, 300, (1000, 3))
    T[:, 3, 3] = 1
    Tt = torch.tensor(T)
    np.testing.assert_allclose(g.matrix_to_action(Tt).numpy(), g.matrix_to_action(T), atol=1e-9)
    np.testing.assert_allclose(g.relative_action(Tt[:500], Tt[500:]).numpy(),
                               g.relative_action(T[:500], T[500:]), atol=1e-9)
    np.testing.assert_allclose(g.compose_actions(t[:500], t[500:]).numpy(),
                               g.compose_actions(a[:500], a[500:]), atol=1e-9)
    np.testing.assert_allclose(g.apply_action(Tt, t).numpy(), g.apply_action(T, a), atol=1e-9)
    np.testing.assert_allclose(g.invert_transform(Tt).numpy(), g.invert_transform(T), atol=1e-12)
    np.testing.assert_allclose(g.geodesic_rotation_error_deg(t, Tt).numpy(),
                               g.geodesic_rotation_error_deg(a, T), atol=1e-9)
    np.testing.assert_allclose(g.translation_error_mm(t, Tt).numpy(), g.translation_error_mm(a, T), atol=1e-9)
    q = g.rotation_to_quaternion(Tt[:, :3, :3])
    np.testing.assert_allclose(q.numpy(), g.rotation_to_quaternion(T[:, :3, :3]), atol=1e-15)
    np.testing.assert_allclose(g.quaternion_to_rotation(q).numpy(), T[:, :3, :3], atol=1e-12)


@pytest.mark.parametrize('pitch', [90.0, -90.0, 90 - 1e-6, 90 - 1e-3, -90 + 1e-2])
def test_torch_matches_numpy_at_gimbal_lock_float64(rng, pitch):
    a = random_actions(rng, 500, pitch=pitch)
    back = g.matrix_to_action(g.action_to_matrix(torch.tensor(a)))
    np.testing.assert_allclose(back.numpy(), g.matrix_to_action(g.action_to_matrix(a)), atol=1e-9)


@pytest.mark.parametrize('pitch', [90.0, -90.0, 90 - 1e-5, 90 - 1e-3, 90 - 1e-1, -90 + 1e-4])
def test_float32_near_gimbal_lock_reproduces_the_matrix(rng, pitch):
    a = torch.tensor(random_actions(rng, 500, pitch=pitch), dtype=torch.float32)
    T = g.action_to_matrix(a)
    back = g.matrix_to_action(T)
    assert back.dtype == torch.float32
    assert torch.all(back[:, 4].abs() <= 90) and torch.all((back[:, 3:] > -180) & (back[:, 3:] <= 180))
    assert (g.action_to_matrix(back) - T).abs().max() < 1e-5


def test_dtype_and_mixed_inputs(rng):
    a = torch.tensor(random_actions(rng, 6), dtype=torch.float32)
    assert g.compose_actions(a[:3], a[3:]).dtype == torch.float32
    assert g.action_to_matrix(a).dtype == torch.float32
    # A NumPy argument next to a tensor follows the tensor's dtype and device.
    T_np = g.action_to_matrix(random_actions(rng, 3))
    out = g.relative_action(T_np, g.action_to_matrix(a[:3]))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert isinstance(g.apply_action(T_np, a[:3]), torch.Tensor)
    assert isinstance(g.geodesic_rotation_error_deg(a[:3], T_np), torch.Tensor)
    # Integer tensors are promoted to the default float dtype.
    assert g.action_to_matrix(torch.tensor([1, 2, 3, 0, 0, 90])).dtype == torch.get_default_dtype()


def test_non_cpu_tensors_keep_their_device_without_host_syncs():
    # The meta device holds no values: any value check (a host sync on a GPU) would raise here.
    a = torch.zeros(5, 6, device='meta')
    T = g.action_to_matrix(a)
    assert T.device.type == 'meta' and T.shape == (5, 4, 4)
    for out in (g.compose_actions(a, a), g.matrix_to_action(T), g.relative_action(T, T),
                g.invert_transform(T), g.apply_action(T, a), g.geodesic_rotation_error_deg(a, T),
                g.translation_error_mm(a, a),
                g.rotation_to_quaternion(T[:, :3, :3])):
        assert out.device.type == 'meta'


def test_gradcheck_float64_away_from_gimbal_lock(rng):
    a12 = torch.tensor(random_actions(rng, 8, angle_scale=0.5), requires_grad=True)
    a2 = torch.tensor(random_actions(rng, 8, angle_scale=0.5), requires_grad=True)
    assert torch.autograd.gradcheck(g.compose_actions, (a12, a2), eps=1e-6, atol=1e-5)
    T1 = g.action_to_matrix(a12.detach()).requires_grad_()
    T2 = g.action_to_matrix(a2.detach()).requires_grad_()
    assert torch.autograd.gradcheck(g.relative_action, (T1, T2), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(g.apply_action, (T1, a2), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(g.matrix_to_action, (T1,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(g.geodesic_rotation_error_deg, (a12, a2), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(g.translation_error_mm, (a12, a2), eps=1e-6, atol=1e-5)
    R = T1.detach()[:, :3, :3].requires_grad_()
    assert torch.autograd.gradcheck(g.rotation_to_quaternion, (R,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('pitch', [90.0, -90.0, 90 - 1e-9, 90 - 1e-6, 90 - 1e-3, -90 + 1e-5])
def test_gradients_stay_finite_near_gimbal_lock(rng, dtype, pitch):
    a = torch.tensor(random_actions(rng, 16, pitch=pitch), dtype=dtype, requires_grad=True)
    small = torch.tensor(random_actions(rng, 16, angle_scale=1e-3), dtype=dtype, requires_grad=True)
    out = g.compose_actions(small, a)
    (out * torch.linspace(-1, 1, 6, dtype=dtype)).sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(a.grad).all() and torch.isfinite(small.grad).all()
    T = g.action_to_matrix(a.detach()).requires_grad_()
    g.matrix_to_action(T).sum().backward()
    assert torch.isfinite(T.grad).all()


def test_zero_error_has_a_finite_gradient():
    # A perfect prediction must not produce NaN gradients (d sqrt(x)/dx is infinite at 0).
    a = torch.tensor([[1.0, 2, 3, 10, 20, 30]], dtype=torch.float64, requires_grad=True)
    (g.geodesic_rotation_error_deg(a, a.detach()) + g.translation_error_mm(a, a.detach())).sum().backward()
    assert torch.isfinite(a.grad).all()
    R = torch.eye(3, dtype=torch.float64).requires_grad_()
    g.rotation_to_quaternion(R).sum().backward()
    assert torch.isfinite(R.grad).all()


def test_cpu_tensors_are_checked_for_nan_and_shape():
    with pytest.raises(g.GeometryError, match=r'action contains 1 NaN .* \(first at index \(1,'):
        g.action_to_matrix(torch.tensor([[0.0] * 6, [0, 0, 0, 0, float('nan'), 0]]))
    with pytest.raises(g.GeometryError, match=r'shape \(\.\.\., 6\), got \(4, 5\)'):
        g.action_to_matrix(torch.zeros(4, 5))
    with pytest.raises(g.GeometryError, match=r'shape \(\.\.\., 4, 4\), got \(3, 3\)'):
        g.matrix_to_action(torch.eye(3))
    with pytest.raises(g.GeometryError, match='NumPy arrays'):
        g.interpolate_pose(0.5, 0.0, torch.eye(4), 1.0, torch.eye(4))


@pytest.mark.filterwarnings('ignore:`torch.jit.trace` is deprecated:DeprecationWarning')
def test_tracing_skips_value_checks_and_records_no_python_branches():
    a = torch.tensor([[1.0, 2, 3, 10, 20, 30]])
    with warnings.catch_warnings():
        warnings.simplefilter('error', torch.jit.TracerWarning)
        traced = torch.jit.trace(g.compose_actions, (a, a))
    b = torch.tensor([[0.0, 0, 10, 0, 0, 0], [5, 0, 0, 0, 0, 90]])
    torch.testing.assert_close(traced(b, b), g.compose_actions(b, b))
