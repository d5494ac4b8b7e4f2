"""Expert-like demonstrations: trajectories, recorded bags, determinism, splits and the sim CLI."""

import math

import numpy as np
import pytest
import yaml

from echo_guidance.bags import DemonstrationBagReader
from echo_guidance.cli import main as cli_main
from echo_guidance.geometry import geodesic_rotation_error_deg, translation_error_mm
from echo_guidance.planes import UnknownPlaneError
from echo_guidance.sim import Patient, ProbeConfig, ProbeRenderer
from echo_guidance.sim.demonstrations import (
    TARGET_REACHED,
    DemoConfig,
    demo_rng,
    make_demonstration,
    plan_trajectory,
    record,
    write_bag,
)
from echo_guidance.sim.splits import SPLITS, seeds_for_split, split_of_seed

SMALL = ProbeConfig(width=64, height=64)


@pytest.fixture(scope='module')
def patient():
    return Patient.from_seed(2)


def _errors(poses, target):
    return translation_error_mm(poses, target[None]), geodesic_rotation_error_deg(poses, target[None])


@pytest.mark.parametrize('plane', ['PLAX', 'PSAX-AV', 'PSAX-MV'])
@pytest.mark.parametrize('demo', range(4))
def test_trajectory_ends_at_the_target_and_holds(patient, plane, demo):
    traj = plan_trajectory(patient, plane, demo_rng(patient.seed, plane, demo))
    target = patient.standard_plane_pose(plane)
    np.testing.assert_allclose(traj.target, target)
    t = np.arange(0.0, traj.duration, 0.001)
    poses = traj.pose_at(t)
    mm, deg = _errors(poses, target)
    # Starts away from the target (within the documented range), ends on it and holds.
    assert mm[0] > 1.0 or deg[0] > 1.0
    assert mm[0] < 80.0 and deg[0] < 60.0
    held = t >= traj.reach_time
    assert held.any() and traj.mark_time >= traj.reach_time + 0.25
    assert traj.duration >= traj.mark_time + 0.5
    assert mm[held].max() < 0.5 and deg[held].max() < 0.5
    # Smooth: no jumps between 1 ms samples, bounded speed.
    step = translation_error_mm(poses[1:], poses[:-1])
    assert step.max() < 0.25
    assert np.percentile(step, 99) / 0.001 < 150.0
    # Slowing down: the final correction (made after the previous move ended) is slower than the fastest move.
    rot_step = geodesic_rotation_error_deg(poses[1:], poses[:-1])
    speed = (step + rot_step) / 0.001
    last = (t[1:] >= traj.move_start[-1]) & (t[1:] <= traj.move_end[-1])
    assert speed[last].max() < 0.6 * speed.max()


def test_trajectories_overshoot_and_correct(patient):
    """Human-like: at least one axis crosses zero (passes the target) before settling, in most demos."""
    crossings = 0
    for demo in range(10):
        traj = plan_trajectory(patient, 'PLAX', demo_rng(patient.seed, 'PLAX', demo))
        t = np.arange(0.0, traj.reach_time - 0.05, 0.01)
        offsets = traj.offset_at(t, tremor=False)
        signs = np.sign(offsets[np.abs(offsets).max(axis=1) > 1e-6])
        crossings += bool((np.diff(signs, axis=0) != 0).any())
        assert len(traj.move_start) >= 3  # exploration, approach, correction(s)
    assert crossings >= 8


def test_start_offsets_follow_the_config(patient):
    cfg = DemoConfig(max_start_offset_mm=5.0, max_start_offset_deg=5.0, max_start_depth_mm=1.0)
    for demo in range(5):
        traj = plan_trajectory(patient, 'PSAX-AV', demo_rng(patient.seed, 'PSAX-AV', demo), cfg)
        mm, deg = _errors(traj.pose_at([0.0], tremor=False), traj.target)
        assert deg[0] <= math.sqrt(3) * 5.0 + 0.1
        assert mm[0] < 20.0


