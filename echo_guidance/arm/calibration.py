"""The flange → probe calibration: where the probe sits on the arm's flange.

The calibration is the probe frame expressed in the flange frame, ``T_flange_probe`` (4×4,
millimetres). The probe pose in ``base`` is then ``T_base_probe = T_base_flange · T_flange_probe``.
It is always read from configuration (``config/arm_calibration.yaml``), never hard-coded, because
it changes whenever a probe holder is re-mounted.

Configuration keys (a mapping, e.g. the ``flange_to_probe`` block of a ROS parameter file):

* ``translation_mm``: [x, y, z] of the probe origin in the flange frame, millimetres.
* exactly one of ``rpy_deg`` ([roll, pitch, yaw], degrees, R = Rz·Ry·Rx as in CONVENTIONS.md) or
  ``quaternion_xyzw`` ([x, y, z, w], must be a unit quaternion within 1e-3).
"""

import dataclasses

import numpy as np
from scipy.spatial.transform import Rotation


class CalibrationError(ValueError):
    """The flange → probe calibration in the configuration is missing or malformed."""


def _finite_vector(values, length, name):
    """Return ``values`` as a float array of ``length`` finite numbers, or raise CalibrationError."""
    try:
        array = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError) as error:
        raise CalibrationError(f'{name} must be a list of {length} numbers, got {values!r}') from error
    if array.shape != (length,):
        raise CalibrationError(f'{name} must be a list of {length} numbers, got {len(array)}: {values!r}')
    if not np.all(np.isfinite(array)):
        raise CalibrationError(f'{name} must be finite numbers, got {values!r}')
    return array


@dataclasses.dataclass(frozen=True)
class FlangeToProbeCalibration:
    """The fixed transform from the flange frame to the probe frame.

    Attributes:
        matrix_mm: T_flange_probe, 4×4 homogeneous transform, translation in millimetres.
        source: where the calibration came from (file name or description), for session metadata.
    """

    matrix_mm: np.ndarray
    source: str = ''

    @classmethod
    def from_config(cls, config, source=''):
        """Build the calibration from a config mapping (see the module docstring for the keys).

        Raises:
            CalibrationError: a key is missing, both or neither rotation forms are given, a value
                is not finite, or the quaternion is not of unit length.
        """
        if not isinstance(config, dict):
            raise CalibrationError(
                f'flange_to_probe calibration must be a mapping with translation_mm and rpy_deg or '
                f'quaternion_xyzw, got {config!r}'
            )
        if 'translation_mm' not in config:
            raise CalibrationError(
                'flange_to_probe calibration has no translation_mm [x, y, z] (millimetres)'
            )
        translation = _finite_vector(config['translation_mm'], 3, 'flange_to_probe.translation_mm')
        has_rpy = config.get('rpy_deg') is not None
        has_quaternion = config.get('quaternion_xyzw') is not None
        if has_rpy == has_quaternion:
            raise CalibrationError(
                'flange_to_probe calibration needs exactly one rotation: rpy_deg [roll, pitch, yaw] in '
                'degrees or quaternion_xyzw [x, y, z, w]; got ' + ('both' if has_rpy else 'neither')
            )
        if has_rpy:
            rpy = _finite_vector(config['rpy_deg'], 3, 'flange_to_probe.rpy_deg')
            rotation = Rotation.from_euler('xyz', rpy, degrees=True).as_matrix()
        else:
            quaternion = _finite_vector(config['quaternion_xyzw'], 4, 'flange_to_probe.quaternion_xyzw')
            norm = float(np.linalg.norm(quaternion))
            if abs(norm - 1.0) > 1e-3:
                raise CalibrationError(
                    f'flange_to_probe.quaternion_xyzw must be a unit quaternion, its norm is {norm:.6f}'
                )
            rotation = Rotation.from_quat(quaternion / norm).as_matrix()
        matrix = np.eye(4)
        matrix[:3, :3] = rotation
        matrix[:3, 3] = translation
        return cls(matrix_mm=matrix, source=source)

    def probe_pose(self, T_base_flange_mm):
        """Return ``T_base_probe = T_base_flange · T_flange_probe`` (millimetres)."""
        return np.asarray(T_base_flange_mm, dtype=float) @ self.matrix_mm

    def flange_pose(self, T_base_probe_mm):
        """Return the flange pose that puts the probe at ``T_base_probe`` (the inverse of probe_pose)."""
        inverse = np.eye(4)
        rotation = self.matrix_mm[:3, :3]
        inverse[:3, :3] = rotation.T
        inverse[:3, 3] = -rotation.T @ self.matrix_mm[:3, 3]
        return np.asarray(T_base_probe_mm, dtype=float) @ inverse

    def as_config(self):
        """Return the calibration as a config mapping (translation_mm, quaternion_xyzw)."""
        quaternion = Rotation.from_matrix(self.matrix_mm[:3, :3]).as_quat()
        return {
            'translation_mm': [float(v) for v in self.matrix_mm[:3, 3]],
            'quaternion_xyzw': [float(v) for v in quaternion],
        }

    def describe(self):
        """One line for logs: translation (mm) and roll/pitch/yaw (degrees)."""
        rpy = Rotation.from_matrix(self.matrix_mm[:3, :3]).as_euler('xyz', degrees=True)
        t = self.matrix_mm[:3, 3]
        text = (
            f'flange->probe t=({t[0]:.2f}, {t[1]:.2f}, {t[2]:.2f}) mm, '
            f'rpy=({rpy[0]:.2f}, {rpy[1]:.2f}, {rpy[2]:.2f}) deg'
        )
        return text + (f' from {self.source}' if self.source else '')


