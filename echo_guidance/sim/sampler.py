"""Poses near a standard plane and frames rendered there: training data the simulator labels anywhere.

Demonstrations show the poses an expert passes through; a policy in closed loop visits others (its own
mistakes), and near the plane it needs many more examples than a demonstration's final second holds.
The simulator can label any pose, so this module draws poses around each plane and renders them:

- :func:`sample_pose_near_plane` draws one pose: an offset in the plane's probe frame (x, y uniform
  in ±max_offset_mm, depth in ±max_depth_mm, roll/pitch/yaw uniform in ±max_offset_deg), then slid
  along the beam onto the skin (as a hand keeps the probe in contact). Draws that end farther than
  the stated range from the target on any axis are drawn again. The closed-loop evaluation draws its
  start poses with the same function.
- :class:`SamplerConfig` mixes several such regions (for instance half of the poses within ±6 mm /
  ±6°, the final approach, and half within ±30 mm / ±30°) and draws the heart phase uniformly.
- :func:`sampled_demonstrations` yields, per patient and plane, groups of sampled poses as
  :class:`~echo_guidance.data.dataset.Demonstration` objects whose frames are rendered lazily, so
  :func:`~echo_guidance.data.dataset.write_dataset` streams them to disk (``train`` needs no special
  case; the manifest names each group's source ``sampler:<patient>:<plane>:<group>``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.spatial.transform import Rotation

from echo_guidance.planes import GUIDANCE_PLANES, check_plane


@dataclasses.dataclass(frozen=True)
class SampleRegion:
    """A box of offsets around a plane's pose, and the share of the poses drawn from it.

    Attributes:
        fraction: share of the poses (the shares of a config are normalised to sum to 1).
        max_offset_mm: x and y offsets uniform in ±this (probe frame of the plane).
        max_offset_deg: roll, pitch, yaw uniform in ±this.
        max_depth_mm: offset along the beam uniform in ±this (before sliding onto the skin).
    """

    fraction: float
    max_offset_mm: float
    max_offset_deg: float
    max_depth_mm: float

    def __post_init__(self):
        """Check the values; raise ValueError naming the bad one."""
        for name in ('fraction', 'max_offset_mm', 'max_offset_deg', 'max_depth_mm'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f'sample region {name} must be a finite number, got {value!r}')
            if value < 0:
                raise ValueError(f'sample region {name} must be >= 0, got {value!r}')
        if self.max_offset_deg > 90:
            raise ValueError(f'sample region max_offset_deg must be <= 90, got {self.max_offset_deg}')

    @classmethod
    def parse(cls, text):
        """``FRACTION:MM,DEG,DEPTH_MM`` (e.g. ``0.5:6,6,3``) → SampleRegion; ValueError naming the text."""
        try:
            share, _, box = text.partition(':')
            values = [float(v) for v in box.split(',')]
            if len(values) != 3:
                raise ValueError
            return cls(float(share), *values)
        except ValueError as error:
            detail = f' ({error})' if str(error) else ''
            raise ValueError(
                f'sample region {text!r}: expected FRACTION:MM,DEG,DEPTH_MM such as 0.5:6,6,3{detail}'
            ) from None


DEFAULT_REGIONS = (SampleRegion(0.5, 6.0, 6.0, 3.0), SampleRegion(0.5, 30.0, 30.0, 5.0))
"""Half of the poses in the final approach (±6 mm / ±6°, depth ±3 mm), half anywhere a start may be."""


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """How many poses are drawn per patient and plane, from which regions, in groups of what size.

    Attributes:
        poses_per_plane: poses per patient and plane.
        regions: the :class:`SampleRegion` mixture.
        group_size: poses per group (one group = one dataset "demonstration": the Dreamer's pairs
            are drawn within a group, and the loss weights groups equally).
        phase_span_s: heart time drawn uniformly in [0, phase_span_s) (covers a beat at >= 30 bpm).
    """

    poses_per_plane: int = 300
    regions: tuple = DEFAULT_REGIONS
    group_size: int = 50
    phase_span_s: float = 2.0

    def __post_init__(self):
        """Normalise the region shares; raise ValueError naming a bad value."""
        regions = tuple(self.regions)
        if not regions or not all(isinstance(r, SampleRegion) for r in regions):
            raise ValueError('sampler regions must be a non-empty sequence of SampleRegion')
        total = sum(r.fraction for r in regions)
        if not total > 0:
            raise ValueError('sampler region shares sum to 0: give at least one a positive share')
        object.__setattr__(
            self, 'regions', tuple(dataclasses.replace(r, fraction=r.fraction / total) for r in regions)
        )
        for name in ('poses_per_plane', 'group_size'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'sampler {name} must be an integer >= 1, got {value!r}')
        if not (math.isfinite(self.phase_span_s) and self.phase_span_s > 0):
            raise ValueError(f'sampler phase_span_s must be > 0, got {self.phase_span_s!r}')

    def describe(self):
        """One line for logs and the manifest."""
        parts = [
            f'{100 * r.fraction:.0f}% within ±{r.max_offset_mm:g} mm / ±{r.max_offset_deg:g} deg '
            f'(depth ±{r.max_depth_mm:g} mm)'
            for r in self.regions
        ]
        return f'{self.poses_per_plane} poses per plane: ' + ', '.join(parts)

    def to_dict(self):
        """Plain form for the manifest."""
        return {
            'poses_per_plane': self.poses_per_plane,
            'group_size': self.group_size,
            'phase_span_s': self.phase_span_s,
            'regions': [dataclasses.asdict(r) for r in self.regions],
        }


def offset_pose(target_mm, offset):
    """``target · [R(roll, pitch, yaw), t]`` for an offset (x, y, z mm, roll, pitch, yaw deg) in its frame."""
    T = np.eye(4)
    T[:3, 3] = offset[:3]
    T[:3, :3] = Rotation.from_euler('xyz', offset[3:], degrees=True).as_matrix()
    return np.asarray(target_mm, dtype=float) @ T


def sample_pose_near_plane(patient, plane, rng, max_offset_mm, max_offset_deg, max_depth_mm, attempts=1000):
    """One random probe pose near ``plane`` of ``patient``, on the skin (4×4 mm, base).

    See the module docstring. Raises ValueError when no draw stays within range after ``attempts``.
    """
    target = patient.standard_plane_pose(plane)
    m, r, d = float(max_offset_mm), float(max_offset_deg), float(max_depth_mm)
    inverse = np.linalg.inv(target)
    for _ in range(attempts):
        offset = np.concatenate([rng.uniform(-m, m, 2), rng.uniform(-d, d, 1), rng.uniform(-r, r, 3)])
        pose = patient.in_contact(offset_pose(target, offset))
        # Sliding onto the skin can carry a tilted probe far along its beam: keep only poses whose
        # offset from the target stays within the stated range on every axis of the target frame.
        if np.all(np.abs((inverse @ pose)[:3, 3]) <= max(m, d) + 1e-9):
            return pose
    raise ValueError(f'no pose within ±{m:g} mm of {plane} on the skin of {patient!r} after {attempts} draws')


def sample_poses(patient, plane, rng, config):
    """(poses (N, 4, 4), region index (N,), heart times (N,)) for one patient and plane."""
    n = config.poses_per_plane
    shares = np.array([r.fraction for r in config.regions])
    counts = np.floor(shares * n).astype(int)
    counts[: n - counts.sum()] += 1  # the remainder, one each to the first regions
    poses, which = [], []
    for k, (region, count) in enumerate(zip(config.regions, counts)):
        for _ in range(int(count)):
            poses.append(
                sample_pose_near_plane(
                    patient, plane, rng, region.max_offset_mm, region.max_offset_deg, region.max_depth_mm
                )
            )
            which.append(k)
    order = rng.permutation(n)  # mix the regions within each group
    times = rng.uniform(0.0, config.phase_span_s, n)
    return np.stack(poses)[order], np.asarray(which)[order], times


class RenderedFrames:
    """A lazy sequence of frames: the renderer runs when a frame is read (so datasets stream to disk)."""

    def __init__(self, renderer, poses, times, size=None):
        """Frames of ``renderer`` at ``poses`` (N, 4, 4) and heart ``times`` (N,), resized to ``size``."""
        self.renderer, self.poses, self.times, self.size = renderer, poses, times, size

    def __len__(self):
        """Number of frames."""
        return len(self.poses)

    def __getitem__(self, i):
        """Render frame ``i``."""
        from echo_guidance.data.dataset import resize_frame

        if not 0 <= i < len(self):
            raise IndexError(i)
        image = self.renderer.render(self.poses[i], float(self.times[i]))
        return image if self.size is None else resize_frame(image, self.size)

    def __iter__(self):
        """Render every frame in order."""
        return (self[i] for i in range(len(self)))


def patient_rng(seed, plane, base_seed, stream=0x5A3):
    """The generator of the poses sampled for one patient and plane."""
    planes = GUIDANCE_PLANES + ('A4C',)
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), planes.index(check_plane(plane, planes)), int(base_seed), stream])
    )


def sampled_demonstrations(seeds, planes, config=None, render_size=128, base_seed=0, probe_config=None):
    """Yield groups of sampled, lazily rendered frames as Demonstrations (see the module docstring).

    Args:
        seeds: virtual patient seeds.
        planes: target planes.
        config: :class:`SamplerConfig`.
        render_size: side of the rendered frames (the capture node renders 128×128 in simulation);
            the dataset writer resizes them to its own size as frames from bags are.
        base_seed: seed of the draws (with the patient seed and plane).
        probe_config: the renderer's :class:`~echo_guidance.sim.ProbeConfig` (size from render_size).
    """
    from echo_guidance.data.dataset import Demonstration
    from echo_guidance.sim import Patient, ProbeConfig, ProbeRenderer

    config = config or SamplerConfig()
    base = probe_config or ProbeConfig()
    probe_config = dataclasses.replace(base, width=int(render_size), height=int(render_size))
    for seed in seeds:
        patient = Patient.from_seed(int(seed))
        renderer = ProbeRenderer(patient, probe_config)
        for plane in planes:
            check_plane(plane)
            target = patient.standard_plane_pose(plane)
            poses, _, times = sample_poses(patient, plane, patient_rng(seed, plane, base_seed), config)
            for g, start in enumerate(range(0, len(poses), config.group_size)):
                part = slice(start, start + config.group_size)
                yield Demonstration(
                    frames=RenderedFrames(renderer, poses[part], times[part]),
                    # Virtual stamps 0.1 s apart keep a group in one ordered "recording".
                    stamps=np.arange(len(poses[part])) * 0.1,
                    poses=poses[part],
                    target_pose=target,
                    subject=patient.patient_id,
                    plane=plane,
                    source=f'sampler:{patient.patient_id}:{plane}:{g}',
                    target_source='simulator',
                )
