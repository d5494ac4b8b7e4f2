"""Sector probe renderer: settings, determinism, speckle fixed in tissue, similarity vs pose, beating."""

import time

import numpy as np
import pytest

from echo_guidance.geometry import action_to_matrix
from echo_guidance.sim import InvalidProbeConfigError, Patient, ProbeConfig, ProbeRenderer, Structure
from echo_guidance.sim.probe import bounding_boxes
from echo_guidance.sim.structures import ACOUSTIC_PROPERTIES, structure_by_name


@pytest.fixture(scope='module')
def renderer():
    return ProbeRenderer(Patient.from_seed(0))


def _ncc(a, b, mask):
    a = a[mask].astype(float)
    b = b[mask].astype(float)
    a -= a.mean()
    b -= b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.parametrize(
    'kwargs, field',
    [
        ({'depth_mm': -10.0}, 'depth_mm'),
        ({'depth_mm': 0.0}, 'depth_mm'),
        ({'sector_deg': 180.0}, 'sector_deg'),
        ({'sector_deg': 0.0}, 'sector_deg'),
        ({'width': 0}, 'width'),
        ({'height': 0}, 'height'),
        ({'width': 12.5}, 'width'),
        ({'dynamic_range_db': 0.0}, 'dynamic_range_db'),
        ({'gain_db': float('nan')}, 'gain_db'),
    ],
)
def test_invalid_probe_settings_name_the_setting(kwargs, field):
    with pytest.raises(InvalidProbeConfigError, match=field):
        ProbeConfig(**kwargs)


def test_invalid_pose_is_rejected(renderer):
    with pytest.raises(ValueError, match='4x4'):
        renderer.render(np.eye(3))
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(ValueError, match='rotation'):
        renderer.render(bad)


def test_every_structure_has_acoustic_properties():
    assert set(ACOUSTIC_PROPERTIES) == set(Structure)
    assert structure_by_name('mitral-valve') is Structure.MITRAL_VALVE
    with pytest.raises(ValueError, match='unknown structure'):
        structure_by_name('spleen')


