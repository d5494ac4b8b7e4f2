"""Tests of the dataset builder on real demonstration bags written with DemonstrationBagWriter.

The bags are small but complete: frames rendered from the probe pose, raw probe poses at 200 Hz,
one synced pose per frame (some flagged invalid, one missing), pedal marks and recording windows.
"""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from echo_guidance.data.dataset import GuidanceDataset
from echo_guidance.data.from_bags import (
    RECORD_START,
    RECORD_STOP,
    TARGET_REACHED,
    BagDataError,
    find_bags,
    read_bag_demonstrations,
)
from echo_guidance.data.synthetic import render_scatterers

REPO = pathlib.Path(__file__).resolve().parent.parent
FRAME_HZ, POSE_HZ = 10, 200
NS = 1_000_000_000


def _pose(xyz, rpy):
    from echo_guidance.geometry import action_to_matrix

    return action_to_matrix(np.array(list(xyz) + list(rpy), dtype=np.float64))


def write_bag(
    path,
    subject,
    plane,
    frames=20,
    mark_after=None,
    invalid=(),
    missing=(),
    windows=None,
    declared=None,
    seed=0,
):
    """A demonstration bag; returns (target pose, frame stamps ns, frame poses)."""
    from echo_guidance.bags import DemonstrationBagWriter

    rng = np.random.default_rng(seed)
    points = rng.normal(0, 25, (80, 3)) + [0, 0, -30]
    target = _pose((0, -20, -80), (0, 0, 30))
    start = rng.uniform(-15, 15, 6)
    t0 = 5 * NS
    duration = frames / FRAME_HZ
    stamps_pose = t0 + (np.arange(int(duration * POSE_HZ) + 2) * NS // POSE_HZ)

    def pose_at(stamp):
        frac = max(0.0, 1.0 - (stamp - t0) / (duration * 0.8 * NS))  # reaches the target at 80 %
        return target @ _pose(start[:3] * frac, start[3:] * frac)

    session = {
        'subject_id': subject,
        'target_plane': plane,
        'width': 72,
        'height': 60,
        'flange_to_probe': np.eye(4),
        'extra_yaml': {'simulator_seed': seed},
    }
    if declared is not None:
        # As the simulator writes it: under simulator:, with the subject's split.
        session['extra_yaml']['simulator'] = {'target_pose_mm': declared.tolist(), 'split': 'val'}
    frame_stamps = t0 + NS // (2 * POSE_HZ) + np.arange(frames) * (NS // FRAME_HZ) + 1
    poses = []
    with DemonstrationBagWriter(path, session) as bag:
        events = []
        if mark_after is not None:
            events.append((int(frame_stamps[mark_after] + NS // (4 * POSE_HZ)), TARGET_REACHED))
        for w0, w1 in windows or []:
            events += [(int(frame_stamps[w0] - 1), RECORD_START), (int(frame_stamps[w1] + 1), RECORD_STOP)]
        items = [('pose', int(s)) for s in stamps_pose] + [('frame', int(s)) for s in frame_stamps]
        items += [('pedal', e) for e in events]
        items.sort(key=lambda it: it[1] if it[0] != 'pedal' else it[1][0])
        k = 0
        for kind, value in items:
            if kind == 'pose':
                bag.write_probe_pose(pose_at(value), value)
            elif kind == 'pedal':
                bag.write_pedal_event(value[1], value[0], source='test')
            else:
                T = pose_at(value)
                poses.append(T)
                bag.write_image(np.pad(render_scatterers(points, T, 60), ((0, 0), (0, 12))), value)  # 60 x 72
                if k in missing:
                    pass
                elif k in invalid:
                    bag.write_synced_pose(None, value, False, 0.2, -1.0)
                else:
                    bag.write_synced_pose(T, value, True, 0.002, 0.003)
                k += 1
    return target, frame_stamps, np.array(poses)


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp('bags')
    info = {}
    info['marked'] = write_bag(
        root / 'p01_plax', 'p01', 'PLAX', frames=20, mark_after=17, invalid=(3, 4), missing=(7,), seed=1
    )
    info['windowed'] = write_bag(
        root / 'p02_psaxav',
        'p02',
        'PSAX-AV',
        frames=20,
        windows=[(2, 11)],
        declared=_pose((1, 2, 3), (4, 5, 6)),
        seed=2,
    )
    info['a4c'] = write_bag(root / 'p03_a4c', 'p03', 'A4C', frames=6, mark_after=5, seed=3)
    info['p04'] = write_bag(root / 'p04_psaxmv', 'p04', 'PSAX-MV', frames=12, mark_after=11, seed=4)
    return root, info


def test_marked_bag_excludes_and_targets(bags):
    from echo_guidance.geometry import geodesic_rotation_error_deg, translation_error_mm

    root, info = bags
    demos, excluded, summary = read_bag_demonstrations(root / 'p01_plax', size=32)
    assert len(demos) == 1
    demo = demos[0]
    # 20 frames: 2 after the mark (18, 19), 2 invalid, 1 without a synced pose.
    assert dict(excluded) == {'after_target': 2, 'invalid_pose': 2, 'no_synced_pose': 1}
    assert len(demo.frames) == 20 - 2 - 2 - 1
    assert demo.frames[0].shape == (32, 32) and demo.subject == 'p01' and demo.plane == 'PLAX'
    target = info['marked'][0]
    # The mark falls after the pose reached the target: its interpolated pose is the target.
    assert translation_error_mm(demo.target_pose, target) < 1e-6
    assert geodesic_rotation_error_deg(demo.target_pose, target) < 1e-4
    assert demo.target_source.startswith('mark')
    kept = [i for i in range(18) if i not in (3, 4, 7)]
    assert np.allclose(demo.poses, info['marked'][2][kept], atol=1e-6)
    assert summary['excluded'] == dict(excluded)


def test_recording_window_and_declared_target(bags):
    root, info = bags
    demos, excluded, _ = read_bag_demonstrations(root / 'p02_psaxav', size=32)
    assert len(demos) == 1 and len(demos[0].frames) == 10  # frames 2..11
    assert dict(excluded) == {'outside_recording': 10}
    assert np.allclose(demos[0].target_pose, _pose((1, 2, 3), (4, 5, 6)))
    assert demos[0].target_source == 'declared'
    with pytest.raises(ValueError, match='target_source'):
        read_bag_demonstrations(root / 'p02_psaxav', size=32, target_source='guess')
    demos, excluded, _ = read_bag_demonstrations(root / 'p02_psaxav', size=32, target_source='mark')
    assert demos == [] and excluded['no_target'] == 10


def test_segmentation_plane_sessions_are_skipped(bags):
    root, _ = bags
    demos, excluded, _ = read_bag_demonstrations(root / 'p03_a4c', size=32)
    assert demos == [] and dict(excluded) == {'not_guidance_plane': 6}


def test_build_command_end_to_end(bags, tmp_path):
    root, _ = bags
    out = tmp_path / 'ds'
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'echo_guidance.cli',
            'dataset',
            'build',
            str(root),
            '--out',
            str(out),
            '--size',
            '32',
            '--subject-split',
            'p04=test',
            '--declared-splits',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    ds = GuidanceDataset(out)
    m = ds.manifest
    assert m['excluded_frames'] == {
        'after_target': 2,
        'invalid_pose': 2,
        'no_synced_pose': 1,
        'outside_recording': 10,
        'not_guidance_plane': 6,
    }
    assert m['splits']['test']['subjects'] == ['p04']
    assert m['splits']['val']['subjects'] == ['p02']  # declared by its session
    assert sum(m['splits'][s]['samples'] for s in ('train', 'val', 'test')) == 15 + 10 + 12
    assert len(m['sources']) == 4
    info = subprocess.run(
        [sys.executable, '-m', 'echo_guidance.cli', 'dataset', 'info', str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert 'excluded frames' in info.stdout
    bench = subprocess.run(
        [
            sys.executable,
            '-m',
            'echo_guidance.cli',
            'dataset',
            'bench',
            str(out),
            '--split',
            'test',
            '--batch-size',
            '4',
            '--batches',
            '5',
            '--workers',
            '0',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)['samples_per_s'] > 0


def test_corrupt_and_empty_inputs(bags, tmp_path):
    import shutil

    root, _ = bags
    broken = tmp_path / 'broken'
    shutil.copytree(root / 'p04_psaxmv', broken)
    mcap = next(broken.glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 3])
    with pytest.raises(BagDataError, match=r'cannot read bag .*broken'):
        read_bag_demonstrations(broken, size=32)
    (tmp_path / 'nothing').mkdir()
    with pytest.raises(BagDataError, match='no bags'):
        find_bags([tmp_path / 'nothing'])
    with pytest.raises(BagDataError, match='does not exist'):
        find_bags([tmp_path / 'missing'])
    out = tmp_path / 'ds'
    proc = subprocess.run(
        [sys.executable, '-m', 'echo_guidance.cli', 'dataset', 'build', str(broken), '--out', str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and 'cannot read bag' in proc.stderr


def test_unknown_session_plane_is_an_error():
    from echo_guidance.data.from_bags import split_recording

    eye = np.eye(4)[None]
    with pytest.raises(BagDataError, match="unknown target plane 'A2C'"):
        split_recording(
            {'subject_id': 's', 'target_plane': 'A2C'},
            [0],
            [np.zeros((4, 4), np.uint8)],
            [True],
            [True],
            eye,
            [],
            source='x',
        )
