"""Training data the simulator labels anywhere: the pose sampler and `dataset sample | merge | dagger`."""

import json
import subprocess
import sys

import numpy as np
import pytest

from echo_guidance.data.dataset import DatasetError, GuidanceDataset, merge_datasets, write_dataset
from echo_guidance.geometry import action_to_matrix, plane_distance, relative_action
from echo_guidance.sim import Patient
from echo_guidance.sim.sampler import (
    SamplerConfig,
    SampleRegion,
    sample_pose_near_plane,
    sample_poses,
    sampled_demonstrations,
)


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, '-m', 'echo_guidance.cli', *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


def test_sampled_poses_stay_in_their_region_and_touch_the_skin():
    patient = Patient.from_seed(4)
    target = patient.standard_plane_pose('PSAX-AV')
    rng = np.random.default_rng(0)
    config = SamplerConfig(poses_per_plane=40, regions=(SampleRegion(1, 4, 4, 2), SampleRegion(1, 20, 20, 4)))
    poses, region, times = sample_poses(patient, 'PSAX-AV', rng, config)
    assert poses.shape == (40, 4, 4) and sorted(np.bincount(region)) == [20, 20]
    assert np.all((0 <= times) & (times < config.phase_span_s))
    offsets = relative_action(target, poses)
    limit = np.where(region == 0, 4.0, 20.0)
    assert np.all(np.abs(offsets[:, :3]).max(axis=1) <= limit + 1e-6)
    # Sliding onto the skin keeps the orientation drawn within ±deg (small-angle slack for Euler order).
    assert np.all(np.abs(offsets[:, 3:]).max(axis=1) <= limit * 1.2)
    # In contact: the pose sits on the skin plus the indentation, as the standard poses do.
    for pose in poses[:5]:
        assert np.allclose(patient.in_contact(pose), pose, atol=1e-6)
    # The near region really is near: no pose of it is more than ~1.5 success windows away.
    assert plane_distance(offsets[region == 0]).max() < 1.6


def test_sampler_config_and_region_text_are_checked():
    assert SampleRegion.parse('0.5:6,6,3') == SampleRegion(0.5, 6.0, 6.0, 3.0)
    for text in ('0.5:6,6', 'half:6,6,3', '0.5:6,6,-1', '0.5:6,100,3'):
        with pytest.raises(ValueError, match='sample region'):
            SampleRegion.parse(text)
    config = SamplerConfig(regions=(SampleRegion(3, 1, 1, 1), SampleRegion(1, 2, 2, 2)))
    assert [r.fraction for r in config.regions] == [0.75, 0.25]
    with pytest.raises(ValueError, match='poses_per_plane'):
        SamplerConfig(poses_per_plane=0)
    with pytest.raises(ValueError, match='sum to 0'):
        SamplerConfig(regions=(SampleRegion(0, 1, 1, 1),))
    with pytest.raises(ValueError, match='no pose within'):
        sample_pose_near_plane(Patient.from_seed(1), 'PLAX', np.random.default_rng(0), 5, 5, 0, attempts=0)


def test_sampled_demonstrations_write_a_dataset_whose_labels_point_at_the_plane(tmp_path):
    config = SamplerConfig(poses_per_plane=12, group_size=5)
    demos = list(sampled_demonstrations([1], ['PLAX'], config, render_size=64, base_seed=3))
    assert [len(d.frames) for d in demos] == [5, 5, 2]
    assert demos[0].source == 'sampler:sim-000001:PLAX:0' and demos[0].target_source == 'simulator'
    # Deterministic: the same seeds draw the same poses and render the same frames.
    again = list(sampled_demonstrations([1], ['PLAX'], config, render_size=64, base_seed=3))
    assert np.array_equal(demos[1].poses, again[1].poses)
    assert np.array_equal(demos[1].frames[2], again[1].frames[2])
    assert not np.array_equal(
        demos[0].poses, list(sampled_demonstrations([1], ['PLAX'], config, 64, base_seed=4))[0].poses
    )
    manifest = write_dataset(demos, tmp_path / 'ds', size=48, fixed_splits={'sim-000001': 'train'})
    arrays = GuidanceDataset(tmp_path / 'ds').split('train')
    assert manifest['splits']['train']['samples'] == 12 and arrays['frames'].shape == (12, 48, 48)
    target = Patient.from_seed(1).standard_plane_pose('PLAX')
    reached = arrays['poses'] @ action_to_matrix(arrays['actions'].astype(np.float64))
    assert np.abs(reached - target).max() < 1e-3
    assert arrays['frames'].mean() > 5  # rendered echo, not blank frames


