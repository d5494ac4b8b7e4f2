"""Contact sheet: the standard planes of a few virtual patients and their neighbours, labelled."""

import numpy as np

DEFAULT_NEIGHBOURS = (
    ('target', (0, 0, 0, 0, 0, 0)),
    ('x +10 mm', (10, 0, 0, 0, 0, 0)),
    ('x -10 mm', (-10, 0, 0, 0, 0, 0)),
    ('y +10 mm', (0, 10, 0, 0, 0, 0)),
    ('roll +10 deg', (0, 0, 0, 10, 0, 0)),
    ('roll -10 deg', (0, 0, 0, -10, 0, 0)),
    ('pitch +10 deg', (0, 0, 0, 0, 10, 0)),
    ('yaw +10 deg', (0, 0, 0, 0, 0, 10)),
)
"""Column title and action (x, y, z mm, roll, pitch, yaw deg, probe frame) of each neighbour."""


def contact_sheet(
    seeds=(0, 1), planes=('PLAX', 'PSAX-AV', 'PSAX-MV'), neighbours=DEFAULT_NEIGHBOURS, size=128, phase=0.5
):
    """Return a labelled uint8 image: one row per (patient, plane), one column per neighbouring pose.

    Each neighbour is the target pose moved by its action (in the probe frame) and put back in
    contact with the skin. All tiles show the same cardiac ``phase`` (default 0.5: mid-diastole,
    mitral valve open, aortic valve closed).
    """
    import cv2

    from echo_guidance.geometry import action_to_matrix
    from echo_guidance.sim.patient import Patient
    from echo_guidance.sim.probe import ProbeConfig, ProbeRenderer

    if not seeds or not planes or not neighbours:
        raise ValueError('contact sheet needs at least one seed, one plane and one neighbour')
    label_w, header_h = 150, 28
    rows = []
    header = np.zeros((header_h, label_w + size * len(neighbours)), dtype=np.uint8)
    for c, (title, _) in enumerate(neighbours):
        cv2.putText(
            header, title, (label_w + c * size + 4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.38, 255, 1, cv2.LINE_AA
        )
    rows.append(header)
    for seed in seeds:
        patient = Patient.from_seed(seed)
        renderer = ProbeRenderer(patient, ProbeConfig(width=size, height=size))
        time_s = phase * patient.cycle.period_s
        for plane in planes:
            target = patient.standard_plane_pose(plane)
            tiles = []
            for _, action in neighbours:
                pose = target @ action_to_matrix(np.asarray(action, dtype=float))
                if any(action):
                    pose = patient.in_contact(pose)
                tiles.append(renderer.render(pose, time_s))
            label = np.zeros((size, label_w), dtype=np.uint8)
            cv2.putText(
                label,
                patient.patient_id,
                (6, size // 2 - 8),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                255,
                1,
                cv2.LINE_AA,
            )
            cv2.putText(
                label, plane, (6, size // 2 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1, cv2.LINE_AA
            )
            row = np.hstack([label] + tiles)
            row[:, label_w::size] = 60  # thin separators
            rows.append(row)
    return np.vstack(rows)
