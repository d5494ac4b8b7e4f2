"""Tests of the dataset format, the subject split and the batch loader (frames and world-model pairs)."""

import json

import numpy as np
import pytest
from learning_helpers import make_synthetic_dataset, synthetic_dataset  # noqa: F401 (fixture)

from echo_guidance.data.dataset import (
    DatasetError,
    Demonstration,
    GuidanceDataset,
    assign_splits,
    write_dataset,
)
from echo_guidance.data.loader import EpochBatchSampler, GuidanceBatches, make_loader


def test_split_is_by_subject_and_actions_point_at_the_target(synthetic_dataset):  # noqa: F811
    from echo_guidance.geometry import relative_action

    ds = GuidanceDataset(synthetic_dataset)
    m = ds.manifest
    subjects = {split: set(m['splits'][split]['subjects']) for split in ('train', 'val', 'test')}
    assert subjects['train'] and subjects['val'] and subjects['test']
    assert not (
        subjects['train'] & subjects['val']
        or subjects['train'] & subjects['test']
        or subjects['val'] & subjects['test']
    )
    for split in ('train', 'val', 'test'):
        arrays = ds.split(split)
        assert arrays['frames'].dtype == np.uint8 and arrays['frames'].shape[1:] == (64, 64)
        assert len(arrays['frames']) == m['splits'][split]['samples']
        for s in np.unique(arrays['subject']):
            assert m['subjects'][s] in subjects[split]
    # â_t = U⁻¹(T_t⁻¹ T*): T_t · U(â_t) is the same target for every frame of a demonstration.
    from echo_guidance.geometry import action_to_matrix

    arrays = ds.split('train')
    demo0 = arrays['demo'] == arrays['demo'][0]
    targets = arrays['poses'][demo0] @ action_to_matrix(arrays['actions'][demo0].astype(np.float64))
    assert np.abs(targets - targets[0]).max() < 1e-2
    last = np.flatnonzero(demo0)[-1]  # the synthetic demonstration ends on the target
    assert np.abs(arrays['actions'][last]).max() < 1e-3
    assert np.allclose(relative_action(arrays['poses'][0], targets[0]), arrays['actions'][0], atol=1e-3)
    stats = m['train_stats']
    assert 0 < stats['pixel_mean'] < 1 and len(stats['action_scale']) == 6


def test_assign_splits_properties():
    subjects = [f's{i}' for i in range(20)]
    a = assign_splits(subjects, (0.7, 0.15, 0.15), seed=1)
    assert a == assign_splits(list(reversed(subjects)), (0.7, 0.15, 0.15), seed=1)
    counts = {s: list(a.values()).count(s) for s in ('train', 'val', 'test')}
    assert counts == {'train': 14, 'val': 3, 'test': 3}
    assert assign_splits(['a', 'b', 'c'], seed=0, fixed={'a': 'test'})['a'] == 'test'
    three = assign_splits(['a', 'b', 'c'])
    assert sorted(three.values()) == ['test', 'train', 'val']
    assert set(assign_splits(['only'])).issubset({'only'}) and assign_splits(['only'])['only'] == 'train'
    with pytest.raises(DatasetError, match='unknown split'):
        assign_splits(['a'], fixed={'a': 'holdout'})


def test_loader_batches_and_world_model_pairs(synthetic_dataset):  # noqa: F811
    from echo_guidance.geometry import relative_action

    batches = GuidanceBatches(synthetic_dataset, 'train', pairs=True)
    arrays = GuidanceDataset(synthetic_dataset).split('train')
    idx = list(range(0, len(batches), 5))
    batch = batches[idx]
    assert batch['image'].shape == (len(idx), 1, 64, 64) and str(batch['image'].dtype) == 'torch.uint8'
    i1, i2 = batch['index'].numpy(), batch['index_t2'].numpy()
    assert np.all(i1 != i2)
    assert np.all(arrays['demo'][i1] == arrays['demo'][i2])  # pairs never cross demonstrations
    assert np.allclose(
        batch['motion'].numpy(), relative_action(arrays['poses'][i1], arrays['poses'][i2]), atol=1e-3
    )
    assert np.allclose(batch['action_t2'].numpy(), arrays['actions'][i2])
    # Eq. 2 weights: N / (D · |d|) averages to 1 over the split.
    assert batches.weight.mean() == pytest.approx(1.0)
    resized = GuidanceBatches(synthetic_dataset, 'train', size=32)[[0, 1]]
    assert resized['image'].shape == (2, 1, 32, 32)


