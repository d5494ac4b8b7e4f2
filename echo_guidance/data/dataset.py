"""Training samples on disk: demonstrations → frames with their ground-truth actions, split by subject.

A *demonstration* is one approach to one target plane: frames S_t with the probe poses T_t (4×4, mm,
in ``base``) at their acquisition times, and the target pose T*. Each frame's ground-truth action is
â_t = U⁻¹(T_t⁻¹ · T*) (``echo_guidance.geometry.relative_action``). The world model's pairs
(S_t1, S_t2, â(t1→t2), â_t1, â_t2) are not stored: they are drawn on the fly from two frames of the
same demonstration (see ``echo_guidance.data.loader``), since â(t1→t2) = U⁻¹(T_t1⁻¹ · T_t2) follows
from the stored poses.

Layout of a dataset directory::

    manifest.json          format, frame size, splits (subjects, demonstrations, sample counts),
                           exclusion counts, training-split statistics, source bags
    <split>/frames.npy     (N, S, S) uint8   frames resized to S×S
    <split>/actions.npy    (N, 6) float32    â_t: mm, mm, mm, deg, deg, deg
    <split>/poses.npy      (N, 4, 4) float64 T_t, mm
    <split>/stamps.npy     (N,) float64      acquisition time, s
    <split>/plane.npy      (N,) int64        query index of the target plane
    <split>/subject.npy    (N,) int32        index into manifest["subjects"]
    <split>/demo.npy       (N,) int32        index into manifest["demonstrations"]

Samples of one demonstration are contiguous and in time order. ``.npy`` (not ``.npz``) so that the
loader memory-maps them.
"""

import dataclasses
import json
import math
import os
import pathlib

import numpy as np

from echo_guidance.planes import GUIDANCE_PLANES, plane_index

DATASET_FORMAT = 'echo_guidance.dataset/1'
SPLITS = ('train', 'val', 'test')
ARRAYS = ('frames', 'actions', 'poses', 'stamps', 'plane', 'subject', 'demo')


class DatasetError(ValueError):
    """A dataset directory or a demonstration that cannot be used, with the reason."""


@dataclasses.dataclass
class Demonstration:
    """One approach to one target plane, ready to become training samples.

    Attributes:
        frames: Sequence of uint8 images (H, W), or an array (N, H, W).
        stamps: Acquisition times (N,), seconds.
        poses: Probe poses T_t (N, 4, 4), mm, in base; every frame here has a valid synchronised pose.
        target_pose: T* (4, 4), mm, in base.
        subject: Pseudonymous subject id.
        plane: Target plane name (PLAX, PSAX-AV, PSAX-MV).
        source: Where it came from (bag path and segment), for the manifest.
        target_source: How T* was found (``mark``, ``declared``), for the manifest.
    """

    frames: object
    stamps: np.ndarray
    poses: np.ndarray
    target_pose: np.ndarray
    subject: str
    plane: str
    source: str = ''
    target_source: str = ''

    def __post_init__(self):
        """Check lengths, shapes and values; raise DatasetError naming what is wrong."""
        self.stamps = np.asarray(self.stamps, dtype=np.float64)
        self.poses = np.asarray(self.poses, dtype=np.float64)
        self.target_pose = np.asarray(self.target_pose, dtype=np.float64)
        n = len(self.frames)
        where = f'demonstration {self.source or "?"}'
        if n == 0:
            raise DatasetError(f'{where} has no frames')
        if self.stamps.shape != (n,) or self.poses.shape != (n, 4, 4):
            raise DatasetError(
                f'{where}: {n} frames but stamps {self.stamps.shape} and poses {self.poses.shape}; '
                f'expected ({n},) and ({n}, 4, 4)'
            )
        if self.target_pose.shape != (4, 4) or not np.all(np.isfinite(self.target_pose)):
            raise DatasetError(f'{where}: target pose must be a finite 4x4 matrix, got {self.target_pose!r}')
        if not np.all(np.isfinite(self.poses)):
            raise DatasetError(f'{where}: poses contain NaN or infinity')
        if self.plane not in GUIDANCE_PLANES:
            plane_index(self.plane)  # raises UnknownPlaneError naming the choices
        if not self.subject:
            raise DatasetError(f'{where}: empty subject id (the split is by subject, so one is required)')


