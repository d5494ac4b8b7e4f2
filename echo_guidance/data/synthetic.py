"""Small synthetic demonstrations for tests and smoke runs of the learning stack, without the simulator.

Each subject has a cloud of bright scatterers around the origin of ``base`` (a stand-in for the
heart, jittered per subject) and a target pose per plane. A demonstration moves the probe from a
random start (up to ``max_offset_mm`` / ``max_offset_deg`` from the target) to the target along a
noisy path; each frame shows the scatterers that lie near the image plane (probe x–z plane, within
``slab_mm`` of it), splatted as Gaussian spots, so the image depends on the pose and the guidance
task is learnable. This is deliberately crude: the simulator (``echo_guidance.sim``) is the
realistic source; this one exists so the learning code can be tested in seconds.
"""

import numpy as np

from echo_guidance.data.dataset import Demonstration
from echo_guidance.planes import GUIDANCE_PLANES


def _pose(xyz, rpy_deg):
    from scipy.spatial.transform import Rotation

    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler('xyz', rpy_deg, degrees=True).as_matrix()
    T[:3, 3] = xyz
    return T


_PLANE_TARGETS = {
    'PLAX': ((0.0, -20.0, -80.0), (0.0, 0.0, 30.0)),
    'PSAX-AV': ((10.0, -15.0, -80.0), (0.0, 0.0, 120.0)),
    'PSAX-MV': ((20.0, -5.0, -80.0), (10.0, 0.0, 120.0)),
}


def render_scatterers(points_base, T_base_probe, size=64, depth_mm=120.0, width_mm=100.0, slab_mm=6.0):
    """Render scatterers (K, 3) mm in base as seen by a probe at T (4×4 mm) into a uint8 image."""
    T_inv = np.linalg.inv(T_base_probe)
    p = points_base @ T_inv[:3, :3].T + T_inv[:3, 3]
    near = np.abs(p[:, 1]) < 2 * slab_mm
    cols = (p[near, 0] / width_mm + 0.5) * size
    rows = (p[near, 2] / depth_mm) * size
    amp = np.exp(-0.5 * (p[near, 1] / slab_mm) ** 2)
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.zeros((size, size), np.float32)
    sigma = size / 40.0
    for r, c, a in zip(rows, cols, amp):
        if -3 * sigma < r < size + 3 * sigma and -3 * sigma < c < size + 3 * sigma:
            img += a * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * sigma**2))
    return np.clip(img * 180.0 + 10.0, 0, 255).astype(np.uint8)


def synthetic_demonstrations(
    n_subjects=4,
    demos_per_plane=1,
    frames_per_demo=30,
    size=64,
    planes=GUIDANCE_PLANES,
    seed=0,
    max_offset_mm=20.0,
    max_offset_deg=20.0,
    frame_rate_hz=10.0,
):
    """Generate synthetic demonstrations (see the module docstring); returns a list of Demonstration."""
    rng = np.random.default_rng(seed)
    demos = []
    for s in range(n_subjects):
        subject = f'synth{s:02d}'
        points = rng.normal(0.0, 25.0, size=(120, 3)) + np.array([0.0, 0.0, -30.0])
        points += rng.normal(0.0, 2.0, size=points.shape)
        for plane in planes:
            xyz, rpy = _PLANE_TARGETS[plane]
            target = _pose(np.add(xyz, rng.normal(0, 3, 3)), np.add(rpy, rng.normal(0, 3, 3)))
            for d in range(demos_per_plane):
                offset_t = rng.uniform(-max_offset_mm, max_offset_mm, 3)
                offset_r = rng.uniform(-max_offset_deg, max_offset_deg, 3)
                poses, frames = [], []
                for k in range(frames_per_demo):
                    frac = 1.0 - k / max(1, frames_per_demo - 1)
                    noise_t = rng.normal(0, 0.5, 3) * frac
                    noise_r = rng.normal(0, 0.5, 3) * frac
                    T = target @ _pose(offset_t * frac + noise_t, offset_r * frac + noise_r)
                    poses.append(T)
                    frames.append(render_scatterers(points, T, size))
                stamps = 100.0 * d + np.arange(frames_per_demo) / frame_rate_hz
                demos.append(
                    Demonstration(
                        frames=np.stack(frames),
                        stamps=stamps,
                        poses=np.stack(poses),
                        target_pose=target,
                        subject=subject,
                        plane=plane,
                        source=f'synthetic:{subject}:{plane}:{d}',
                        target_source='declared',
                    )
                )
    return demos
