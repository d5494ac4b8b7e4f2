"""Phased-array sector probe: B-mode frames and label images of a virtual patient at any probe pose.

How a frame is made (all per-frame work is vectorised NumPy plus two OpenCV calls):

1. Sample points on a polar grid (depth x beam angle) in the image plane (probe x-z plane), move them
   to the patient frame with the probe pose.
2. Undo the heart's motion analytically (points -> end-diastolic "material" positions), look up the
   structure id in the patient's label volume (nearest voxel) and let the valves open or close.
3. Echo level (dB) = backscatter of the structure + speckle texture at the material position
   (speckle fixed in tissue) - attenuation accumulated along the beam (cumulative sum in depth:
   ribs and lung shadow everything below them) + time-gain compensation + gain.
4. Point-spread blur in polar space, log compression (dynamic range) to 8 bits, and scan conversion
   to the Cartesian image through a precomputed cv2.remap map. Labels take the same path with
   nearest-neighbour lookup.

Image geometry: the sector apex (centre of the transducer face) is at the top centre of the image;
pixels are square, ``pixel_spacing_mm`` wide, chosen so the whole sector fits; rows grow with depth,
columns with probe +x. Pixel (row, col) is at probe-frame x = (col - (W - 1) / 2) * spacing,
z = row * spacing.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from echo_guidance.sim.speckle import TEXTURE_SIZE, TEXTURE_SPACING_MM, speckle_texture_db
from echo_guidance.sim.structures import Structure, acoustic_tables


class InvalidProbeConfigError(ValueError):
    """A probe / image setting out of range (the message names the setting and the allowed range)."""


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Settings of the simulated phased-array probe and of the image.

    Attributes:
        depth_mm: imaging depth (10..300 mm; cardiac default 160).
        sector_deg: sector opening angle (> 0 and < 180 degrees; default 80).
        width, height: output image size in pixels (8..2048).
        gain_db: overall gain added to every echo.
        dynamic_range_db: echo range mapped onto 0..255 by the log compression (10..120).
        tgc_db_per_mm: time-gain compensation (should roughly cancel soft-tissue attenuation).
        blur: point-spread blur in polar samples (axial, lateral); (0, 0) switches it off.
        speckle_correlation_mm: grain size of the speckle texture.
    """

    depth_mm: float = 160.0
    sector_deg: float = 80.0
    width: int = 128
    height: int = 128
    gain_db: float = 0.0
    dynamic_range_db: float = 50.0
    tgc_db_per_mm: float = 0.22
    blur: tuple = (0.6, 0.8)
    speckle_correlation_mm: float = 0.6

    def __post_init__(self):
        """Check every setting; raise InvalidProbeConfigError naming the first bad one."""

        def bad(name, value, expected):
            raise InvalidProbeConfigError(f'probe setting {name}={value!r} is invalid: expected {expected}')

        for name in (
            'depth_mm',
            'sector_deg',
            'gain_db',
            'dynamic_range_db',
            'tgc_db_per_mm',
            'speckle_correlation_mm',
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float, np.integer, np.floating))
                or not math.isfinite(value)
            ):
                bad(name, value, 'a finite number')
        if not 10.0 <= self.depth_mm <= 300.0:
            bad('depth_mm', self.depth_mm, 'a depth of 10..300 mm')
        if not 0.0 < self.sector_deg < 180.0:
            bad('sector_deg', self.sector_deg, 'a sector angle > 0 and < 180 degrees')
        for name in ('width', 'height'):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or not 8 <= value <= 2048
            ):
                bad(name, value, 'an integer number of pixels, 8..2048')
        if not 10.0 <= self.dynamic_range_db <= 120.0:
            bad('dynamic_range_db', self.dynamic_range_db, '10..120 dB')
        if not 0.0 <= self.tgc_db_per_mm <= 2.0:
            bad('tgc_db_per_mm', self.tgc_db_per_mm, '0..2 dB/mm')
        if not 0.1 <= self.speckle_correlation_mm <= 5.0:
            bad('speckle_correlation_mm', self.speckle_correlation_mm, '0.1..5 mm')
        if len(self.blur) != 2 or any(not (0.0 <= b <= 10.0) for b in self.blur):
            bad('blur', self.blur, '(axial, lateral) blur of 0..10 samples each')


@dataclasses.dataclass
class Annotations:
    """Ground truth of one frame.

    Attributes:
        labels: (H, W) uint8 structure ids (:class:`~echo_guidance.sim.structures.Structure`).
        lv_mask: (H, W) bool, the LV cavity (blood pool) for segmentation.
        boxes: structure name -> (x0, y0, x1, y1) pixel box (inclusive) of every structure in view.
    """

    labels: np.ndarray
    lv_mask: np.ndarray
    boxes: dict