def resize_frame(image, size):
    """Resize a uint8 (H, W) frame to size × size (area interpolation when shrinking)."""
    import cv2

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2 or image.dtype != np.uint8:
        raise DatasetError(f'frames must be uint8 (H, W) grayscale, got {image.dtype} {image.shape}')
    if image.shape == (size, size):
        return image
    shrink = image.shape[0] >= size and image.shape[1] >= size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def assign_splits(subjects, fractions=(0.7, 0.15, 0.15), seed=0, fixed=None):
    """Assign each subject to train / val / test.

    Args:
        subjects: Subject ids (duplicates ignored).
        fractions: Target shares of subjects for (train, val, test); a split with a positive share
            gets at least one subject when there are enough subjects to leave one for training.
        seed: Seed of the shuffle of the sorted subject list.
        fixed: Optional {subject: split} that overrides the draw for the subjects it names.

    Returns:
        {subject: split name}.
    """
    fixed = dict(fixed or {})
    for subject, split in fixed.items():
        if split not in SPLITS:
            raise DatasetError(f'subject {subject!r} assigned to unknown split {split!r}: expected {SPLITS}')
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not sum(fractions) > 0:
        raise DatasetError(f'split fractions must be three non-negative numbers, got {fractions}')
    total = sum(fractions)
    fractions = [f / total for f in fractions]
    free = sorted(set(subjects) - set(fixed))
    rng = np.random.default_rng(seed)
    rng.shuffle(free)
    # Target counts over all subjects; fixed subjects count towards their split.
    fixed_here = [split for subject, split in fixed.items() if subject in set(subjects)]
    wanted = _split_counts(len(free) + len(fixed_here), fractions)
    held = [max(0, wanted[i] - fixed_here.count(SPLITS[i])) for i in (1, 2)]
    while held[0] + held[1] > len(free):
        held[1 if held[1] >= held[0] else 0] -= 1
    counts = [len(free) - held[0] - held[1], held[0], held[1]]
    out = dict(fixed)
    start = 0
    for split, count in zip(SPLITS, counts):
        for subject in free[start : start + count]:
            out[subject] = split
        start += count
    return out


def _split_counts(n, fractions):
    """Subjects per split for ``n`` subjects.

    A held-out split with a positive share gets at least one subject, as long as training keeps one.
    """
    counts = [0, 0, 0]
    for i in (2, 1):
        counts[i] = int(math.floor(fractions[i] * n + 0.5))
        if fractions[i] > 0 and counts[i] == 0 and n - sum(counts) > 1:
            counts[i] = 1
    while n > 0 and fractions[0] > 0 and n - counts[1] - counts[2] < 1:
        counts[2 if counts[2] >= counts[1] else 1] -= 1
    counts[0] = n - counts[1] - counts[2]
    return counts


def _pose_difference_stats(actions):
    """Per-axis standard deviation and mean absolute value of actions (N, 6)."""
    return {'std': actions.std(axis=0).tolist(), 'mean_abs': np.abs(actions).mean(axis=0).tolist()}


