"""Known guidance on simulated frames: the display's test cases and the screenshot in docs/guidance.md.

The probe is put at a known offset from a standard plane of a virtual patient: with T* the plane's
pose and ``offset`` the action wanted, the probe pose is T = T* · U(offset)⁻¹, so the ground-truth
guidance â = U⁻¹(T⁻¹ · T*) equals ``offset`` (e.g. offset x = +10 mm: the target lies 10 mm toward
image right, and the arrow must point right). The pose is then slid along the beam onto the skin
(``Patient.in_contact``, as the simulated demonstrations do; a probe in the air images nothing), which
changes mostly z; the guidance shown is the ground truth from that final pose, and the frame is
rendered there. With a model, the
guidance node's engine runs instead on a short simulated hold at that pose, so the page shows real
model output (fused, with its confidence).
"""

import numpy as np

from echo_guidance.geometry import action_to_matrix, invert_transform, relative_action


def probe_pose_for_offset(target_pose_mm, offset):
    """The probe pose from which the guidance toward ``target_pose_mm`` is exactly ``offset``."""
    return np.asarray(target_pose_mm, dtype=float) @ invert_transform(
        action_to_matrix(np.asarray(offset, float))
    )


def simulated_example(
    seed=0,
    plane='PLAX',
    offset=(8.0, -4.0, -2.0, 6.0, 10.0, -12.0),
    size=256,
    time_s=0.2,
    stamp_ns=1_000_000_000,
    model=None,
    backend='onnxruntime-cpu',
):
    """Return (frame uint8 (size, size), guidance dict for DisplayState.update_guidance).

    Without ``model`` the guidance is the ground truth (confidence 1, model_id says so). With a model
    file, the guidance engine runs on 30 frames rendered at the pose (a 1 s hold, heart beating) and
    the last result is shown.
    """
    from echo_guidance.sim import Patient, ProbeConfig, ProbeRenderer

    patient = Patient.from_seed(int(seed))
    target = patient.standard_plane_pose(plane)
    pose = patient.in_contact(probe_pose_for_offset(target, offset))
    renderer = ProbeRenderer(patient, ProbeConfig(width=size, height=size))
    frame = renderer.render(pose, time_s)
    truth = relative_action(pose, target)
    guidance = {
        'stamp_ns': int(stamp_ns),
        'frame_id': 'probe',
        'target_plane': plane,
        'valid': True,
        'status': '',
        'action': [float(v) for v in truth],
        'axis_confidence': [1.0] * 6,
        'confidence': 1.0,
        'plane_reached': False,
        'model_id': 'ground truth (simulator)',
    }
    if model is not None:
        from echo_guidance.guidance import GuidanceEngine, load_backend

        engine = GuidanceEngine(load_backend(model, backend), plane)
        for k in range(30):
            t = time_s + k / 30.0
            frame = renderer.render(pose, t)
            result = engine.step(frame, pose, t)
        guidance.update(
            {
                key: value
                for key, value in result.as_dict().items()
                if key
                in ('valid', 'status', 'action', 'axis_confidence', 'confidence', 'plane_reached', 'model_id')
            }
        )
        guidance['target_plane'] = plane
    return frame, guidance
