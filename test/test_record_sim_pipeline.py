"""Simulated recording feeds the learning pipeline (issue 17, part 3).

``echo-guidance record --profile record_sim`` bags carry what ``dataset build`` needs: TARGET marks from
the simulated sonographer, given only where the probe really is at the virtual patient's plane, and
the plane's true pose declared in the session. Unit tests of the pieces (no ROS), then the whole chain
record_sim → dataset build → train (tiny) → evaluate as real processes, the bag read back with the
independent ``rosbags`` reader.
"""

import json
import pathlib
import sys

import numpy as np
import pytest
import yaml

from echo_guidance.data.dataset import DatasetError, write_dataset
from echo_guidance.data.from_bags import declared_target, no_demonstrations_message, split_recording
from echo_guidance.geometry import action_to_matrix
from echo_guidance.pedal.sonographer import SimulatedSonographer, standard_plane_target
from echo_guidance.recording.recorder import DemonstrationRecorder, RecorderConfig, RecorderError
from echo_guidance.recording.simulated import simulated_patient_session

PLAX = standard_plane_target(0, 'PLAX')


def near(action):
    """The PLAX pose of patient 0 moved by a probe-frame action."""
    return PLAX @ action_to_matrix(np.asarray(action, float))


def sonographer(**kwargs):
    return SimulatedSonographer(lambda plane: standard_plane_target(0, plane), **kwargs)


# --- the simulated sonographer --------------------------------------------------------------------


def test_sonographer_marks_once_per_arrival_at_the_closest_pose():
    s = sonographer()
    s.set_recording(True, 'PLAX', 'bag1')
    approach = [[20, 0, 0, 0, 0, 10], [8, 0, 0, 0, 0, 4], [1.5, 0, 0, 0, 0, 1], [0.5, 0, 0, 0, 0, 0.3]]
    assert [s.on_pose(near(a)) for a in approach] == [None] * 4  # still getting closer
    mark = s.on_pose(near([0.5, 0, 0, 0, 0, 0.3]))  # at rest: the view will not get better
    assert mark is not None and mark.plane == 'PLAX' and mark.translation_mm == pytest.approx(0.5, abs=1e-6)
    assert s.on_pose(near([0.0, 0, 0, 0, 0, 0])) is None  # no second mark before leaving
    assert s.on_pose(near([3.0, 0, 0, 0, 0, 0])) is None  # not far enough to re-arm (6 mm)
    assert s.on_pose(near([0.0, 0, 0, 0, 0, 0])) is None
    s.on_pose(near([0, 0, 0, 0, 0, 7]))  # 7 deg away: re-armed
    assert s.on_pose(near([0.2, 0, 0, 0, 0, 0])) is None
    assert s.on_pose(near([0.4, 0, 0, 0, 0, 0])) is not None  # moved through: marked just past the closest
    assert s.marks == 2


def test_sonographer_never_marks_away_from_the_plane_or_outside_a_recording():
    s = sonographer(tolerance_mm=2.0, tolerance_deg=2.0)
    passes = [near([x, 0, 0, 0, 0, 0]) for x in (30, 20, 10, 2.5, 2.1, 2.5, 10)]  # closest 2.1 mm
    s.set_recording(True, 'PLAX', 'bag1')
    assert all(s.on_pose(T) is None for T in passes)
    s.on_pose(near([10, 0, 0, 0, 0, 0]))
    s.set_recording(False, 'PLAX', 'bag1')
    assert all(s.on_pose(near([x, 0, 0, 0, 0, 0])) is None for x in (1, 0.5, 0.5, 1))
    # The bag's plane decides: at PLAX while PSAX-AV is being recorded is no mark.
    s.set_recording(True, 'PSAX-AV', 'bag2')
    assert all(s.on_pose(T) is None for T in (near([20, 0, 0, 0, 0, 0]), PLAX, PLAX))
    with pytest.raises(ValueError, match='rearm'):
        sonographer(tolerance_mm=5.0, rearm_mm=4.0)


def test_a_bag_that_starts_at_the_plane_is_not_marked_at_once():
    s = sonographer()
    s.set_recording(True, 'PLAX', 'bag1')
    assert s.on_pose(PLAX) is None and s.on_pose(PLAX) is None
    s.on_pose(near([10, 0, 0, 0, 0, 0]))
    s.on_pose(PLAX)
    assert s.on_pose(PLAX) is not None


def test_unknown_planes_give_no_marks_and_say_why():
    s = SimulatedSonographer(lambda plane: (_ for _ in ()).throw(ValueError(f'no plane {plane}')))
    s.set_recording(True, 'PLAX', 'b')
    assert s.on_pose(PLAX) is None and 'no marks' in s.unknown_plane


# --- the declared target ---------------------------------------------------------------------------


