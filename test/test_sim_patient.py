"""Virtual patient: parameters, variation, standard-plane poses and what they image."""

import numpy as np
import pytest

from echo_guidance.planes import UnknownPlaneError
from echo_guidance.sim import Patient, PatientParameters, ProbeConfig, ProbeRenderer, Structure
from echo_guidance.sim.patient import DEFAULT_T_BASE_PATIENT, PROBE_INDENTATION_MM

S = Structure
PLANE_SEEDS = (0, 1, 2)


def _centroid(labels, structure):
    rows, cols = np.nonzero(labels == structure)
    assert rows.size, f'{structure.name} not in view'
    return rows.mean(), cols.mean()


def _count(labels, structure):
    return int((labels == structure).sum())


@pytest.fixture(scope='module')
def renderers():
    return {seed: ProbeRenderer(Patient.from_seed(seed)) for seed in PLANE_SEEDS}


def test_parameters_are_deterministic_and_vary_between_patients():
    a, b = PatientParameters.from_seed(7), PatientParameters.from_seed(7)
    assert a == b
    others = [PatientParameters.from_seed(s) for s in range(8)]
    for field in ('heart_scale', 'lv_radius', 'axis_azimuth_deg', 'rv_gap', 'heart_rate_bpm', 'rv_factor'):
        values = [getattr(p, field) for p in others]
        assert np.std(values) > 0, field
    scales = [p.heart_scale for p in others]
    assert 0.85 < min(scales) and max(scales) < 1.17


@pytest.mark.parametrize('seed', [-1, 1.5, True, 'three'])
def test_invalid_seed_is_rejected(seed):
    with pytest.raises(ValueError, match='seed'):
        PatientParameters.from_seed(seed)


def test_standard_poses_are_rigid_on_the_skin_and_deterministic():
    patient = Patient.from_seed(3)
    for plane in ('PLAX', 'PSAX-AV', 'PSAX-MV', 'A4C'):
        T = patient.standard_plane_pose(plane)
        R = T[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) == pytest.approx(1.0)
        np.testing.assert_allclose(T, Patient.from_seed(3).standard_plane_pose(plane))
        # The face touches the skin: sliding along the beam onto the skin changes nothing.
        np.testing.assert_allclose(patient.in_contact(T), T, atol=1e-6)
        # Beam goes into the body (patient -Z is posterior) for the parasternal planes.
        Tp = patient.to_patient(T)
        assert Tp[2, 2] < 0
    # The base frame is the patient frame moved by the documented default.
    np.testing.assert_allclose(patient.T_base_patient, DEFAULT_T_BASE_PATIENT)
    assert PROBE_INDENTATION_MM > 0


def test_parasternal_planes_share_the_window_and_differ_in_orientation():
    patient = Patient.from_seed(4)
    poses = {p: patient.standard_plane_pose(p) for p in ('PLAX', 'PSAX-AV', 'PSAX-MV')}
    skin_points = np.array([T[:3, 3] - PROBE_INDENTATION_MM * T[:3, 2] for T in poses.values()])
    assert np.ptp(skin_points, axis=0).max() < 1e-6
    # PSAX is roughly PLAX turned by 90 degrees about the beam: the image planes are near perpendicular.
    normal_plax, normal_psax = poses['PLAX'][:3, 1], poses['PSAX-AV'][:3, 1]
    assert abs(normal_plax @ normal_psax) < 0.5


def test_unknown_plane_raises():
    patient = Patient.from_seed(0)
    with pytest.raises(UnknownPlaneError, match='PLAX'):
        patient.standard_plane_pose('PSAX-PM')


def test_invalid_base_transform_raises():
    with pytest.raises(ValueError, match='rigid'):
        Patient.from_seed(0, T_base_patient=np.diag([2.0, 1.0, 1.0, 1.0]))


