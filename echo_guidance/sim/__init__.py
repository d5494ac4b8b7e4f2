"""The virtual patient: a beating heart in a chest, a sector probe, standard planes, demonstrations.

A parametric heart (four chambers, valves, great vessels, pericardium) in a chest with ribs and
lungs, a phased-array probe that renders B-mode frames and label images at any pose, the standard
planes' probe poses and expert-like demonstrations written as bags (docs/simulator.md).
"""

from echo_guidance.sim.anatomy import PatientParameters
from echo_guidance.sim.cardiac import CardiacCycle
from echo_guidance.sim.patient import DEFAULT_T_BASE_PATIENT, SIM_PLANES, Patient, patient_id_for_seed
from echo_guidance.sim.probe import (
    Annotations,
    InvalidProbeConfigError,
    ProbeConfig,
    ProbeRenderer,
    bounding_boxes,
)
from echo_guidance.sim.structures import Structure

__all__ = [
    'Annotations',
    'CardiacCycle',
    'DEFAULT_T_BASE_PATIENT',
    'InvalidProbeConfigError',
    'Patient',
    'PatientParameters',
    'ProbeConfig',
    'ProbeRenderer',
    'SIM_PLANES',
    'Structure',
    'bounding_boxes',
    'patient_id_for_seed',
]