def write_dataset(
    demonstrations,
    out_dir,
    size=128,
    fractions=(0.7, 0.15, 0.15),
    seed=0,
    fixed_splits=None,
    exclusions=None,
    sources=None,
    progress=None,
):
    """Turn demonstrations into a dataset directory; return the manifest dict.

    Args:
        demonstrations: Iterable of :class:`Demonstration` (materialised once to group by subject).
        out_dir: Directory to create (must be empty or absent).
        size: Side S of the stored square frames.
        fractions: Shares of subjects for train, val, test.
        seed: Seed of the subject split.
        fixed_splits: Optional {subject: split}.
        exclusions: Counts of frames kept out, by reason (from the bag extraction), for the manifest.
        sources: Per-bag summaries for the manifest.
        progress: Optional callable(str) for progress messages.
    """
    from echo_guidance.geometry import relative_action

    demos = list(demonstrations)
    if not demos:
        from echo_guidance.data.from_bags import no_demonstrations_message

        raise DatasetError(no_demonstrations_message(exclusions))
    out = pathlib.Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f'output directory {out} exists and is not empty; choose a new one')
    out.mkdir(parents=True, exist_ok=True)

    subjects = sorted({d.subject for d in demos})
    subject_split = assign_splits(subjects, fractions, seed, fixed_splits)
    subject_index = {s: i for i, s in enumerate(subjects)}
    demo_table, per_split = [], {split: [] for split in SPLITS}
    for demo in sorted(demos, key=lambda d: (d.subject, d.source, float(d.stamps[0]))):
        split = subject_split[demo.subject]
        demo_id = len(demo_table)
        demo_table.append(
            {
                'id': demo_id,
                'subject': demo.subject,
                'plane': demo.plane,
                'split': split,
                'frames': len(demo.frames),
                'source': demo.source,
                'target_source': demo.target_source,
                'duration_s': float(demo.stamps[-1] - demo.stamps[0]),
            }
        )
        per_split[split].append((demo_id, demo))

    split_info = {}
    train_stats = None
    for split in SPLITS:
        items = per_split[split]
        n = sum(len(d.frames) for _, d in items)
        split_dir = out / split
        split_dir.mkdir()
        frames = np.lib.format.open_memmap(
            split_dir / 'frames.npy', mode='w+', dtype=np.uint8, shape=(n, size, size)
        )
        actions = np.zeros((n, 6), np.float32)
        poses = np.zeros((n, 4, 4), np.float64)
        stamps = np.zeros(n, np.float64)
        planes = np.zeros(n, np.int64)
        subject_ids = np.zeros(n, np.int32)
        demo_ids = np.zeros(n, np.int32)
        row = 0
        for demo_id, demo in items:
            k = len(demo.frames)
            for i, image in enumerate(demo.frames):
                frames[row + i] = resize_frame(image, size)
            target = np.broadcast_to(demo.target_pose, demo.poses.shape)
            actions[row : row + k] = relative_action(demo.poses, target)
            poses[row : row + k] = demo.poses
            stamps[row : row + k] = demo.stamps
            planes[row : row + k] = plane_index(demo.plane)
            subject_ids[row : row + k] = subject_index[demo.subject]
            demo_ids[row : row + k] = demo_id
            row += k
            if progress:
                progress(f'{split}: demonstration {demo_id} ({demo.subject}, {demo.plane}, {k} frames)')
        frames.flush()
        del frames
        for name, arr in (
            ('actions', actions),
            ('poses', poses),
            ('stamps', stamps),
            ('plane', planes),
            ('subject', subject_ids),
            ('demo', demo_ids),
        ):
            np.save(split_dir / f'{name}.npy', arr)
        info = {
            'samples': n,
            'demonstrations': len(items),
            'subjects': sorted({d.subject for _, d in items}),
            'planes': {p: int((planes == plane_index(p)).sum()) for p in GUIDANCE_PLANES},
        }
        if n:
            info['actions'] = _pose_difference_stats(actions)
        split_info[split] = info
        if split == 'train' and n:
            train_stats = _frame_and_action_stats(split_dir, actions)

    manifest = {
        'format': DATASET_FORMAT,
        'size': int(size),
        'planes': list(GUIDANCE_PLANES),
        'subjects': subjects,
        'split_seed': int(seed),
        'split_fractions': list(fractions),
        'splits': split_info,
        'demonstrations': demo_table,
        'excluded_frames': dict(exclusions or {}),
        'sources': list(sources or []),
        'train_stats': train_stats,
    }
    (out / 'manifest.json').write_text(json.dumps(manifest, indent=2))
    return manifest



