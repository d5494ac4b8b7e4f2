"""Parametric anatomy of the virtual patient: chest, lungs, ribs and a four-chamber heart.

All coordinates are in the PATIENT frame, millimetres: +X toward the patient's left, +Y toward the
head, +Z anterior (out of the chest; the patient lies supine, so +Z is up). The anterior skin over
the sternum is at X = 0, Z = 0; Y = 0 is the level of the mitral annulus.

The heart is described in its own frame (origin: centre of the mitral annulus at end-diastole):
``l`` along the LV long axis toward the apex, ``a`` perpendicular to it toward the parasternal
window (anterior: the aortic valve and the right ventricle lie on this side) and ``r`` toward the
patient's right. Chambers, walls, valves and vessels are ellipsoids and tubes placed in that frame
and scaled with the patient. The volume is painted structure by structure (later structures win),
so the septum, the LV outflow tract and the aortic root come out of the order of painting.

Variation between patients (all drawn from one seed): heart size, position and orientation of the
long axis, chamber proportions, wall thickness, contraction, heart rate, chest size and wall
thickness, rib spacing and slope, and where the parasternal and apical windows are.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from echo_guidance.sim.structures import Structure

S = Structure


def _fibonacci_sphere(n=256):
    """Nearly uniform unit vectors (n, 3)."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = np.pi * (1.0 + 5**0.5) * k
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


_FIBONACCI_SPHERE = _fibonacci_sphere()


def _unit(v):
    v = np.asarray(v, dtype=float)
    n = np.linalg.norm(v)
    if n < 1e-12:
        raise ValueError('cannot normalise a zero vector')
    return v / n


