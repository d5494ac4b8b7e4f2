"""Batches for training: single frames (baseline) and within-demonstration pairs (Cardiac Dreamer).

A batch is gathered with one fancy index into the memory-mapped frame array rather than one
``__getitem__`` per sample, so the loader costs a few milliseconds per batch and never starves a
training step (``echo-guidance dataset bench`` measures it). The sampler shards each epoch's
permutation across data-parallel ranks.

Batch keys (tensors): ``image`` uint8 (B, 1, S, S); ``plane`` int64 (B,); ``action`` float32 (B, 6)
â_t1; ``weight`` float32 (B,) the Eq. 2 demonstration-balancing weight N / (D · |d|); for pairs also
``motion`` â(t1→t2), ``action_t2`` â_t2 and, when asked for, ``image_t2``.
"""

import numpy as np
import torch

from echo_guidance.data.dataset import DatasetError, GuidanceDataset
from echo_guidance.planes import GUIDANCE_PLANES


class EpochBatchSampler:
    """Yields lists of sample indices: a seeded permutation per epoch, sharded across ranks.

    Every rank gets the same number of batches (the permutation's tail that does not fill a global
    batch is dropped when ``drop_last``), which data-parallel training needs.
    """

    def __init__(self, n, batch_size, rank=0, world_size=1, seed=0, shuffle=True, drop_last=True):
        """Sample ``n`` items in per-rank batches of ``batch_size``."""
        if n <= 0:
            raise DatasetError('cannot sample batches from an empty split')
        if batch_size <= 0:
            raise DatasetError(f'batch size must be positive, got {batch_size}')
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch = 0

    def set_epoch(self, epoch):
        """Select the permutation of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self):
        """Batches per rank per epoch."""
        global_batch = self.batch_size * self.world_size
        if self.drop_last:
            return self.n // global_batch
        return -(-self.n // global_batch)

    def __iter__(self):
        """Yield this rank's batches of the current epoch."""
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(self.n)
        else:
            order = np.arange(self.n)
        global_batch = self.batch_size * self.world_size
        for b in range(len(self)):
            chunk = order[b * global_batch : (b + 1) * global_batch]
            mine = chunk[self.rank :: self.world_size]
            if len(mine):
                yield mine.tolist()


class GuidanceBatches(torch.utils.data.Dataset):
    """Map-style dataset whose items are whole batches: ``dataset[list_of_indices] -> batch dict``.

    Args:
        root: Dataset directory.
        split: ``train``, ``val`` or ``test``.
        pairs: Also draw a second frame t2 from the same demonstration (for Cardiac Dreamer).
        with_image_t2: Include the t2 frame itself (only the latent-consistency term needs it).
        size: Resize frames to this side when it differs from the stored one.
        seed: Seed of the t2 draws (combined with the batch's indices, so workers agree).
        max_pair_gap_s: When set, t2 is drawn among frames within this many seconds of t1.
    """

    def __init__(
        self,
        root,
        split,
        pairs=False,
        with_image_t2=False,
        size=None,
        seed=0,
        max_pair_gap_s=None,
        planes=None,
    ):
        """Open the split; arrays are memory-mapped lazily in each worker."""
        self.root, self.split_name, self.pairs, self.with_image_t2 = str(root), split, pairs, with_image_t2
        self.seed, self.max_pair_gap_s = seed, max_pair_gap_s
        ds = GuidanceDataset(root)
        self.stored_size = ds.size
        self.size = size or ds.size
        arrays = ds.split(split)
        self.n = len(arrays['frames'])
        if self.n == 0:
            raise DatasetError(f'split {split!r} of {root} has no samples')
        self.plane_map = _plane_map(arrays['plane'], planes, f'split {split!r} of {root}')
        demo = np.asarray(arrays['demo'])
        if np.any(np.diff(demo) < 0):
            raise DatasetError(f'split {split!r}: samples of a demonstration are not contiguous')
        starts = np.flatnonzero(np.r_[True, demo[1:] != demo[:-1]])
        ends = np.r_[starts[1:], len(demo)]
        lengths = ends - starts
        which = np.repeat(np.arange(len(starts)), lengths)
        self.demo_start, self.demo_end = starts[which], ends[which]
        self.weight = (self.n / (len(starts) * lengths[which])).astype(np.float32)
        self.demo_lengths = lengths
        self._arrays = None
        self.epoch = 0

    def __len__(self):
        """Number of samples in the split."""
        return self.n

    def set_epoch(self, epoch):
        """Change the t2 draws between epochs."""
        self.epoch = int(epoch)

    def _get(self):
        if self._arrays is None:
            self._arrays = GuidanceDataset(self.root).split(self.split_name)
        return self._arrays

    def _frames(self, arrays, idx):
        order = np.argsort(idx)
        frames = np.empty((len(idx),) + arrays['frames'].shape[1:], np.uint8)
        frames[order] = arrays['frames'][np.asarray(idx)[order]]
        images = torch.from_numpy(frames).unsqueeze(1)
        if self.size != self.stored_size:
            images = (
                torch.nn.functional.interpolate(
                    images.float(),
                    size=(self.size, self.size),
                    mode='bilinear',
                    antialias=True,
                    align_corners=False,
                )
                .round_()
                .clamp_(0, 255)
                .to(torch.uint8)
            )
        return images

    def draw_partners(self, idx):
        """Indices t2 != t1 from the same demonstration for each t1 in ``idx`` (deterministic per batch)."""
        idx = np.asarray(idx)
        rng = np.random.default_rng((self.seed, self.epoch, int(idx[0]), len(idx)))
        out = np.empty_like(idx)
        stamps = self._get()['stamps'] if self.max_pair_gap_s else None
        for k, i in enumerate(idx):
            lo, hi = self.demo_start[i], self.demo_end[i]
            if self.max_pair_gap_s:
                lo = lo + np.searchsorted(stamps[lo:hi], stamps[i] - self.max_pair_gap_s, 'left')
                hi = self.demo_start[i] + np.searchsorted(
                    stamps[self.demo_start[i] : hi], stamps[i] + self.max_pair_gap_s, 'right'
                )
            if hi - lo <= 1:
                out[k] = i
                continue
            j = lo + rng.integers(0, hi - lo - 1)
            out[k] = j + 1 if j >= i else j
        return out

    def __getitem__(self, idx):
        """The batch for sample indices ``idx`` (a list of ints)."""
        from echo_guidance.geometry import relative_action

        arrays = self._get()
        idx = np.asarray(idx, dtype=np.int64)
        batch = {
            'image': self._frames(arrays, idx),
            'plane': torch.from_numpy(self.plane_map[np.asarray(arrays['plane'][idx], np.int64)]),
            'action': torch.from_numpy(np.asarray(arrays['actions'][idx], np.float32)),
            'weight': torch.from_numpy(self.weight[idx]),
            'index': torch.from_numpy(idx),
        }
        if self.pairs:
            idx2 = self.draw_partners(idx)
            motion = relative_action(arrays['poses'][idx], arrays['poses'][idx2])
            batch['motion'] = torch.from_numpy(np.asarray(motion, np.float32))
            batch['action_t2'] = torch.from_numpy(np.asarray(arrays['actions'][idx2], np.float32))
            batch['index_t2'] = torch.from_numpy(idx2)
            if self.with_image_t2:
                batch['image_t2'] = self._frames(arrays, idx2)
        return batch


