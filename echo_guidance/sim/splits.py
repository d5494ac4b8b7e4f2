"""Train / validation / test split of virtual patients, by patient, deterministic.

A patient's split is a fixed function of its seed: the first 8 hex digits of
sha256("echo-guidance-sim-patient:<seed>") read as a fraction u in [0, 1); u < 0.70 -> train,
u < 0.85 -> val, otherwise test. So a patient is in exactly one split whatever else is generated,
splits never share a patient, and ``seeds_for_split`` lists them reproducibly.
"""

import hashlib

SPLITS = ('train', 'val', 'test')
SPLIT_FRACTIONS = {'train': 0.70, 'val': 0.15, 'test': 0.15}


def check_split(split):
    """Return ``split`` if it is train, val or test; raise ValueError otherwise."""
    if split not in SPLITS:
        raise ValueError(f'unknown split {split!r}: expected one of {", ".join(SPLITS)}')
    return split


def split_of_seed(seed):
    """Return the split ('train', 'val' or 'test') of the virtual patient with this seed."""
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f'patient seed must be a non-negative integer, got {seed!r}')
    digest = hashlib.sha256(f'echo-guidance-sim-patient:{int(seed)}'.encode()).hexdigest()
    u = int(digest[:8], 16) / 2.0**32
    if u < SPLIT_FRACTIONS['train']:
        return 'train'
    if u < SPLIT_FRACTIONS['train'] + SPLIT_FRACTIONS['val']:
        return 'val'
    return 'test'


def seeds_for_split(split, count, first_seed=0):
    """Return the first ``count`` patient seeds >= ``first_seed`` that belong to ``split``."""
    check_split(split)
    if isinstance(count, bool) or int(count) != count or count < 0:
        raise ValueError(f'patient count must be a non-negative integer, got {count!r}')
    if isinstance(first_seed, bool) or int(first_seed) != first_seed or first_seed < 0:
        raise ValueError(f'first seed must be a non-negative integer, got {first_seed!r}')
    seeds, seed = [], int(first_seed)
    while len(seeds) < count:
        if split_of_seed(seed) == split:
            seeds.append(seed)
        seed += 1
    return seeds