@dataclasses.dataclass(frozen=True)
class PatientParameters:
    """The random draws that make one virtual patient (lengths in mm, angles in degrees)."""

    seed: int
    heart_scale: float  # overall heart size (1 = typical adult)
    lv_radius: float  # LV cavity radius at end-diastole, before scaling
    lv_half_length: float  # half-length of the LV cavity ellipsoid, before scaling
    wall_thickness: float  # LV myocardium
    rv_factor: float
    la_factor: float
    ra_factor: float
    aortic_radius: float  # aortic annulus radius, before scaling
    axis_azimuth_deg: float  # LV long axis: angle from the sagittal plane toward the left
    axis_elevation_deg: float  # LV long axis: downward tilt toward the feet
    mitral_x: float  # mitral annulus centre in the patient frame
    rv_gap: float  # distance from the right ventricle to the inside of the chest wall
    window_x: float  # parasternal window: distance left of the midline
    window_dy: float  # parasternal window: height above the mitral annulus
    fractional_shortening: float
    longitudinal_shortening: float  # mm the base descends toward the apex in systole
    heart_rate_bpm: float
    chest_half_width: float
    chest_half_depth: float
    chest_wall: float  # skin-to-pleura thickness
    rib_spacing: float
    rib_slope: float  # how fast the ribs descend laterally (mm of Y per mm of X)
    aortic_commissure_deg: float
    cartilage_x: float  # ribs are cartilage medial to this distance from the midline

    @classmethod
    def from_seed(cls, seed):
        """Draw the parameters of patient ``seed`` (a non-negative integer) deterministically."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f'patient seed must be a non-negative integer, got {seed!r}')
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EC0]))
        u = rng.uniform
        return cls(
            seed=int(seed),
            heart_scale=float(np.clip(rng.normal(1.0, 0.07), 0.86, 1.16)),
            lv_radius=u(22.0, 26.0),
            lv_half_length=u(48.0, 56.0),
            wall_thickness=u(8.0, 11.0),
            rv_factor=u(0.88, 1.12),
            la_factor=u(0.88, 1.15),
            ra_factor=u(0.88, 1.12),
            aortic_radius=u(10.0, 12.0),
            axis_azimuth_deg=u(55.0, 68.0),
            axis_elevation_deg=u(28.0, 38.0),
            mitral_x=u(8.0, 18.0),
            rv_gap=u(0.0, 8.0),
            window_x=u(28.0, 40.0),
            window_dy=u(28.0, 45.0),
            fractional_shortening=u(0.28, 0.40),
            longitudinal_shortening=u(7.0, 11.0),
            heart_rate_bpm=u(55.0, 95.0),
            chest_half_width=u(135.0, 170.0),
            chest_half_depth=u(95.0, 120.0),
            chest_wall=u(13.0, 24.0),
            rib_spacing=u(24.0, 30.0),
            rib_slope=u(0.25, 0.45),
            aortic_commissure_deg=u(0.0, 120.0),
            cartilage_x=u(50.0, 65.0),
        )


@dataclasses.dataclass(frozen=True)
class Ellipsoid:
    """Solid ellipsoid: centre (3,), axes (3, 3) rows = unit axis directions, semi (3,) semi-axes.

    ``clip`` = (point, normal) keeps only the half-space normal . (x - point) >= 0.
    """

    center: np.ndarray
    axes: np.ndarray
    semi: np.ndarray
    clip: tuple | None = None

    def bounds(self):
        """Axis-aligned bounding box (lo, hi) in the patient frame."""
        half = np.sqrt(((self.semi[:, None] * self.axes) ** 2).sum(axis=0))
        return self.center - half, self.center + half

    def contains(self, x, y, z):
        """Return a boolean mask of the (broadcast) points inside."""
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        q = 0.0
        for axis, semi in zip(self.axes, self.semi):
            q = q + ((dx * axis[0] + dy * axis[1] + dz * axis[2]) * (1.0 / semi)) ** 2
        inside = q <= 1.0
        if self.clip is not None:
            p, n = self.clip
            inside &= (x - p[0]) * n[0] + (y - p[1]) * n[1] + (z - p[2]) * n[2] >= 0.0
        return inside


@dataclasses.dataclass(frozen=True)
class Tube:
    """Solid cylinder from p0 to p1 of the given radius; ``capped`` adds hemispherical ends (a capsule)."""

    p0: np.ndarray
    p1: np.ndarray
    radius: float
    capped: bool = True

    def bounds(self):
        """Axis-aligned bounding box (lo, hi) in the patient frame."""
        return np.minimum(self.p0, self.p1) - self.radius, np.maximum(self.p0, self.p1) + self.radius

    def contains(self, x, y, z):
        """Return a boolean mask of the (broadcast) points inside."""
        d = self.p1 - self.p0
        length2 = float(d @ d)
        dx, dy, dz = x - self.p0[0], y - self.p0[1], z - self.p0[2]
        t = (dx * d[0] + dy * d[1] + dz * d[2]) * (1.0 / length2)
        if self.capped:
            tc = np.clip(t, 0.0, 1.0)
        else:
            tc = t
        ex, ey, ez = dx - tc * d[0], dy - tc * d[1], dz - tc * d[2]
        inside = ex * ex + ey * ey + ez * ez <= self.radius**2
        if not self.capped:
            inside &= (t >= 0.0) & (t <= 1.0)
        return inside


@dataclasses.dataclass(frozen=True)
class HeartFrame:
    """Origin (mitral annulus centre) and unit axes l, a, r of the heart, in the patient frame."""

    origin: np.ndarray
    e_l: np.ndarray
    e_a: np.ndarray
    e_r: np.ndarray

    def point(self, along, anterior, right):
        """Patient-frame point at heart coordinates (l, a, r) = (along, anterior, right)."""
        return self.origin + along * self.e_l + anterior * self.e_a + right * self.e_r

    @property
    def axes(self):
        """Rows l, a, r as a (3, 3) array."""
        return np.stack([self.e_l, self.e_a, self.e_r])


class Anatomy:
    """The geometry of one virtual patient, derived from its :class:`PatientParameters`.

    Attributes (patient frame, mm): ``heart`` (HeartFrame), ``mitral_center``, ``mitral_radius``,
    ``aortic_center``, ``aortic_axis``, ``aortic_radius``, ``lv_apex`` (inner apex),
    ``parasternal_window`` and ``apical_window`` (points on the skin), ``paint_order`` (the list of
    (label, shape, allowed-under) the volume is painted with).
    """

    def __init__(self, params: PatientParameters):
        """Place every structure from the parameters."""
        self.params = p = params
        s = p.heart_scale
        self.scale = s
        # Chest: an elliptic cylinder along Y, skin at Z = 0 on the midline.
        self.chest_a = p.chest_half_width
        self.chest_b = p.chest_half_depth
        self.chest_zc = -p.chest_half_depth
        self.chest_wall = p.chest_wall

        az, el = math.radians(p.axis_azimuth_deg), math.radians(p.axis_elevation_deg)
        e_l = _unit([math.cos(el) * math.sin(az), -math.sin(el), math.cos(el) * math.cos(az)])
        # Left ventricle (cavity ellipsoid truncated at the mitral annulus plane).
        self.lv_radius = p.lv_radius * s
        self.lv_half_length = p.lv_half_length * s
        self.lv_center_l = 0.62 * self.lv_half_length
        self.wall = p.wall_thickness * math.sqrt(s)
        self.lv_apex_l = self.lv_center_l + self.lv_half_length  # inner apex
        self.lv_epi_apex_l = self.lv_apex_l + 0.8 * self.wall
        origin = self._place_heart(e_l)
        self.heart, self.parasternal_window = h, window = self._frame(origin, e_l)
        e_a, e_r = h.e_a, h.e_r

        self.lv_apex = h.point(self.lv_apex_l, 0.0, 0.0)
        self.mitral_center = h.origin.copy()
        self.mitral_radius = 14.0 * s
        self.mitral_leaflet_length = self.mitral_radius / math.cos(math.radians(15.0))

        self.aortic_radius = p.aortic_radius * s
        self.aortic_center = h.point(-3.0 * s, 22.0 * s + self.aortic_radius * 0.2, 0.0)
        beta = math.radians(20.0)
        self.aortic_axis = _unit(-math.cos(beta) * e_l + math.sin(beta) * e_a)
        # Two unit vectors spanning the aortic valve plane, for the commissures.
        b1 = _unit(np.cross(self.aortic_axis, e_r))
        b2 = np.cross(self.aortic_axis, b1)
        c0 = math.radians(p.aortic_commissure_deg)
        self.aortic_commissures = np.stack(
            [
                math.cos(c0 + k * 2 * math.pi / 3) * b1 + math.sin(c0 + k * 2 * math.pi / 3) * b2
                for k in range(3)
            ]
        )

        # Apical window: where the long axis, continued past the apex, meets the skin.
        self.apical_window = self.skin_intersection(self.lv_apex, e_l)

        self.rv_center = self._rv_center(h)
        self.rv_semi = self._rv_semi()
        self.la_center = h.point(-24.0 * s, -9.0 * s, 5.0 * s)
        self.la_semi = np.array([20.0, 18.0, 24.0]) * s * p.la_factor
        self.ra_center = h.point(-18.0 * s, 24.0 * s, 36.0 * s)
        self.ra_semi = np.array([23.0, 19.0, 21.0]) * s * p.ra_factor
        self.pulmonary_valve = h.point(-2.0 * s, 44.0 * s, -22.0 * s)

        self.pericardium_center = h.point(16.0 * s, 12.0 * s, 10.0 * s)
        self.pericardium_semi = np.array([80.0, 60.0, 66.0]) * s
        self._envelope_centre = self.heart.axes @ (self.pericardium_center - self.heart.origin)
        self._build_ribs()
        self.paint_order = self._paint_order()

    def _frame(self, origin, e_l):
        """Heart frame with origin ``origin``: ``a`` points toward the parasternal window."""
        p = self.params
        window = self.skin_point(p.window_x, p.window_dy)
        to_window = window - origin
        e_a = _unit(to_window - (to_window @ e_l) * e_l)
        e_r = np.cross(e_l, e_a)
        if e_r[0] > 0:  # r must point to the patient's right (-X)
            e_r = -e_r
        return HeartFrame(origin, e_l, e_a, e_r), window

    def _heart_clearance(self, origin, e_l):
        """Smallest depth below the inner chest wall of the right ventricle's outer surface (mm).

        (The LV apex is placed against the chest wall on purpose, see _place_heart.)
        """
        h, _ = self._frame(origin, e_l)
        dirs = _FIBONACCI_SPHERE
        rv = self._rv_center(h) + (dirs * (self._rv_semi() + 3.5)) @ h.axes
        return float(self.depth_below_skin(rv[:, 0], rv[:, 2]).min() - self.chest_wall)

    def _rv_semi(self):
        return np.array([38.0, 26.0, 30.0]) * self.scale * self.params.rv_factor

    def _rv_center(self, h):
        s = self.scale
        return h.point(22.0 * s, 26.0 * s, 14.0 * s)

    def _place_heart(self, e_l):
        """Return the mitral annulus centre (X = ``mitral_x``, Y = 0) at the right depth.

        The heart lies right behind the anterior chest wall: its depth is chosen so that the right
        ventricle (with its pericardium) comes within ``rv_gap`` mm of the inside of the chest wall.
        """
        p = self.params

        def clearance(depth):
            return self._heart_clearance(np.array([p.mitral_x, 0.0, -depth]), e_l) - p.rv_gap

        lo, hi = 40.0, 160.0
        if clearance(lo) > 0 or clearance(hi) < 0:
            raise ValueError(f'cannot place the heart of patient {p.seed} in its chest')
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if clearance(mid) > 0 else (mid, hi)
        return np.array([p.mitral_x, 0.0, -0.5 * (lo + hi)])

    # ----------------------------------------------------------------------------- chest

    def skin_point(self, x, dy):
        """Point on the anterior skin at lateral position ``x`` and height ``dy``."""
        ratio = min(abs(x) / self.chest_a, 0.999)
        z = self.chest_zc + self.chest_b * math.sqrt(1.0 - ratio**2)
        return np.array([float(x), float(dy), z])

    def skin_intersection(self, point, direction):
        """First point where the ray point + t * direction (t > 0) leaves the body through the skin."""
        d = _unit(direction)
        px, pz = point[0] / self.chest_a, (point[2] - self.chest_zc) / self.chest_b
        dx, dz = d[0] / self.chest_a, d[2] / self.chest_b
        qa = dx * dx + dz * dz
        qb = 2 * (px * dx + pz * dz)
        qc = px * px + pz * pz - 1.0
        disc = qb * qb - 4 * qa * qc
        if qa < 1e-15 or disc < 0:
            raise ValueError('ray does not cross the chest surface')
        roots = [(-qb - math.sqrt(disc)) / (2 * qa), (-qb + math.sqrt(disc)) / (2 * qa)]
        t = max(roots)
        return np.asarray(point, dtype=float) + t * d

    def depth_below_skin(self, x, z):
        """Approximate depth below the skin (mm) of points (x, z); negative outside the body."""
        rx = x * (1.0 / self.chest_a)
        rz = (z - self.chest_zc) * (1.0 / self.chest_b)
        q = np.sqrt(rx * rx + rz * rz) + 1e-6
        dist = np.sqrt(x * x + (z - self.chest_zc) ** 2)
        return dist * (1.0 / q - 1.0)

    def _build_ribs(self):
        """Choose rib spacing, slope and offset so that both windows lie in an intercostal space."""
        p = self.params
        wp, wa = self.parasternal_window, self.apical_window
        slope, spacing = p.rib_slope, p.rib_spacing
        dx = abs(wa[0]) - abs(wp[0])
        if dx > 25.0:
            turns = round((wa[1] - wp[1] + slope * dx) / spacing)
            slope = float(np.clip((turns * spacing - (wa[1] - wp[1])) / dx, 0.05, 0.9))
        self.rib_slope = slope
        self.rib_spacing = spacing
        # Intercostal space centred at the parasternal window: rib coordinate 0.5 there.
        self.rib_offset = wp[1] + slope * abs(wp[0]) - 0.5 * spacing
        self.sternum_half_width = 15.0
        # Costal cartilage joins the ribs to the sternum; lateral to it the ribs are bone.
        self.cartilage_x = self.params.cartilage_x

    def rib_coordinate(self, x, y):
        """Rib coordinate: integers on rib centre lines, half-integers mid intercostal space."""
        return (y - self.rib_offset + self.rib_slope * np.abs(x)) * (1.0 / self.rib_spacing)

    # -------------------------------------------------------------------------- painting

    def _paint_order(self):
        """Return [(label, shape, allowed_under)] in painting order (later entries win)."""
        h, s = self.heart, self.scale
        ax = h.axes
        heart_ok = None  # anywhere except air, chest wall and ribs (see build_label_volume)
        lung_only = (S.LUNG,)
        order = []

        # Mediastinum: no lung around the pericardium, nor between the windows and the heart.
        order.append(
            (S.SOFT_TISSUE, Ellipsoid(self.pericardium_center, ax, self.pericardium_semi + 4.0), lung_only)
        )
        order.append(
            (S.SOFT_TISSUE, Tube(self.parasternal_window, self.aortic_center, 24.0 * s), lung_only)
        )
        order.append(
            (S.SOFT_TISSUE, Tube(self.parasternal_window, self.mitral_center, 24.0 * s), lung_only)
        )
        order.append((S.SOFT_TISSUE, Tube(self.apical_window, self.lv_apex, 24.0 * s), lung_only))

        # Descending aorta: behind the left atrium, running down along the spine.
        desc_top = self.la_center + np.array([8.0, 45.0, -40.0]) * s
        desc_bottom = desc_top + np.array([4.0, -190.0, 0.0])
        desc_r = 10.5 * s
        # Ascending aorta and arch, from the aortic valve.
        av, axis = self.aortic_center, self.aortic_axis
        sinus = av + 14.0 * s * axis
        ascending_top = av + 58.0 * s * axis
        arch_mid = 0.5 * (ascending_top + desc_top) + np.array([0.0, 28.0, 0.0]) * s
        aorta = [
            (av, sinus, self.aortic_radius * 1.22, False),
            (sinus, ascending_top, self.aortic_radius * 1.15, True),
            (ascending_top, arch_mid, self.aortic_radius * 1.05, True),
            (arch_mid, desc_top, desc_r, True),
            (desc_top, desc_bottom, desc_r, True),
        ]

        pa_end = self.pulmonary_valve + 45.0 * s * _unit(-0.3 * h.e_l - 0.75 * h.e_a - 0.55 * h.e_r)
        rvot_start = h.point(22.0 * s, 34.0 * s, 8.0 * s)
        pa_r, rvot_r = 11.5 * s, 12.5 * s

        # Pericardium: a thin bright sac hugging the heart (outer surfaces inflated by 3.5 mm), with a
        # 1.5 mm layer of fluid/fat under it; painted first, so the heart paints over its inside.
        lv_center = h.point(self.lv_center_l, 0.0, 0.0)
        lv_semi = np.array([self.lv_half_length, self.lv_radius, self.lv_radius])
        epi_semi = lv_semi + np.array([0.8, 1.0, 1.0]) * self.wall
        lv_clip = (h.point(-2.0, 0, 0), h.e_l)
        outer = [
            Ellipsoid(self.rv_center, ax, self.rv_semi + 3.5),
            Ellipsoid(self.ra_center, ax, self.ra_semi + 2.5),
            Ellipsoid(self.la_center, ax, self.la_semi + 2.5),
            Ellipsoid(lv_center, ax, epi_semi, clip=lv_clip),
        ]
        tubes = [
            (rvot_start, self.pulmonary_valve, rvot_r + 3.5),
            (av, sinus, self.aortic_radius * 1.22 + 2.0),
            (sinus, av + 30.0 * s * axis, self.aortic_radius * 1.15 + 2.0),
            (
                self.pulmonary_valve,
                self.pulmonary_valve + 0.5 * (pa_end - self.pulmonary_valve),
                pa_r + 1.8,
            ),
        ]
        for label, grow in ((S.PERICARDIUM, 3.5), (S.SOFT_TISSUE, 1.5)):
            for e in outer:
                order.append((label, Ellipsoid(e.center, e.axes, e.semi + grow, e.clip), heart_ok))
            for p0, p1, r in tubes:
                order.append((label, Tube(p0, p1, r + grow), heart_ok))

        for p0, p1, r, capped in aorta[3:]:
            order.append((S.VESSEL_WALL, Tube(p0, p1, r + 2.0, capped), heart_ok))
            order.append((S.AORTA, Tube(p0, p1, r, capped), heart_ok))

        order.append((S.VESSEL_WALL, Tube(self.pulmonary_valve, pa_end, pa_r + 1.8), heart_ok))
        order.append((S.MYOCARDIUM, Tube(rvot_start, self.pulmonary_valve, rvot_r + 3.5), heart_ok))
        order.append((S.MYOCARDIUM, Ellipsoid(self.rv_center, ax, self.rv_semi + 3.5), heart_ok))
        order.append((S.RV, Ellipsoid(self.rv_center, ax, self.rv_semi), heart_ok))
        order.append((S.RV, Tube(rvot_start, self.pulmonary_valve, rvot_r), heart_ok))
        order.append((S.PULMONARY_ARTERY, Tube(self.pulmonary_valve, pa_end, pa_r), heart_ok))

        order.append((S.MYOCARDIUM, Ellipsoid(self.ra_center, ax, self.ra_semi + 2.5), heart_ok))
        order.append((S.RA, Ellipsoid(self.ra_center, ax, self.ra_semi), heart_ok))
        order.append((S.MYOCARDIUM, Ellipsoid(self.la_center, ax, self.la_semi + 2.5), heart_ok))
        order.append((S.LA, Ellipsoid(self.la_center, ax, self.la_semi), heart_ok))

        order.append((S.MYOCARDIUM, Ellipsoid(lv_center, ax, epi_semi, clip=lv_clip), heart_ok))
        lvot_start = h.point(16.0 * s, 6.0 * s, 0.0)
        order.append((S.MYOCARDIUM, Tube(lvot_start, av, self.aortic_radius + 3.5), heart_ok))

        for p0, p1, r, capped in aorta[:3]:
            order.append((S.VESSEL_WALL, Tube(p0, p1, r + 2.0, capped), heart_ok))
        for p0, p1, r, capped in aorta[:3]:
            order.append((S.AORTA, Tube(p0, p1, r, capped), heart_ok))

        order.append((S.LV, Tube(lvot_start, av, self.aortic_radius * 0.95, capped=False), heart_ok))
        order.append(
            (
                S.LA,
                Tube(h.point(-14.0 * s, 0, 0), h.point(0.5, 0, 0), self.mitral_radius, capped=False),
                heart_ok,
            )
        )
        order.append((S.LV, Ellipsoid(lv_center, ax, lv_semi, clip=(h.origin, h.e_l)), heart_ok))
        return order

    def background_labels(self, x, y, z):
        """Chest labels at broadcast points: air, chest wall, ribs, cartilage, sternum, lung, soft tissue.

        ``x`` has shape (nx, 1, 1), ``y`` (1, ny, 1), ``z`` (1, 1, nz); returns uint8 (nx, ny, nz).
        """
        depth = self.depth_below_skin(x, z)  # (nx, 1, nz)
        shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
        labels = np.full(shape, S.SOFT_TISSUE, dtype=np.uint8)
        in_thorax = depth > self.chest_wall
        above_diaphragm = y > (-70.0 * self.scale - 15.0 + 0.25 * np.abs(x - 40.0))  # (nx, ny, 1)
        lateral = np.abs(x - 5.0) > 22.0
        lung = in_thorax & above_diaphragm & lateral
        labels[np.broadcast_to(lung, shape)] = S.LUNG
        wall = (depth >= 0) & (depth <= self.chest_wall)
        labels[np.broadcast_to(wall, shape)] = S.CHEST_WALL
        # Ribs: elliptic cross-section centred 60 % of the way through the chest wall.
        rc = self.rib_coordinate(x, y)  # (nx, ny, 1)
        off = (rc - np.round(rc)) * self.rib_spacing
        centre = 0.5 * self.chest_wall
        rib = (off * (1.0 / 5.5)) ** 2 + ((depth - centre) * (1.0 / 4.0)) ** 2 <= 1.0
        rib &= np.abs(x) > self.sternum_half_width
        cartilage = np.abs(x) < self.cartilage_x
        labels[rib & cartilage] = S.CARTILAGE
        labels[rib & ~cartilage] = S.RIB
        sternum = (
            (np.abs(x) <= self.sternum_half_width + 2.0)
            & (depth > 3.0)
            & (depth < 13.0)
            & (y > -100.0)
            & (y < 160.0)
        )
        labels[np.broadcast_to(sternum, shape)] = S.RIB
        labels[np.broadcast_to(depth < 0, shape)] = S.NONE
        return labels

    # ------------------------------------------------------------------- heart motion

    def end_diastolic_points(self, x, y, z, contraction):
        """Map points of the beating heart back to where that tissue is at end-diastole.

        The motion is analytic: the base descends toward the (fixed) apex and the ventricles contract
        radially about the LV long axis, conserving wall area (the wall thickens); the atria fill as
        the base descends. Outside an envelope around the pericardium nothing moves, so the chest is
        still; only points inside the envelope are computed.

        Args:
            x, y, z: float32 arrays of patient-frame points at the current time (not modified).
            contraction: 0 (end-diastole) .. 1 (end-systole).
        Returns:
            (x, y, z) at end-diastole (the material coordinates used for anatomy and speckle).
        """
        if contraction <= 0.0:
            return x, y, z
        f = float
        h = self.heart
        o = [f(v) for v in h.origin]
        el, ea, er = ([f(v) for v in axis] for axis in (h.e_l, h.e_a, h.e_r))
        dx, dy, dz = x - o[0], y - o[1], z - o[2]
        lc = dx * el[0] + dy * el[1] + dz * el[2]
        ac = dx * ea[0] + dy * ea[1] + dz * ea[2]
        rc = dx * er[0] + dy * er[1] + dz * er[2]
        # Envelope: the pericardium ellipsoid grown by 40 %; the motion fades out toward its surface.
        centre = [f(v) for v in self._envelope_centre]
        semi = [f(1.0 / v) for v in self.pericardium_semi]
        q = (
            ((lc - centre[0]) * semi[0]) ** 2
            + ((ac - centre[1]) * semi[1]) ** 2
            + ((rc - centre[2]) * semi[2]) ** 2
        )
        idx = np.flatnonzero(q < 1.96)
        lc, ac, rc = lc[idx], ac[idx], rc[idx]
        w = np.clip((1.4 - np.sqrt(q[idx])) * (1.0 / 0.4), 0.0, 1.0)

        # Longitudinal: anchored at the epicardial apex; the atria stretch above the base.
        dl = f(self.params.longitudinal_shortening * self.scale * contraction)
        apex = f(self.lv_epi_apex_l)
        lam = f(1.0 / (40.0 * self.scale))
        below = lc >= dl
        l_ed = np.where(
            below,
            apex - (apex - lc) * f(apex / (apex - dl)),
            lc - dl * np.exp(np.minimum(lc - dl, 0.0) * lam),
        )
        l_ed = np.where(lc > apex, lc, l_ed)

        # Radial: cavity radius profile of the LV ellipsoid at that level; wall area is conserved.
        u = (l_ed - f(self.lv_center_l)) * f(1.0 / self.lv_half_length)
        r_ed2 = f(self.lv_radius**2) * np.clip(1.0 - u * u, 0.0, 1.0)
        shrink = f(1.0 - self.params.fractional_shortening * contraction)
        k = r_ed2 * f(1.0 - shrink * shrink)
        rho2 = ac * ac + rc * rc + 1e-6
        inner = rho2 < r_ed2 * f(shrink * shrink)
        ratio = np.where(inner, f(1.0 / shrink), np.sqrt((rho2 + k) / rho2))
        fade = np.clip((l_ed + 10.0) * (1.0 / 14.0), 0.0, 1.0)
        ratio = 1.0 + fade * (ratio - 1.0)

        dl_ = w * (l_ed - lc)
        da = w * (ac * (ratio - 1.0))
        dr = w * (rc * (ratio - 1.0))
        out = []
        for c, arr in enumerate((x, y, z)):
            moved = arr.copy()
            moved[idx] += dl_ * el[c] + da * ea[c] + dr * er[c]
            out.append(moved)
        return tuple(out)


@dataclasses.dataclass
class LabelVolume:
    """A uint8 volume of structure ids on a regular grid (patient frame).

    ``labels[i, j, k]`` is the structure at origin + spacing * (i, j, k) (X, Y, Z order).
    """

    labels: np.ndarray
    origin: np.ndarray
    spacing: float

    @property
    def shape(self):
        """Voxel counts (nx, ny, nz)."""
        return self.labels.shape

    def axis_coordinates(self, axis):
        """Patient-frame coordinates of the voxel centres along ``axis`` (0 X, 1 Y, 2 Z)."""
        return (self.origin[axis] + self.spacing * np.arange(self.labels.shape[axis])).astype(np.float32)

    def sample_nearest(self, x, y, z):
        """Labels at points (arrays, patient frame); points outside take the nearest border voxel."""
        inv = 1.0 / self.spacing
        nx, ny, nz = self.labels.shape
        i = np.clip(((x - self.origin[0]) * inv + 0.5).astype(np.int32), 0, nx - 1)
        j = np.clip(((y - self.origin[1]) * inv + 0.5).astype(np.int32), 0, ny - 1)
        k = np.clip(((z - self.origin[2]) * inv + 0.5).astype(np.int32), 0, nz - 1)
        return self.labels.ravel()[(i * ny + j) * nz + k]


def build_label_volume(anatomy: Anatomy, spacing=1.0, bounds=None, slab=24):
    """Paint the anatomy into a :class:`LabelVolume` (voxel size ``spacing`` mm).

    Args:
        anatomy: the patient's geometry.
        spacing: voxel size in mm (0.5 .. 4).
        bounds: (lo, hi) patient-frame corners; default: everything a 160 mm sector can reach from
            the windows, moved up to 35 mm and tilted up to 35 degrees.
        slab: Y-planes painted at a time (bounds memory use).
    """
    spacing = float(spacing)
    if not 0.5 <= spacing <= 4.0:
        raise ValueError(f'voxel spacing must be 0.5..4 mm, got {spacing}')
    if bounds is None:
        centre = 0.5 * (anatomy.parasternal_window + anatomy.apical_window)
        lo = np.array(
            [
                min(anatomy.parasternal_window[0], anatomy.apical_window[0]) - 175.0,
                centre[1] - 175.0,
                -235.0,
            ]
        )
        hi = np.array(
            [max(anatomy.parasternal_window[0], anatomy.apical_window[0]) + 150.0, centre[1] + 175.0, 12.0]
        )
    else:
        lo, hi = (np.asarray(b, dtype=float) for b in bounds)
    shape = tuple(int(math.ceil((hi[i] - lo[i]) / spacing)) + 1 for i in range(3))
    volume = LabelVolume(np.empty(shape, dtype=np.uint8), lo.astype(np.float64), spacing)
    xs, ys, zs = (volume.axis_coordinates(i) for i in range(3))
    for j0 in range(0, shape[1], slab):
        j1 = min(j0 + slab, shape[1])
        volume.labels[:, j0:j1, :] = anatomy.background_labels(
            xs[:, None, None], ys[None, j0:j1, None], zs[None, None, :]
        )

    forbidden = np.zeros(256, dtype=bool)
    forbidden[[S.NONE, S.CHEST_WALL, S.RIB, S.CARTILAGE]] = True
    for label, shape_, allowed in anatomy.paint_order:
        b_lo, b_hi = shape_.bounds()
        i0 = np.clip(np.floor((b_lo - lo) / spacing).astype(int), 0, np.array(shape) - 1)
        i1 = np.clip(np.ceil((b_hi - lo) / spacing).astype(int) + 1, 0, np.array(shape))
        if np.any(i1 <= i0):
            continue
        block = volume.labels[i0[0] : i1[0], i0[1] : i1[1], i0[2] : i1[2]]
        inside = shape_.contains(
            xs[i0[0] : i1[0], None, None], ys[None, i0[1] : i1[1], None], zs[None, None, i0[2] : i1[2]]
        )
        if allowed is None:
            inside &= ~forbidden[block]
        else:
            ok = np.zeros(256, dtype=bool)
            ok[list(allowed)] = True
            inside &= ok[block]
        block[inside] = label
    return volume