def merge_datasets(roots, out_dir, progress=None, labels=None, size=None):
    """Concatenate dataset directories of one frame size into a new one; return its manifest.

    Every sample keeps its split, subject and demonstration (re-numbered); the manifest's
    demonstration table keeps each one's ``source`` (bag, ``sampler:...``, ``dagger:...``) and gains
    ``dataset`` (the directory it came from); ``merged_from`` lists the inputs; exclusion counts add
    up; the training statistics are computed anew over the merged training split. A subject found in
    two inputs must be in the same split in both (DatasetError otherwise). ``labels`` name the inputs
    in the manifest instead of their paths (e.g. for a temporary directory). ``size`` resizes every
    frame to that side (as the dataset writer resizes frames from bags); by default all inputs must
    have the same frame size.
    """
    inputs = [GuidanceDataset(r) for r in roots]
    labels = [str(d.root) for d in inputs] if labels is None else [str(label) for label in labels]
    if len(labels) != len(inputs):
        raise DatasetError(f'{len(labels)} labels for {len(inputs)} datasets')
    label_of = {id(d): label for d, label in zip(inputs, labels)}
    if not inputs:
        raise DatasetError('nothing to merge: give at least one dataset directory')
    sizes = {d.size for d in inputs}
    if size is None and len(sizes) != 1:
        raise DatasetError(
            'cannot merge datasets of different frame sizes without a target size (--size): '
            + ', '.join(f'{d.root} {d.size}' for d in inputs)
        )
    size = int(size) if size is not None else sizes.pop()
    out = pathlib.Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f'output directory {out} exists and is not empty; choose a new one')
    subject_split = {}
    for d in inputs:
        for split in SPLITS:
            for subject in d.manifest['splits'][split]['subjects']:
                if subject_split.setdefault(subject, split) != split:
                    raise DatasetError(
                        f'subject {subject!r} is in split {subject_split[subject]!r} in one input and '
                        f'{split!r} in {d.root}: a subject must stay in one split'
                    )
    subjects = sorted(subject_split)
    subject_index = {s: i for i, s in enumerate(subjects)}
    out.mkdir(parents=True, exist_ok=True)
    demo_table, split_info, train_stats = [], {}, None
    for split in SPLITS:
        parts = [(d, d.split(split)) for d in inputs if d.manifest['splits'][split]['samples']]
        n = sum(len(a['frames']) for _, a in parts)
        split_dir = out / split
        split_dir.mkdir()
        frames = np.lib.format.open_memmap(
            split_dir / 'frames.npy', mode='w+', dtype=np.uint8, shape=(n, size, size)
        )
        columns = {key: [] for key in ARRAYS if key != 'frames'}
        row = 0
        for d, arrays in parts:
            k = len(arrays['frames'])
            for start in range(0, k, 4096):
                stop = min(k, start + 4096)
                block = arrays['frames'][start:stop]
                if d.size != size:
                    block = np.stack([resize_frame(image, size) for image in block])
                frames[row + start : row + stop] = block
            old_subjects = d.manifest['subjects']
            columns['subject'].append(
                np.array([subject_index[old_subjects[i]] for i in arrays['subject']], np.int32)
            )
            renumber = {}
            for old in np.unique(arrays['demo']):
                entry = dict(d.manifest['demonstrations'][int(old)])
                renumber[int(old)] = len(demo_table)
                entry.update(id=len(demo_table), dataset=label_of[id(d)])
                demo_table.append(entry)
            columns['demo'].append(np.array([renumber[int(i)] for i in arrays['demo']], np.int32))
            for key in ('actions', 'poses', 'stamps', 'plane'):
                columns[key].append(np.asarray(arrays[key]))
            row += k
            if progress:
                progress(f'{split}: {k} samples from {d.root}')
        frames.flush()
        del frames
        merged = {
            key: np.concatenate(values) if values else np.zeros((0,) + _EMPTY_SHAPES[key], _DTYPES[key])
            for key, values in columns.items()
        }
        for key, arr in merged.items():
            np.save(split_dir / f'{key}.npy', arr.astype(_DTYPES[key]))
        info = {
            'samples': n,
            'demonstrations': len({int(i) for i in merged['demo']}),
            'subjects': sorted({subjects[i] for i in merged['subject']}),
            'planes': {p: int((merged['plane'] == plane_index(p)).sum()) for p in GUIDANCE_PLANES},
        }
        if n:
            info['actions'] = _pose_difference_stats(merged['actions'])
        split_info[split] = info
        if split == 'train' and n:
            train_stats = _frame_and_action_stats(split_dir, merged['actions'])
    excluded = {}
    for d in inputs:
        for reason, count in (d.manifest.get('excluded_frames') or {}).items():
            excluded[reason] = excluded.get(reason, 0) + count
    manifest = {
        'format': DATASET_FORMAT,
        'size': int(size),
        'planes': list(GUIDANCE_PLANES),
        'subjects': subjects,
        'split_seed': inputs[0].manifest.get('split_seed', 0),
        'split_fractions': inputs[0].manifest.get('split_fractions'),
        'splits': split_info,
        'demonstrations': demo_table,
        'excluded_frames': excluded,
        'sources': [source for d in inputs for source in d.manifest.get('sources', [])],
        'merged_from': labels,
        'train_stats': train_stats,
    }
    (out / 'manifest.json').write_text(json.dumps(manifest, indent=2))
    return manifest