CALIBRATION_KEYS = ('translation_mm', 'rpy_deg', 'quaternion_xyzw')


def calibration_from_node(node, prefix='flange_to_probe'):
    """Declare ``<prefix>.translation_mm|rpy_deg|quaternion_xyzw`` on a ROS node and build the calibration.

    The parameters have no defaults: a node started without ``config/arm_calibration.yaml`` (or
    equivalent ``-p`` overrides) fails with a CalibrationError naming what is missing.
    """
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import ParameterUninitializedException
    from rclpy.parameter import Parameter

    descriptions = {
        'translation_mm': 'probe origin in the flange frame, mm (config/arm_calibration.yaml)',
        'rpy_deg': 'probe rotation in the flange frame, roll/pitch/yaw in degrees',
        'quaternion_xyzw': 'probe rotation in the flange frame as a unit quaternion (instead of rpy)',
    }
    config = {}
    for key in CALIBRATION_KEYS:
        name = f'{prefix}.{key}'
        node.declare_parameter(
            name,
            Parameter.Type.DOUBLE_ARRAY,
            ParameterDescriptor(description=descriptions[key], read_only=True),
        )
        try:
            config[key] = list(node.get_parameter(name).value)
        except ParameterUninitializedException:
            pass
    source = node.declare_parameter(
        f'{prefix}.source',
        '',
        ParameterDescriptor(
            description='where the calibration came from (date, method), stored in session metadata'
        ),
    ).value
    try:
        return FlangeToProbeCalibration.from_config(config, source=source)
    except CalibrationError as error:
        raise CalibrationError(
            f'{error}; give the node config/arm_calibration.yaml with --params-file'
        ) from error


def calibration_from_file(path=None, prefix='flange_to_probe'):
    """The calibration in a ROS 2 parameter file (default: ``config/arm_calibration.yaml``), off ROS.

    Reads the ``/**`` section the nodes read with ``--params-file``, so code that needs the
    calibration without a node (benchmarks, tests) uses the very same values.

    Raises:
        CalibrationError: the file or its ``<prefix>.*`` entries are missing or malformed.
    """
    from echo_guidance.guidance.settings import guidance_parameters_from_yaml
    from echo_guidance.resources import config_path

    path = path or config_path('arm_calibration.yaml')
    try:
        flat = guidance_parameters_from_yaml(path, node='/**')
    except ValueError as error:
        raise CalibrationError(f'cannot read the flange -> probe calibration: {error}') from None
    config = {key: flat[f'{prefix}.{key}'] for key in CALIBRATION_KEYS if f'{prefix}.{key}' in flat}
    return FlangeToProbeCalibration.from_config(config, source=str(flat.get(f'{prefix}.source', '')))