def test_dataset_sample_command_keeps_the_simulator_splits(tmp_path):
    out = tmp_path / 'sampled'
    result = _cli(
        'dataset', 'sample', '--output-dir', out, '--train-patients', 2, '--val-patients', 1,
        '--poses-per-plane', 4, '--planes', 'PLAX,PSAX-MV', '--region', '1:5,5,2', '--size', 32,
        '--render-size', 64, '--no-progress',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['splits']['train']['subjects'] == ['sim-000001', 'sim-000004']  # seed 0 left out
    assert manifest['splits']['val']['subjects'] == ['sim-000003']
    assert manifest['splits']['train']['samples'] == 2 * 2 * 4
    assert manifest['sources'][0]['sampler']['regions'][0]['max_offset_mm'] == 5.0
    bad = _cli('dataset', 'sample', '--output-dir', tmp_path / 'x', '--planes', 'A2C', '--no-progress')
    assert bad.returncode == 1 and 'unknown target plane' in bad.stderr
    bad = _cli('dataset', 'sample', '--output-dir', tmp_path / 'y', '--region', '1:5,5', '--no-progress')
    assert bad.returncode == 1 and 'FRACTION:MM,DEG,DEPTH_MM' in bad.stderr


def test_merge_keeps_every_sample_its_split_and_its_source(tmp_path):
    a = write_dataset(
        sampled_demonstrations([1], ['PLAX'], SamplerConfig(6, group_size=3), 64), tmp_path / 'a', 32,
        fixed_splits={'sim-000001': 'train'},
    )  # fmt: skip
    b = write_dataset(
        sampled_demonstrations([3, 4], ['PSAX-AV'], SamplerConfig(4, group_size=4), 64), tmp_path / 'b', 48,
        fixed_splits={'sim-000003': 'val', 'sim-000004': 'train'},
    )  # fmt: skip
    with pytest.raises(DatasetError, match='different frame sizes'):
        merge_datasets([tmp_path / 'a', tmp_path / 'b'], tmp_path / 'm0')
    merged = merge_datasets([tmp_path / 'a', tmp_path / 'b'], tmp_path / 'm', size=32, labels=['A', 'B'])
    assert merged['splits']['train']['samples'] == 6 + 4 and merged['splits']['val']['samples'] == 4
    assert merged['merged_from'] == ['A', 'B']
    sources = [d['source'] for d in merged['demonstrations']]
    assert sorted(sources) == sorted(d['source'] for d in a['demonstrations'] + b['demonstrations'])
    assert {d['dataset'] for d in merged['demonstrations']} == {'A', 'B'}
    ds = GuidanceDataset(tmp_path / 'm')
    train = ds.split('train')
    subjects = {ds.manifest['subjects'][i] for i in train['subject']}
    assert subjects == {'sim-000001', 'sim-000004'} and train['frames'].shape[1:] == (32, 32)
    original = GuidanceDataset(tmp_path / 'b').split('train')
    assert np.allclose(train['actions'][6:], original['actions'])
    # A subject in two splits cannot be merged.
    write_dataset(
        sampled_demonstrations([1], ['PLAX'], SamplerConfig(2, group_size=2), 64), tmp_path / 'c', 32,
        fixed_splits={'sim-000001': 'test'},
    )  # fmt: skip
    with pytest.raises(DatasetError, match='must stay in one split'):
        merge_datasets([tmp_path / 'a', tmp_path / 'c'], tmp_path / 'm2')


def test_dagger_round_labels_the_visited_poses_and_extends_the_base(tmp_path):
    base = tmp_path / 'base'
    write_dataset(
        sampled_demonstrations([1], ['PLAX'], SamplerConfig(4, group_size=4), 64), base, 32,
        fixed_splits={'sim-000001': 'train'},
    )  # fmt: skip
    out = tmp_path / 'dagger'
    result = _cli(
        'dataset', 'dagger', '--policy', 'noisy=oracle:2,2', '--base', base, '--output-dir', out,
        '--train-patients', 1, '--starts', 1, '--planes', 'PSAX-MV', '--size', 32, '--no-progress',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / 'manifest.json').read_text())
    assert 'dagger: 1 episodes of noisy' in result.stdout
    sources = [d['source'] for d in manifest['demonstrations']]
    assert sources[0] == 'sampler:sim-000001:PLAX:0' and sources[1] == 'dagger:noisy:sim-000001:PSAX-MV:0'
    arrays = GuidanceDataset(out).split('train')
    visited = arrays['demo'] == 1
    assert visited.sum() > 10  # one frame per 0.1 s of the run
    target = Patient.from_seed(1).standard_plane_pose('PSAX-MV')
    reached = arrays['poses'][visited] @ action_to_matrix(arrays['actions'][visited].astype(np.float64))
    assert np.abs(reached - target).max() < 1e-3