@pytest.mark.parametrize('seed', PLANE_SEEDS)
def test_plax_images_the_long_axis_mitral_and_aortic_valve(renderers, seed):
    renderer = renderers[seed]
    patient = renderer.patient
    labels = renderer.render_labels(patient.standard_plane_pose('PLAX'), 0.0)
    for s in (S.LV, S.MITRAL_VALVE, S.AORTIC_VALVE, S.LA, S.RV, S.AORTA, S.MYOCARDIUM):
        assert _count(labels, s) > 15, s.name
    lv_rows, lv_cols = np.nonzero(labels == S.LV)
    # Long axis: the LV is much longer (across the image) than it is deep.
    assert np.ptp(lv_cols) > 1.5 * np.percentile(np.bincount(lv_cols)[np.bincount(lv_cols) > 0], 90)
    _, mv_col = _centroid(labels, S.MITRAL_VALVE)
    av_row, av_col = _centroid(labels, S.AORTIC_VALVE)
    la_row, _ = _centroid(labels, S.LA)
    rv_row, _ = _centroid(labels, S.RV)
    # Apex on the left, valves toward the right; RV near the probe, LA deep; AV shallower than the LA.
    assert lv_cols.mean() < mv_col and lv_cols.mean() < av_col
    assert rv_row < lv_rows.mean() < la_row
    assert av_row < la_row


@pytest.mark.parametrize('seed', PLANE_SEEDS)
def test_psax_av_shows_the_aortic_valve_near_the_centre(renderers, seed):
    renderer = renderers[seed]
    patient = renderer.patient
    labels = renderer.render_labels(patient.standard_plane_pose('PSAX-AV'), 0.0)  # end-diastole: closed
    width = labels.shape[1]
    row, col = _centroid(labels, S.AORTIC_VALVE)
    assert abs(col - (width - 1) / 2) < 0.1 * width
    depth_mm = row * renderer.pixel_spacing_mm
    assert 40 < depth_mm < 110
    # Around it: left atrium behind, right atrium to the patient's right (image left), RV in front.
    la_row, _ = _centroid(labels, S.LA)
    _, ra_col = _centroid(labels, S.RA)
    rv_row, _ = _centroid(labels, S.RV)
    assert la_row > row and ra_col < col and rv_row < row
    # A cross-section, not the long axis: the LV cavity is (nearly) absent.
    assert _count(labels, S.LV) < 0.2 * _count(labels, S.LA)


@pytest.mark.parametrize('seed', PLANE_SEEDS)
def test_psax_mv_shows_the_mitral_valve_inside_a_round_lv(renderers, seed):
    renderer = renderers[seed]
    patient = renderer.patient
    diastole = 0.5 * patient.cycle.period_s  # leaflets open (fish mouth)
    labels = renderer.render_labels(patient.standard_plane_pose('PSAX-MV'), diastole)
    width = labels.shape[1]
    mv_row, mv_col = _centroid(labels, S.MITRAL_VALVE)
    assert abs(mv_col - (width - 1) / 2) < 0.1 * width
    lv_rows, lv_cols = np.nonzero(labels == S.LV)
    assert lv_rows.min() < mv_row < lv_rows.max() and lv_cols.min() < mv_col < lv_cols.max()
    aspect = np.ptp(lv_cols) / max(np.ptp(lv_rows), 1)
    assert 0.6 < aspect < 1.7
    assert _count(labels, S.AORTIC_VALVE) == 0


@pytest.mark.parametrize('seed', PLANE_SEEDS)
def test_a4c_shows_all_four_chambers(seed):
    # From the apical window the atria lie 14-20 cm deep in this (supine) model: image to 200 mm.
    patient = Patient.from_seed(seed)
    renderer = ProbeRenderer(patient, ProbeConfig(depth_mm=200.0))
    labels = renderer.render_labels(patient.standard_plane_pose('A4C'), 0.0)
    counts = {s: _count(labels, s) for s in (S.LV, S.RV, S.LA, S.RA)}
    assert all(c > 40 for c in counts.values()), counts
    _, lv_col = _centroid(labels, S.LV)
    _, rv_col = _centroid(labels, S.RV)
    lv_row, _ = _centroid(labels, S.LV)
    la_row, _ = _centroid(labels, S.LA)
    assert rv_col < lv_col  # LV on the image right (index mark to the patient's left)
    assert la_row > lv_row  # atria in the far field