@pytest.mark.parametrize(
    'kwargs, field',
    [
        ({'frame_rate_hz': 0.0}, 'frame_rate_hz'),
        ({'latency_s': -0.1}, 'latency_s'),
        ({'frame_jitter_s': 0.02}, 'frame_jitter_s'),
        ({'reaction_s': (0.5, 0.1)}, 'reaction_s'),
        ({'max_start_offset_deg': 120.0}, 'max_start_offset_deg'),
    ],
)
def test_invalid_demo_settings(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DemoConfig(**kwargs)


def test_unknown_plane_in_demo(patient):
    with pytest.raises(UnknownPlaneError):
        plan_trajectory(patient, 'SUBCOSTAL', demo_rng(patient.seed, 'PLAX', 0))


def test_written_bag_reads_back_what_was_recorded(patient, tmp_path):
    cfg = DemoConfig(latency_s=0.12)
    rng = demo_rng(patient.seed, 'PSAX-MV', 0)
    traj = plan_trajectory(patient, 'PSAX-MV', rng, cfg)
    rec = record(patient, traj, ProbeRenderer(patient, SMALL), rng, cfg)
    epoch = 1_800_000_000 * 10**9
    session = {
        'target_plane': 'PSAX-MV',
        'width': 64,
        'height': 64,
        'flange_to_probe': np.eye(4),
        'subject_id': patient.patient_id,
        'image_latency': cfg.latency_s,
        'extra_yaml': {'simulator': {'patient_seed': patient.seed}},
    }
    write_bag(tmp_path / 'bag', rec, session, epoch)

    with DemonstrationBagReader(tmp_path / 'bag') as bag:
        info = bag.session_info()
        frames = bag.frames()
        poses = bag.probe_poses()
        synced = bag.synced_poses()
        pedal = bag.pedal_events()
        image_log_times = [r.log_time_ns for r in bag.iter_messages(['/us/image'])]
    assert info['subject_id'] == patient.patient_id and info['target_plane'] == 'PSAX-MV'
    assert info['extra']['simulator']['patient_seed'] == patient.seed
    np.testing.assert_array_equal(frames.images, rec.frames)
    expected_stamps = epoch + np.round(rec.frame_times * 1e9).astype(np.int64)
    np.testing.assert_array_equal(frames.stamps_ns, expected_stamps)
    # The recorder logged each frame one device latency after its acquisition (header stamp).
    delay = (np.array(image_log_times) - frames.stamps_ns) / 1e9
    assert np.all(delay >= cfg.latency_s) and np.all(delay < cfg.latency_s + 0.02)
    # 1 kHz poses, as written (mm <-> m and quaternion round trip).
    assert len(poses.poses_mm) == len(rec.poses)
    np.testing.assert_allclose(poses.poses_mm, rec.poses, atol=1e-6)
    period = np.diff(poses.stamps_ns) / 1e9
    assert 0.0009 < period.mean() < 0.0011
    # One synced pose per frame, same stamp, close to the pose the frame was rendered at.
    np.testing.assert_array_equal(synced.stamps_ns, frames.stamps_ns)
    assert synced.valid.all()
    assert translation_error_mm(synced.poses_mm, rec.true_frame_poses).max() < 0.5
    assert geodesic_rotation_error_deg(synced.poses_mm, rec.true_frame_poses).max() < 0.5
    # The pedal mark, after the probe reached the target.
    assert len(pedal) == 1 and pedal[0]['event'] == TARGET_REACHED
    assert (pedal[0]['stamp_ns'] - epoch) / 1e9 >= traj.reach_time
    # Frame timing: ~30 fps with jitter.
    intervals = np.diff(rec.frame_times)
    assert 0.030 < intervals.mean() < 0.037 and intervals.std() > 0.0005


def test_demonstrations_are_deterministic(patient, tmp_path):
    results = [
        make_demonstration(patient, 'PLAX', tmp_path / name, demo_index=1, probe_config=SMALL)
        for name in ('a', 'b')
    ]
    assert results[0].frames == results[1].frames
    assert results[0].final_error_mm < 0.5 and results[0].final_error_deg < 0.5
    with DemonstrationBagReader(tmp_path / 'a') as a, DemonstrationBagReader(tmp_path / 'b') as b:
        np.testing.assert_array_equal(a.frames().images, b.frames().images)
        np.testing.assert_array_equal(a.probe_poses().poses_mm, b.probe_poses().poses_mm)
        assert a.session_info()['extra'] == b.session_info()['extra']
    other = make_demonstration(patient, 'PLAX', tmp_path / 'c', demo_index=2, probe_config=SMALL)
    assert other.start_offset_mm != results[0].start_offset_mm


def test_splits_are_disjoint_deterministic_and_balanced():
    firsts = {split: seeds_for_split(split, 50) for split in SPLITS}
    assert not set(firsts['train']) & set(firsts['val'])
    assert not set(firsts['train']) & set(firsts['test'])
    assert not set(firsts['val']) & set(firsts['test'])
    assert firsts == {split: seeds_for_split(split, 50) for split in SPLITS}
    counts = {s: 0 for s in SPLITS}
    for seed in range(3000):
        counts[split_of_seed(seed)] += 1
    assert abs(counts['train'] / 3000 - 0.70) < 0.03 and abs(counts['test'] / 3000 - 0.15) < 0.03
    assert seeds_for_split('val', 3, first_seed=firsts['val'][1]) == firsts['val'][1:4]
    with pytest.raises(ValueError, match='split'):
        seeds_for_split('holdout', 3)
    with pytest.raises(ValueError, match='seed'):
        split_of_seed(-4)


def test_cli_demos_writes_bags_and_manifest(tmp_path, capsys):
    out = tmp_path / 'demos'
    args = [
        'sim',
        'demos',
        '--patients',
        '1',
        '--out',
        str(out),
        '--planes',
        'PSAX-AV',
        '--size',
        '48x48',
        '--split',
        'val',
        '--latency-ms',
        '50',
    ]
    assert cli_main(args) == 0
    manifest = yaml.safe_load((out / 'manifest.yaml').read_text())
    assert len(manifest['bags']) == 1
    entry = manifest['bags'][0]
    assert entry['split'] == 'val' and entry['plane'] == 'PSAX-AV'
    assert split_of_seed(entry['seed']) == 'val'
    with DemonstrationBagReader(out / entry['path']) as bag:
        info = bag.session_info()
        assert (info['width'], info['height']) == (48, 48)
        assert info['image_latency'] == pytest.approx(0.05)
        assert info['subject_id'] == entry['patient_id']
    # Existing bags are never overwritten silently.
    assert cli_main(args) == 2
    assert 'exist' in capsys.readouterr().err
    assert cli_main(args + ['--skip-existing']) == 0


def test_cli_bench_and_sheet(tmp_path, capsys):
    assert cli_main(['sim', 'bench', '--sizes', '64x64,80', '--seconds', '0.2']) == 0
    out = capsys.readouterr().out
    assert '64x64: ' in out and '80x80: ' in out and 'frames/s' in out
    sheet = tmp_path / 'sheet.png'
    assert (
        cli_main(['sim', 'sheet', '--out', str(sheet), '--seeds', '0', '--planes', 'PLAX', '--size', '64'])
        == 0
    )
    import cv2

    image = cv2.imread(str(sheet), cv2.IMREAD_GRAYSCALE)
    assert image is not None and image.shape[0] > 64 and image.max() > 100
    with pytest.raises(SystemExit):
        cli_main(['sim', 'bench', '--sizes', 'big'])