_DTYPES = {
    'actions': np.float32,
    'poses': np.float64,
    'stamps': np.float64,
    'plane': np.int64,
    'subject': np.int32,
    'demo': np.int32,
}
_EMPTY_SHAPES = {'actions': (6,), 'poses': (4, 4), 'stamps': (), 'plane': (), 'subject': (), 'demo': ()}

def _frame_and_action_stats(split_dir, actions):
    """Pixel mean/std (0..1, from up to 2000 frames) and per-axis action scale of the training split."""
    frames = np.load(split_dir / 'frames.npy', mmap_mode='r')
    step = max(1, len(frames) // 2000)
    sample = np.asarray(frames[::step], dtype=np.float32) / 255.0
    scale = np.maximum(actions.std(axis=0), 1.0)
    return {
        'pixel_mean': float(sample.mean()),
        'pixel_std': float(max(sample.std(), 1e-3)),
        'action_scale': [float(v) for v in scale],
    }


class GuidanceDataset:
    """A dataset directory opened for reading: the manifest and memory-mapped split arrays."""

    def __init__(self, root):
        """Open ``root``; raise DatasetError when it is not a dataset this code wrote."""
        self.root = pathlib.Path(root)
        manifest_path = self.root / 'manifest.json'
        if not manifest_path.is_file():
            raise DatasetError(
                f'{self.root} is not a dataset directory: no manifest.json '
                f'(build one with `echo-guidance dataset build BAGS... --out DIR`)'
            )
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f'{manifest_path} is not valid JSON: {exc}') from exc
        if self.manifest.get('format') != DATASET_FORMAT:
            raise DatasetError(
                f'{manifest_path}: format {self.manifest.get("format")!r}, expected {DATASET_FORMAT!r}'
            )
        self._splits = {}

    @property
    def size(self):
        """Side of the stored frames."""
        return int(self.manifest['size'])

    def split(self, name):
        """Arrays of split ``name`` as a dict of (memory-mapped for frames) numpy arrays."""
        if name not in SPLITS:
            raise DatasetError(f'unknown split {name!r}: expected one of {", ".join(SPLITS)}')
        if name not in self._splits:
            split_dir = self.root / name
            arrays = {}
            for key in ARRAYS:
                path = split_dir / f'{key}.npy'
                if not path.is_file():
                    raise DatasetError(f'dataset split {name!r} is incomplete: {path} is missing')
                arrays[key] = np.load(path, mmap_mode='r' if key == 'frames' else None)
            n = len(arrays['frames'])
            for key, arr in arrays.items():
                if len(arr) != n:
                    raise DatasetError(
                        f'dataset split {name!r}: {key}.npy has {len(arr)} rows, frames.npy has {n}'
                    )
            self._splits[name] = arrays
        return self._splits[name]

    def __len__(self):
        """Total number of samples over all splits."""
        return sum(self.manifest['splits'][s]['samples'] for s in SPLITS)


def describe(manifest):
    """Short human-readable summary of a manifest."""
    lines = [
        f'frames {manifest["size"]}x{manifest["size"]}, {len(manifest["subjects"])} subjects, '
        f'{len(manifest["demonstrations"])} demonstrations'
    ]
    for split in SPLITS:
        info = manifest['splits'][split]
        planes = ', '.join(f'{p} {n}' for p, n in info['planes'].items() if n)
        names = info['subjects']
        shown = ','.join(names) if len(names) <= 6 else f'{len(names)} ({",".join(names[:3])}, ...)'
        lines.append(
            f'  {split:5s}: {info["samples"]:7d} samples, {info["demonstrations"]:3d} demos, '
            f'subjects {shown or "-"} ({planes or "no samples"})'
        )
    excluded = manifest.get('excluded_frames') or {}
    if excluded:
        lines.append('  excluded frames: ' + ', '.join(f'{k} {v}' for k, v in sorted(excluded.items())))
    return os.linesep.join(lines)
