"""Flange → probe calibration: read from config, applied as T_base_probe = T_base_flange · T_flange_probe."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from echo_guidance.arm.calibration import CalibrationError, FlangeToProbeCalibration


def test_rpy_and_quaternion_forms_agree_and_compose_on_the_right():
    rpy = [10.0, -20.0, 90.0]
    quaternion = Rotation.from_euler('xyz', rpy, degrees=True).as_quat().tolist()
    a = FlangeToProbeCalibration.from_config({'translation_mm': [1, 2, 135], 'rpy_deg': rpy})
    b = FlangeToProbeCalibration.from_config({'translation_mm': [1, 2, 135], 'quaternion_xyzw': quaternion})
    np.testing.assert_allclose(a.matrix_mm, b.matrix_mm, atol=1e-12)
    T_base_flange = np.eye(4)
    T_base_flange[:3, :3] = Rotation.from_euler('z', 90, degrees=True).as_matrix()
    T_base_flange[:3, 3] = [500.0, 0.0, 300.0]
    probe = a.probe_pose(T_base_flange)
    # The probe origin is the calibration translation carried by the flange rotation.
    np.testing.assert_allclose(probe[:3, 3], [500.0 - 2.0, 1.0, 435.0], atol=1e-9)
    np.testing.assert_allclose(a.flange_pose(probe), T_base_flange, atol=1e-9)


def test_round_trip_through_as_config():
    calibration = FlangeToProbeCalibration.from_config({'translation_mm': [0, 5, 120], 'rpy_deg': [0, 0, 45]})
    again = FlangeToProbeCalibration.from_config(calibration.as_config())
    np.testing.assert_allclose(again.matrix_mm, calibration.matrix_mm, atol=1e-12)
    assert '45.00' in calibration.describe()


@pytest.mark.parametrize(
    'config, fragment',
    [
        ({}, 'translation_mm'),
        ({'translation_mm': [0, 0, 1]}, 'neither'),
        ({'translation_mm': [0, 0, 1], 'rpy_deg': [0, 0, 0], 'quaternion_xyzw': [0, 0, 0, 1]}, 'both'),
        ({'translation_mm': [0, 0], 'rpy_deg': [0, 0, 0]}, '3 numbers'),
        ({'translation_mm': [0, 0, float('nan')], 'rpy_deg': [0, 0, 0]}, 'finite'),
        ({'translation_mm': [0, 0, 1], 'quaternion_xyzw': [0, 0, 0, 2]}, 'unit quaternion'),
        ({'translation_mm': [0, 0, 1], 'rpy_deg': 'zero'}, '3 numbers'),
        ([1, 2, 3], 'mapping'),
    ],
)
def test_bad_calibration_names_the_problem(config, fragment):
    with pytest.raises(CalibrationError, match=fragment):
        FlangeToProbeCalibration.from_config(config)


def test_calibration_from_file_reads_what_the_nodes_read(tmp_path):
    from echo_guidance.arm.calibration import CalibrationError, calibration_from_file

    nominal = calibration_from_file()  # config/arm_calibration.yaml
    np.testing.assert_allclose(nominal.matrix_mm[:3, 3], [0.0, 0.0, 135.0])
    assert 'not measured' in nominal.source
    bad = tmp_path / 'cal.yaml'
    bad.write_text('/**:\n  ros__parameters:\n    flange_to_probe:\n      rpy_deg: [0.0, 0.0, 90.0]\n')
    with pytest.raises(CalibrationError, match='translation_mm'):
        calibration_from_file(bad)
    with pytest.raises(CalibrationError, match='does not exist'):
        calibration_from_file(tmp_path / 'none.yaml')