def bounding_boxes(labels, structures=None):
    """Return {structure name: (x0, y0, x1, y1)} (inclusive pixel bounds) for the structures in ``labels``."""
    wanted = [s for s in Structure if s != Structure.NONE] if structures is None else list(structures)
    present = np.bincount(labels.ravel(), minlength=256)
    boxes = {}
    for s in wanted:
        if present[int(s)] == 0:
            continue
        rows = np.flatnonzero((labels == s).any(axis=1))
        cols = np.flatnonzero((labels == s).any(axis=0))
        boxes[Structure(s).name] = (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))
    return boxes


class ProbeRenderer:
    """Render B-mode frames and label images of one patient.

    Args:
        patient: a :class:`~echo_guidance.sim.patient.Patient`.
        config: a :class:`ProbeConfig` (defaults: 160 mm depth, 80 degree sector, 128x128).
    """

    def __init__(self, patient, config=None):
        """Precompute the polar sampling grid and the scan-conversion maps."""
        import cv2  # noqa: F401  (fail early if OpenCV is missing)

        self.patient = patient
        self.config = config = ProbeConfig() if config is None else config
        if not isinstance(config, ProbeConfig):
            raise TypeError(f'config must be a ProbeConfig, got {type(config)}')
        depth, half = config.depth_mm, math.radians(config.sector_deg) / 2.0
        width_mm = 2.0 * depth * math.sin(half) if half < math.pi / 2 else 2.0 * depth
        spacing = max(depth / (config.height - 1), width_mm / (config.width - 1))
        self.pixel_spacing_mm = spacing
        n_depth = int(math.ceil(depth / spacing)) + 1
        # Beams are spaced 1.5 pixels apart at full depth: lateral resolution is coarser than axial.
        n_beams = int(math.ceil(depth * 2.0 * half / (1.5 * spacing))) + 1
        self.depths = np.linspace(0.0, depth, n_depth).astype(np.float32)
        self.angles = np.linspace(-half, half, n_beams).astype(np.float32)
        self.depth_step_mm = float(self.depths[1] - self.depths[0])
        self._px = (self.depths[:, None] * np.sin(self.angles)[None, :]).astype(np.float32).ravel()
        self._pz = (self.depths[:, None] * np.cos(self.angles)[None, :]).astype(np.float32).ravel()
        self.polar_shape = (n_depth, n_beams)

        rows, cols = np.mgrid[0 : config.height, 0 : config.width].astype(np.float32)
        x = (cols - (config.width - 1) / 2.0) * spacing
        z = rows * spacing
        radius = np.sqrt(x * x + z * z)
        theta = np.arctan2(x, z)
        beam = (theta + half) / (2.0 * half) * (n_beams - 1)
        sample = radius / depth * (n_depth - 1)
        outside = (radius > depth) | (np.abs(theta) > half)
        beam[outside] = -10.0
        sample[outside] = -10.0
        self._map_beam, self._map_depth = beam.astype(np.float32), sample.astype(np.float32)
        self.sector_mask = ~outside

        self._backscatter, attenuation = acoustic_tables()
        self._attenuation_per_sample = (attenuation * self.depth_step_mm).astype(np.float32)
        self._tgc = (config.tgc_db_per_mm * self.depths).astype(np.float32)[:, None]
        # Weaker echoes toward the sector edges (element directivity / apodisation).
        edge = (self.angles / half) ** 4
        self._tgc = (self._tgc - 6.0 * edge[None, :]).astype(np.float32)
        # Echo floor, fixed relative to the probe: electronic noise (amplified by the TGC like any
        # echo, so shadows and the far field are not pure black) and near-field reverberation clutter.
        floor_rng = np.random.default_rng(12345)
        pattern = 20.0 * np.log10(
            np.abs(
                floor_rng.standard_normal(self.polar_shape)
                + 1j * floor_rng.standard_normal(self.polar_shape)
            )
            / 1.2533
            + 1e-3
        )
        noise = -48.0 + config.tgc_db_per_mm * self.depths[:, None]
        clutter = -14.0 - 0.6 * self.depths[:, None]
        self._floor = (np.maximum(noise, clutter) + pattern + config.gain_db).astype(np.float32)
        self._texture = speckle_texture_db(config.speckle_correlation_mm).ravel()
        offset_rng = np.random.default_rng(patient.seed + 7919)
        self._texture_offset = offset_rng.integers(0, TEXTURE_SIZE, size=3).astype(np.int32)
        self._valves = _Valves(patient.anatomy)

    # ------------------------------------------------------------------ internals

    def _check_pose(self, T_base_probe):  # noqa: N803
        T = np.asarray(T_base_probe, dtype=float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f'probe pose must be a finite 4x4 transform (mm), got shape {T.shape}')
        R = T[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
            raise ValueError('probe pose rotation is not a proper rotation matrix')
        return T

    def _sample(self, T_base_probe, time_s):  # noqa: N803
        """Return (labels, material x, y, z) at the polar sample points, flattened."""
        T = self.patient.T_patient_base @ self._check_pose(T_base_probe)
        o, ex, ez = T[:3, 3].tolist(), T[:3, 0].tolist(), T[:3, 2].tolist()  # Python floats keep float32
        px, pz = self._px, self._pz
        x = o[0] + ex[0] * px + ez[0] * pz
        y = o[1] + ex[1] * px + ez[1] * pz
        z = o[2] + ex[2] * px + ez[2] * pz
        cycle = self.patient.cycle
        mx, my, mz = self.patient.anatomy.end_diastolic_points(x, y, z, cycle.contraction(time_s))
        labels = self.patient.volume.sample_nearest(mx, my, mz)
        self._valves.apply(labels, mx, my, mz, cycle.mitral_opening(time_s), cycle.aortic_open(time_s))
        return labels, mx, my, mz

    def _echo_polar_db(self, labels, mx, my, mz):
        inv = 1.0 / TEXTURE_SPACING_MM
        mask = TEXTURE_SIZE - 1
        off = self._texture_offset
        i = (np.floor(mx * inv).astype(np.int32) + off[0]) & mask
        j = (np.floor(my * inv).astype(np.int32) + off[1]) & mask
        k = (np.floor(mz * inv).astype(np.int32) + off[2]) & mask
        speckle = self._texture[(i * TEXTURE_SIZE + j) * TEXTURE_SIZE + k]
        echo = (self._backscatter[labels] + speckle).reshape(self.polar_shape)
        loss = self._attenuation_per_sample[labels].reshape(self.polar_shape)
        shadow = np.cumsum(loss, axis=0)
        shadow -= 0.5 * loss  # a reflector is seen before its own attenuation
        echo += self._tgc + (self.config.gain_db - shadow)
        return np.maximum(echo, self._floor, out=echo)

    def _to_uint8(self, echo_db):
        import cv2

        cfg = self.config
        if cfg.blur[0] > 0 or cfg.blur[1] > 0:
            echo_db = cv2.GaussianBlur(
                echo_db, (0, 0), sigmaX=max(cfg.blur[1], 1e-3), sigmaY=max(cfg.blur[0], 1e-3)
            )
        top = 28.0  # dB shown as white: myocardium (0 dB) lands mid-grey, reflectors near white
        scale = 255.0 / cfg.dynamic_range_db
        polar = np.clip((echo_db - (top - cfg.dynamic_range_db)) * scale, 0.0, 255.0).astype(np.uint8)
        return cv2.remap(
            polar,
            self._map_beam,
            self._map_depth,
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )

    def _labels_image(self, labels):
        import cv2

        return cv2.remap(
            labels.reshape(self.polar_shape),
            self._map_beam,
            self._map_depth,
            interpolation=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )

    # -------------------------------------------------------------------- public API

    def render(self, T_base_probe, time_s=0.0):  # noqa: N803
        """Return the B-mode frame (H, W) uint8 at probe pose ``T_base_probe`` (base frame, mm) and time."""
        labels, mx, my, mz = self._sample(T_base_probe, time_s)
        return self._to_uint8(self._echo_polar_db(labels, mx, my, mz))

    def render_labels(self, T_base_probe, time_s=0.0):  # noqa: N803
        """Return the label image (H, W) uint8 of structure ids (0 outside the sector)."""
        labels, _, _, _ = self._sample(T_base_probe, time_s)
        return self._labels_image(labels)

    def render_with_labels(self, T_base_probe, time_s=0.0):  # noqa: N803
        """Return (frame, label image) from one sampling pass."""
        labels, mx, my, mz = self._sample(T_base_probe, time_s)
        return self._to_uint8(self._echo_polar_db(labels, mx, my, mz)), self._labels_image(labels)

    def render_annotations(self, T_base_probe, time_s=0.0):  # noqa: N803
        """Return :class:`Annotations` (labels, LV mask, structure boxes) at a pose and time."""
        labels = self.render_labels(T_base_probe, time_s)
        return Annotations(labels=labels, lv_mask=labels == Structure.LV, boxes=bounding_boxes(labels))

    def pixel_to_probe(self, rows, cols):
        """Return probe-frame (x, z) in mm of pixel centres (rows, cols)."""
        cfg = self.config
        rows, cols = np.asarray(rows, dtype=float), np.asarray(cols, dtype=float)
        return (cols - (cfg.width - 1) / 2.0) * self.pixel_spacing_mm, rows * self.pixel_spacing_mm


class _Valves:
    """The mitral and aortic valves, drawn at render time because they open and close.

    Mitral: two funnel-shaped leaflets hinged on the annulus ring; the funnel angle goes from 15
    degrees (closed, tips meeting on the axis) to 80 degrees (open, hanging into the LV).
    Aortic: closed, three cusps (a shallow cone meeting on the axis, with coaptation walls along the
    commissures: a "Mercedes" Y in short axis, a thin closure line in long axis); open, the cusps lie
    back against the root wall.
    """

    THICKNESS_MM = 2.4

    def __init__(self, anatomy):
        an = anatomy
        self.mv_center = an.mitral_center.astype(np.float32)
        self.mv_axis = an.heart.e_l.astype(np.float32)
        self.mv_radius = float(an.mitral_radius)
        self.mv_length = float(an.mitral_leaflet_length)
        self.av_center = an.aortic_center.astype(np.float32)
        self.av_axis = an.aortic_axis.astype(np.float32)
        self.av_radius = float(an.aortic_radius)
        self.commissures = an.aortic_commissures.astype(np.float32)

    @staticmethod
    def _near(mx, my, mz, centre, radius):
        dx, dy, dz = mx - centre[0], my - centre[1], mz - centre[2]
        idx = np.flatnonzero(dx * dx + dy * dy + dz * dz < radius * radius)
        return idx, np.stack([dx[idx], dy[idx], dz[idx]], axis=1)

    def apply(self, labels, mx, my, mz, mitral_opening, aortic_open):
        """Overwrite ``labels`` (in place) where a valve leaflet lies at the material points."""
        half = self.THICKNESS_MM / 2.0
        allowed = np.zeros(256, dtype=bool)
        allowed[
            [
                Structure.LV,
                Structure.LA,
                Structure.AORTA,
                Structure.MITRAL_VALVE,
                Structure.MYOCARDIUM,
                Structure.VESSEL_WALL,
            ]
        ] = True

        idx, v = self._near(mx, my, mz, self.mv_center, self.mv_radius + 4.0)
        if idx.size:
            ll = v @ self.mv_axis
            radial = v - ll[:, None] * self.mv_axis
            rho = np.sqrt((radial * radial).sum(axis=1))
            alpha = math.radians(15.0 + 65.0 * float(mitral_opening))
            p0 = np.array([self.mv_radius, 0.0])
            d = np.array([-math.cos(alpha), math.sin(alpha)]) * self.mv_length
            t = np.clip(((rho - p0[0]) * d[0] + ll * d[1]) / (d @ d), 0.0, 1.0)
            dist2 = (rho - p0[0] - t * d[0]) ** 2 + (ll - t * d[1]) ** 2
            hit = (dist2 <= half * half) & allowed[labels[idx]]
            labels[idx[hit]] = Structure.MITRAL_VALVE

        idx, v = self._near(mx, my, mz, self.av_center, self.av_radius + 12.0)
        if idx.size:
            hh = v @ self.av_axis
            w = v - hh[:, None] * self.av_axis
            rho = np.sqrt((w * w).sum(axis=1))
            r = self.av_radius
            if aortic_open:
                leaflet = (
                    (rho > 0.74 * r) & (rho < 0.74 * r + self.THICKNESS_MM) & (hh > 0.0) & (hh < 0.95 * r)
                )
            else:
                # Closed cusps: a shallow cone from the annulus (hh = -0.35 r) up to the centre
                # (hh = +0.1 r), plus the three short coaptation walls along the commissures.
                surface = -0.35 * r + 0.45 * (r - rho)
                cusp = (np.abs(hh - surface) * 0.91 <= half) & (rho < r)
                along = w @ self.commissures.T  # (n, 3)
                perp2 = (w * w).sum(axis=1)[:, None] - along**2
                dist2 = np.where(along > 0, perp2, (w * w).sum(axis=1)[:, None]).min(axis=1)
                walls = (dist2 <= half * half) & (rho < r) & (hh > surface) & (hh < surface + 3.0)
                leaflet = cusp | walls
            ring = (rho > r - 1.6) & (rho < r + 0.6) & (np.abs(hh) < 3.5)
            hit = (leaflet | ring) & allowed[labels[idx]]
            labels[idx[hit]] = Structure.AORTIC_VALVE