def test_each_bag_declares_the_true_pose_of_its_plane(tmp_path):
    config = RecorderConfig(output_dir=str(tmp_path), image_width=8, image_height=8, min_free_bytes=0)
    session = {'target_plane': 'PLAX', 'flange_to_probe': np.eye(4), 'extra_yaml': 'profile: record_sim'}
    recorder = DemonstrationRecorder(config, session, session_hook=simulated_patient_session(0))
    for plane in ('PSAX-MV', 'PLAX'):
        path = recorder.start(1000.0, target_plane=plane)
        recorder.stop(1001.0)
        from echo_guidance.bags import DemonstrationBagReader

        with DemonstrationBagReader(path) as bag:
            info = bag.session_info()
        extra = yaml.safe_load(info['extra_yaml'])
        assert extra['profile'] == 'record_sim' and extra['simulator']['patient_seed'] == 0
        np.testing.assert_allclose(declared_target(info), standard_plane_target(0, plane), atol=1e-5)
        assert info['subject_id'] == extra['simulator']['patient_id']  # the subject is the virtual patient
    bad = DemonstrationRecorder(
        config, {**session, 'extra_yaml': '[a list]'}, session_hook=simulated_patient_session(0)
    )
    with pytest.raises(RecorderError, match='YAML mapping'):
        bad.start(1000.0)
    with pytest.raises(ValueError, match='seed'):
        simulated_patient_session(-1)


def test_no_target_error_says_how_to_fix_it():
    session = {'subject_id': 'S', 'target_plane': 'PLAX', 'extra_yaml': 'profile: record_sim'}
    stamps = np.arange(5) * 10**8
    demos, excluded, _ = split_recording(
        session, stamps, [np.zeros((4, 4), np.uint8)] * 5, [True] * 5, [True] * 5, [np.eye(4)] * 5, []
    )
    assert demos == [] and excluded == {'no_target': 5}
    with pytest.raises(DatasetError) as error:
        write_dataset(demos, '/nonexistent/never-written', exclusions=dict(excluded))
    message = str(error.value)
    fixes = ("pedal's TARGET button", 'target_pose_mm', 'record_sim', 'sim:sonographer', 'sim_patient_seed')
    for fix in fixes:
        assert fix in message, (fix, message)
    assert 'no_target' not in no_demonstrations_message({'invalid_pose': 3}).split('. ')[1]


# --- the whole chain -------------------------------------------------------------------------------


def _cli(processes, name, *args, timeout):
    process = processes.start([sys.executable, '-m', 'echo_guidance.cli', *args], name=name)
    status = process.wait(timeout=timeout)
    assert status == 0, process.output()
    return process.output()


def _pedal_marks(bag):
    from rosbags.highlevel import AnyReader

    with AnyReader([pathlib.Path(bag)]) as reader:
        connections = [c for c in reader.connections if c.topic == '/pedal/event']
        messages = reader.messages(connections)
        return [(stamp, reader.deserialize(raw, c.msgtype).event) for c, stamp, raw in messages]


@pytest.mark.slow
def test_record_sim_bags_go_through_dataset_training_and_evaluation(processes, tmp_path):
    bags = tmp_path / 'bags'
    _cli(
        processes,
        'record',
        'record',
        '--profile',
        'record_sim',
        '--output-dir',
        str(bags),
        '--demonstrations',
        '1',
        '--duration',
        '30',
        timeout=180,
    )
    [bag] = [p for p in bags.iterdir() if p.name != 'logs']
    marks = [stamp for stamp, event in _pedal_marks(bag) if event == 1]  # TARGET_REACHED
    assert marks, 'the simulated sonographer marked no arrival at PLAX (pedal.log says why)'

    data = tmp_path / 'data'
    _cli(processes, 'dataset', 'dataset', 'build', str(bags), '--out', str(data), '--size', '64', timeout=120)
    manifest = json.loads((data / 'manifest.json').read_text())
    assert 'no_target' not in manifest['excluded_frames']
    notes = manifest['sources'][0]['notes']
    assert len(notes) == len(marks) and sum(n['frames'] for n in notes) > 100
    for note in notes:  # each mark is where the probe really was: at the true plane
        assert note['target_source'].startswith('mark')
        assert note['mark_vs_declared_mm'] < 2.0 and note['mark_vs_declared_deg'] < 2.0

    train = tmp_path / 'train'
    _cli(
        processes,
        'train',
        'train',
        'config/train/tiny_test.yaml',
        '--no-progress',
        '--set',
        f'data.dir={data}',
        '--set',
        f'train.out_dir={train}',
        '--set',
        'data.val_split=train',  # one virtual patient: every sample is in the training split
        timeout=180,
    )
    evaluation = tmp_path / 'eval'
    _cli(
        processes,
        'evaluate',
        'evaluate',
        str(train / 'best.pt'),
        '--data',
        str(data),
        '--split',
        'train',
        '--bootstrap',
        '20',
        '--out',
        str(evaluation),
        timeout=180,
    )
    results = json.loads((evaluation / 'results.json').read_text())
    assert results  # Table 1 of the recorded demonstrations
    assert (evaluation / 'results.md').read_text().count('PLAX') >= 1