def _plane_map(dataset_planes, model_planes, where):
    """Dataset plane index → model query index; DatasetError when the model lacks a plane of the data."""
    if model_planes is None:
        return np.arange(len(GUIDANCE_PLANES), dtype=np.int64)
    mapping = np.array([list(model_planes).index(p) if p in model_planes else -1 for p in GUIDANCE_PLANES])
    present = np.unique(np.asarray(dataset_planes))
    missing = [GUIDANCE_PLANES[i] for i in present if mapping[i] < 0]
    if missing:
        raise DatasetError(
            f'{where} has samples of plane(s) {", ".join(missing)} but the model only has queries for '
            f'{", ".join(model_planes)}'
        )
    return mapping.astype(np.int64)


def make_loader(
    root,
    split,
    batch_size,
    pairs=False,
    with_image_t2=False,
    size=None,
    shuffle=True,
    drop_last=True,
    seed=0,
    rank=0,
    world_size=1,
    num_workers=1,
    max_pair_gap_s=None,
    planes=None,
):
    """A DataLoader of batch dicts and its sampler (call ``set_epoch`` on both each epoch).

    Returns:
        (loader, sampler, batches) where ``batches`` is the GuidanceBatches dataset.
    """
    batches = GuidanceBatches(root, split, pairs, with_image_t2, size, seed, max_pair_gap_s, planes)
    sampler = EpochBatchSampler(len(batches), batch_size, rank, world_size, seed, shuffle, drop_last)
    if len(sampler) == 0:
        raise DatasetError(
            f'split {split!r} has {len(batches)} samples, fewer than one global batch of '
            f'{batch_size * world_size}; lower the batch size'
        )
    loader = torch.utils.data.DataLoader(
        batches,
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )
    return loader, sampler, batches


def benchmark_loader(root, split='train', batch_size=32, pairs=False, size=None, num_workers=1, batches=50):
    """Measure loader throughput; return {'samples_per_s', 'batches', 'seconds', 'first_batch_s'}."""
    import time

    loader, sampler, _ = make_loader(root, split, batch_size, pairs=pairs, size=size, num_workers=num_workers)
    start = time.perf_counter()
    first, count, samples = None, 0, 0
    epoch = 0
    while count < batches:
        sampler.set_epoch(epoch)
        for batch in loader:
            if first is None:
                first = time.perf_counter() - start
                start = time.perf_counter()
            else:
                count += 1
                samples += len(batch['image'])
            if count >= batches:
                break
        epoch += 1
    seconds = time.perf_counter() - start
    return {
        'samples_per_s': samples / seconds if seconds > 0 else float('inf'),
        'batches': count,
        'seconds': seconds,
        'first_batch_s': first,
    }
