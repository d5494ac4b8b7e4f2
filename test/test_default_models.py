"""The default guidance models in the repository: checksums, training configs, what they load as, and use."""

import numpy as np
import pytest
import yaml

from echo_guidance.guidance.default_models import (
    CHECKSUMS,
    DefaultModelError,
    default_model_paths,
    models_dir,
    recorded_checksums,
    resolve_model_paths,
    verify,
)
from echo_guidance.resources import file_sha256


def test_the_files_match_their_recorded_checksums():
    folder = models_dir()
    sums = recorded_checksums(folder)
    assert set(sums) == {'coarse.onnx', 'fine.onnx'}
    for name, digest in sums.items():
        assert file_sha256(folder / name) == digest, f'{name} differs from {CHECKSUMS}'
        assert (folder / name).stat().st_size < 20 * 1024 * 1024  # what git may hold
    assert verify() == list(default_model_paths())


def test_a_changed_file_is_refused(tmp_path):
    import shutil

    for name in ('coarse.onnx', 'fine.onnx', CHECKSUMS):
        shutil.copyfile(models_dir() / name, tmp_path / name)
    with open(tmp_path / 'fine.onnx', 'ab') as handle:
        handle.write(b'\0')
    with pytest.raises(DefaultModelError, match='fine.onnx does not match its recorded checksum'):
        verify(tmp_path)


def test_the_models_are_what_their_configs_say_and_answer_every_plane():
    from echo_guidance.guidance.backends import load_backend

    coarse, fine = default_model_paths()
    assert resolve_model_paths('default') == (str(coarse), str(fine))
    assert resolve_model_paths('default', '/x/fine.onnx') == (str(coarse), '/x/fine.onnx')
    assert resolve_model_paths('/x/m.onnx') == ('/x/m.onnx', None)
    for path, config in ((coarse, 'default_coarse.yaml'), (fine, 'default_fine.yaml')):
        trained = yaml.safe_load((models_dir() / config).read_text())['model']
        backend = load_backend(path, 'onnxruntime-cpu', threads=1)
        assert backend.outputs == ('action', 'distance')
        assert backend.input_size == trained['input_size']
        assert backend.model_config['encoder'] == trained['encoder']
        assert backend.planes == ('PLAX', 'PSAX-AV', 'PSAX-MV')
        frame = np.full((backend.input_size, backend.input_size), 60, np.uint8)
        for index in range(3):
            out = backend.predict_all(frame, index)
            assert np.all(np.isfinite(out['action'])) and out['distance'] >= 0


def test_the_default_policy_runs_the_stack_of_the_guidance_node(tmp_path):
    from echo_guidance.closed_loop.policies import parse_policy
    from echo_guidance.sim import Patient, ProbeConfig, ProbeRenderer

    name, factory = parse_policy('default')
    assert name == 'default' and 'coarse-to-fine' in factory.describe()
    patient = Patient.from_seed(2)  # a test-split patient
    target = patient.standard_plane_pose('PSAX-MV')
    policy = factory('PSAX-MV', target)
    renderer = ProbeRenderer(patient, ProbeConfig())
    answer = policy(renderer.render(target, 0.3), target, 0.0)
    assert answer.valid and answer.stage == 'coarse' and np.isfinite(answer.distance)
    # At the plane the coarse model's own answer is small, far from it large.
    assert np.linalg.norm(answer.action[:3]) < 15.0
