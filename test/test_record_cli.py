"""`echo-guidance bench record` and `echo-guidance record` run end to end (nodes as separate processes)."""

import json
import sys

import pytest

from echo_guidance.bags import DemonstrationBagReader


def test_bench_record_passes_for_five_seconds(processes, tmp_path):
    report = tmp_path / 'report.json'
    bench = processes.start(
        [
            sys.executable,
            '-m',
            'echo_guidance.cli',
            'bench',
            'record',
            '--duration',
            '5',
            '--output-dir',
            str(tmp_path / 'bench'),
            '--json',
            str(report),
        ],
        name='bench',
    )
    status = bench.wait(timeout=150)
    output = bench.output()
    assert status == 0, output
    assert 'result: PASS' in output
    figures = json.loads(report.read_text())
    evaluation = figures['evaluation']
    assert figures['frames_dropped'] == 0 and figures['poses_dropped'] == 0
    assert evaluation['frames_recorded'] >= 120 and evaluation['poses_recorded'] >= 4000
    assert evaluation['translation_error_mm']['max'] < 0.1 and evaluation['rotation_error_deg']['max'] < 0.05
    assert set(figures['cpu']['processes']) >= {'arm_state', 'capture', 'recorder'}


def test_record_command_saves_one_bag_per_demonstration(processes, tmp_path):
    record = processes.start(
        [
            sys.executable,
            '-m',
            'echo_guidance.cli',
            'record',
            '--profile',
            'bench_record',
            '--output-dir',
            str(tmp_path / 'bags'),
            '--demonstrations',
            '2',
            '--duration',
            '1.5',
            '--subject',
            'S-042',
            '--plane',
            'PSAX-MV',
            '--operator',
            'op-3',
        ],
        name='record',
    )
    status = record.wait(timeout=120)
    output = record.output()
    assert status == 0, output
    assert '2 demonstration(s) saved' in output
    assert 'frames' in output and 'poses' in output and 'disk free' in output  # the live status line
    bags = sorted(p for p in (tmp_path / 'bags').iterdir() if p.name != 'logs')
    assert len(bags) == 2
    for bag_path in bags:
        with DemonstrationBagReader(bag_path) as bag:
            session = bag.session_info()
            assert (session['subject_id'], session['target_plane'], session['operator_id']) == (
                'S-042',
                'PSAX-MV',
                'op-3',
            )
            assert bag.message_counts['/us/image'] >= 30
            assert bag.synced_poses().valid.all()


def test_record_refuses_an_unknown_plane_or_profile(processes, tmp_path):
    for args, message in (
        (['--plane', 'A2C'], "unknown target plane 'A2C'"),
        (['--profile', 'nope'], "no record profile 'nope'"),
    ):
        record = processes.start(
            [sys.executable, '-m', 'echo_guidance.cli', 'record', *args, '--output-dir', str(tmp_path)],
            name=f'record-{len(processes.started)}',
        )
        assert record.wait(timeout=60) == 2
        assert message in record.output()


@pytest.mark.slow
def test_record_sim_profile_images_the_virtual_patient_at_the_franky_sim_pose(processes, tmp_path):
    record = processes.start(
        [
            sys.executable,
            '-m',
            'echo_guidance.cli',
            'record',
            '--profile',
            'record_sim',
            '--output-dir',
            str(tmp_path / 'bags'),
            '--demonstrations',
            '1',
            '--duration',
            '6',
        ],
        name='record',
    )
    assert record.wait(timeout=180) == 0, record.output()
    [bag_path] = [p for p in (tmp_path / 'bags').iterdir() if p.name != 'logs']
    with DemonstrationBagReader(bag_path) as bag:
        frames = bag.frames()
        synced = bag.synced_poses()
        poses = bag.probe_poses()
    assert len(frames.images) >= 30 and len(poses.stamps_ns) >= 500
    assert synced.valid.mean() > 0.5
    # The simulated arm went down to the chest (the patient's skin is about 150 mm above base)
    # and the renderer drew tissue there, not an empty sector. The scripted scan slides over the lung
    # now and then (stretches of frames without echo), so most frames of the second half, not the
    # last one, must show tissue.
    assert poses.poses_mm[-1][2, 3] < 200
    late = frames.images[len(frames.images) // 2 :]
    means = [round(float(image.mean()), 1) for image in late]
    assert sum(mean > 5 for mean in means) > 0.5 * len(means), means