def test_max_pair_gap_limits_partners(synthetic_dataset):  # noqa: F811
    batches = GuidanceBatches(synthetic_dataset, 'train', pairs=True, max_pair_gap_s=0.25)
    stamps = GuidanceDataset(synthetic_dataset).split('train')['stamps']
    batch = batches[list(range(len(batches)))]
    gaps = np.abs(stamps[batch['index'].numpy()] - stamps[batch['index_t2'].numpy()])
    assert gaps.max() <= 0.25 + 1e-9


def test_sampler_shards_ranks_disjointly_and_reproducibly():
    ranks = [list(EpochBatchSampler(50, 4, rank=r, world_size=2, seed=3)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 6
    flat = [i for r in ranks for b in r for i in b]
    assert len(flat) == len(set(flat)) == 48
    assert ranks[0] == list(EpochBatchSampler(50, 4, rank=0, world_size=2, seed=3))
    s = EpochBatchSampler(50, 4, seed=3)
    s.set_epoch(1)
    assert list(s) != list(EpochBatchSampler(50, 4, seed=3))


def test_make_loader_feeds_batches(synthetic_dataset):  # noqa: F811
    loader, sampler, _ = make_loader(synthetic_dataset, 'train', 8, pairs=True, num_workers=0)
    batches = list(loader)
    assert len(batches) == len(sampler) > 0
    assert all(b['image'].shape[0] == 8 for b in batches)
    with pytest.raises(DatasetError, match='fewer than one global batch'):
        make_loader(synthetic_dataset, 'val', 10_000, num_workers=0)


def test_dataset_errors(tmp_path, synthetic_dataset):  # noqa: F811
    with pytest.raises(DatasetError, match='no manifest.json'):
        GuidanceDataset(tmp_path)
    with pytest.raises(DatasetError, match='not empty'):
        make_synthetic_dataset(synthetic_dataset)
    with pytest.raises(DatasetError, match='no usable demonstrations'):
        write_dataset([], tmp_path / 'empty')
    with pytest.raises(DatasetError, match='unknown split'):
        GuidanceDataset(synthetic_dataset).split('holdout')
    bad = tmp_path / 'bad'
    bad.mkdir()
    (bad / 'manifest.json').write_text(json.dumps({'format': 'something-else'}))
    with pytest.raises(DatasetError, match='format'):
        GuidanceDataset(bad)
    eye = np.eye(4)
    with pytest.raises(DatasetError, match='2 frames but stamps'):
        Demonstration(
            frames=np.zeros((2, 8, 8), np.uint8),
            stamps=[0.0],
            poses=[eye, eye],
            target_pose=eye,
            subject='s',
            plane='PLAX',
        )
    with pytest.raises(ValueError, match="unknown target plane 'A2C'"):
        Demonstration(
            frames=np.zeros((1, 8, 8), np.uint8),
            stamps=[0.0],
            poses=[eye],
            target_pose=eye,
            subject='s',
            plane='A2C',
        )


def test_plane_indices_follow_the_model_query_order(synthetic_dataset):  # noqa: F811
    arrays = GuidanceDataset(synthetic_dataset).split('train')
    reordered = GuidanceBatches(synthetic_dataset, 'train', planes=('PSAX-MV', 'PLAX', 'PSAX-AV'))
    idx = list(range(len(reordered)))
    # Dataset index PLAX 0, PSAX-AV 1, PSAX-MV 2 → model query 1, 2, 0.
    assert np.array_equal(reordered[idx]['plane'].numpy(), np.array([1, 2, 0])[arrays['plane']])
    with pytest.raises(DatasetError, match='plane.*PSAX-AV, PSAX-MV but the model only has queries for PLAX'):
        GuidanceBatches(synthetic_dataset, 'train', planes=('PLAX',))