@pytest.mark.parametrize('size', [(128, 128), (96, 160)])
def test_output_geometry(size):
    width, height = size
    r = ProbeRenderer(Patient.from_seed(0), ProbeConfig(width=width, height=height, sector_deg=75.0))
    frame, labels = r.render_with_labels(r.patient.standard_plane_pose('PLAX'), 0.0)
    assert frame.shape == labels.shape == (height, width)
    assert frame.dtype == labels.dtype == np.uint8
    # Outside the sector: black and unlabelled; the apex is at the top centre.
    assert frame[~r.sector_mask].max() == 0 and labels[~r.sector_mask].max() == 0
    assert r.sector_mask[2, width // 2] and not r.sector_mask[2, 0]
    x, z = r.pixel_to_probe([0, height - 1], [(width - 1) / 2, (width - 1) / 2])
    assert x[0] == pytest.approx(0.0) and z[1] == pytest.approx((height - 1) * r.pixel_spacing_mm)
    # Square pixels, the whole sector fits, and it reaches the configured depth.
    deepest = np.nonzero(r.sector_mask.any(axis=1))[0].max() * r.pixel_spacing_mm
    assert 160.0 - 2 * r.pixel_spacing_mm < deepest <= 160.0
    cols = np.nonzero(r.sector_mask.any(axis=0))[0]
    rows = np.nonzero(r.sector_mask.any(axis=1))[0]
    assert np.ptp(cols) >= width - 4 or np.ptp(rows) >= height - 4


def test_looks_like_echocardiography(renderer):
    """Dark blood, bright pericardium, mid-grey myocardium, a shadow below the lung surface."""
    patient = renderer.patient
    frame, labels = renderer.render_with_labels(patient.standard_plane_pose('PLAX'), 0.0)

    def mean(s):
        return frame[labels == s].mean()

    assert mean(Structure.LV) < 40
    assert mean(Structure.LV) + 40 < mean(Structure.MYOCARDIUM) < mean(Structure.PERICARDIUM)
    lung = labels == Structure.LUNG
    if lung.sum() > 100:  # deep inside the lung (below its surface) everything is shadowed
        rows = np.nonzero(lung)[0]
        deep = lung & (np.arange(lung.shape[0])[:, None] > np.percentile(rows, 60))
        assert frame[deep].mean() < 0.5 * mean(Structure.MYOCARDIUM)


def test_rib_shadow_darkens_the_tissue_below():
    patient = Patient.from_seed(1)
    r = ProbeRenderer(patient)
    target = patient.standard_plane_pose('A4C')
    # Slide across the ribs along the probe's y (the apical window is in an intercostal space):
    # with the face on a rib, everything below is in its acoustic shadow.
    brightness = []
    for dy in np.linspace(-15, 15, 11):
        pose = patient.in_contact(target @ action_to_matrix([0, dy, 0, 0, 0, 0]))
        brightness.append(r.render(pose, 0.0)[r.sector_mask].mean())
    assert brightness[5] > 2.5 * min(brightness)


def test_same_pose_same_time_same_image(renderer):
    pose = renderer.patient.standard_plane_pose('PSAX-AV')
    np.testing.assert_array_equal(renderer.render(pose, 0.3), renderer.render(pose, 0.3))
    other = ProbeRenderer(Patient.from_seed(0))  # a fresh renderer and patient object, same seed
    np.testing.assert_array_equal(renderer.render(pose, 0.3), other.render(pose, 0.3))
    # Whole beats later the heart is in the same phase again.
    period = renderer.patient.cycle.period_s
    np.testing.assert_array_equal(renderer.render(pose, 0.3), renderer.render(pose, 0.3 + 3 * period))


def test_speckle_is_fixed_in_tissue(renderer):
    """Moving the probe by k pixels along its array moves the whole image (speckle too) by k columns."""
    pose = renderer.patient.standard_plane_pose('PLAX')
    k = 3
    shifted = pose @ action_to_matrix([k * renderer.pixel_spacing_mm, 0, 0, 0, 0, 0])
    a, b = renderer.render(pose, 0.0), renderer.render(shifted, 0.0)
    common = renderer.sector_mask[:, k:] & renderer.sector_mask[:, :-k]
    compensated = _ncc(a[:, k:], b[:, :-k], common)
    raw = _ncc(a, b, renderer.sector_mask)
    assert compensated > 0.9
    assert compensated > raw + 0.05
    # A tiny move keeps the image highly correlated.
    tiny = pose @ action_to_matrix([0.3, 0.3, 0.0, 0.3, 0.3, 0.3])
    assert _ncc(a, renderer.render(tiny, 0.0), renderer.sector_mask) > 0.9


@pytest.mark.parametrize('axis', range(6))
def test_similarity_falls_off_with_pose_distance(renderer, axis):
    patient = renderer.patient
    pose = patient.standard_plane_pose('PSAX-AV')
    reference = renderer.render(pose, 0.0)
    steps = [0.5, 1, 2, 4, 8, 16]
    similarity = []
    for d in steps:
        action = np.zeros(6)
        action[axis] = d
        similarity.append(
            _ncc(reference, renderer.render(pose @ action_to_matrix(action), 0.0), renderer.sector_mask)
        )
    similarity = np.array(similarity)
    assert similarity[0] > 0.85
    assert np.all(np.diff(similarity) < 0.05), similarity  # monotonic, up to small wiggles
    assert similarity[-1] < similarity[0] - 0.25, similarity


def test_heart_beats_and_valves_move(renderer):
    patient = renderer.patient
    period = patient.cycle.period_s
    psax = patient.standard_plane_pose('PSAX-MV')
    ed = renderer.render_annotations(psax, 0.0)
    es = renderer.render_annotations(psax, 0.35 * period)
    assert es.lv_mask.sum() < 0.75 * ed.lv_mask.sum()
    assert not np.array_equal(renderer.render(psax, 0.0), renderer.render(psax, 0.35 * period))
    # Mitral leaflets: open (a fish-mouth ring) in mid-diastole.
    open_mv = renderer.render_labels(psax, 0.5 * period)
    assert (open_mv == Structure.MITRAL_VALVE).sum() > 10
    # Aortic valve: closed (Mercedes sign) at end-diastole, open during ejection: different pixels.
    av = patient.standard_plane_pose('PSAX-AV')
    closed = renderer.render_labels(av, 0.0) == Structure.AORTIC_VALVE
    opened = renderer.render_labels(av, 0.15 * period) == Structure.AORTIC_VALVE
    assert closed.sum() > 10 and opened.sum() > 10
    assert (closed & opened).sum() < 0.7 * min(closed.sum(), opened.sum())


def test_annotations_boxes_and_lv_mask(renderer):
    ann = renderer.render_annotations(renderer.patient.standard_plane_pose('PLAX'), 0.0)
    assert ann.lv_mask.dtype == bool and ann.lv_mask.sum() == (ann.labels == Structure.LV).sum()
    x0, y0, x1, y1 = ann.boxes['LV']
    rows, cols = np.nonzero(ann.lv_mask)
    assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max(), rows.max())
    assert 'NONE' not in ann.boxes
    assert bounding_boxes(np.zeros((8, 8), np.uint8)) == {}


def test_render_speed_smoke(renderer):
    """Loose floor (the CPU is shared); `echo-guidance sim bench` gives the real figures."""
    pose = renderer.patient.standard_plane_pose('PLAX')
    renderer.render(pose, 0.0)
    start = time.perf_counter()
    for i in range(50):
        renderer.render(pose, i / 30)
    fps = 50 / (time.perf_counter() - start)
    assert fps > 50
