"""Session info of a simulated recording: the virtual patient and its true target pose, in every bag.

The ``record_sim`` profile renders the virtual patient ``Patient.from_seed(seed)`` at the arm's probe
pose. :func:`simulated_patient_session` returns the recorder's session hook
(``DemonstrationRecorder(session_hook=...)``): at the start of each bag it declares, in the
session's ``extra_yaml`` under ``simulator:``, the patient seed and the probe pose of the bag's target
plane (``target_pose_mm``, 4x4 mm in base, the simulator's ground truth). ``echo-guidance dataset
build`` uses that declared target for a recording window without a TARGET mark, and reports how far
each mark lies from it (``mark_vs_declared_mm`` / ``_deg`` in the manifest). A session without a
subject id gets the virtual patient's id (the subject *is* that patient).
"""

import numpy as np
import yaml

from echo_guidance.pedal.sonographer import simulated_patient_id, standard_plane_target


def _extra_dict(extra):
    if extra is None or extra == '':
        return {}
    if isinstance(extra, dict):
        return dict(extra)
    try:
        value = yaml.safe_load(extra)
    except yaml.YAMLError as error:
        raise ValueError(f'session extra_yaml is not valid YAML: {error}') from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(
            'session extra_yaml must be a YAML mapping to add the simulator block, '
            f'got {type(value).__name__}'
        )
    return value


def simulated_patient_session(seed):
    """The session hook of a recording of virtual patient ``seed``; see the module docstring."""
    seed = int(seed)
    if seed < 0:
        raise ValueError(f'virtual patient seed must be >= 0, got {seed}')

    def hook(session):
        plane = session.get('target_plane', '')
        extra = _extra_dict(session.get('extra_yaml'))
        simulator = dict(extra.get('simulator') or {})
        simulator['patient_seed'] = seed
        simulator['patient_id'] = simulated_patient_id(seed)
        simulator['target_plane'] = plane
        simulator['target_pose_mm'] = np.round(standard_plane_target(seed, plane), 6).tolist()
        simulator['target_pose_source'] = 'echo_guidance.sim Patient.standard_plane_pose (ground truth)'
        extra['simulator'] = simulator
        out = dict(session)
        out['extra_yaml'] = yaml.safe_dump(extra, sort_keys=False)
        if not out.get('subject_id'):
            out['subject_id'] = simulator['patient_id']
        return out

    return hook
