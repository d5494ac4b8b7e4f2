"""Randomised fault injection against the arm controller: the safety envelope is never violated.

The sequences, faults and checks are those of ``echo-guidance bench faults``
(:mod:`echo_guidance.bench.faults`, which documents every check); this runs fewer of them in every
motion mode and fails on the first violation, naming the sequence.
"""

import numpy as np
import pytest

from echo_guidance.bench.faults import ALL_KINDS, CYCLES, MODES, Sequence, random_faults

SEQUENCES_PER_BLOCK = 250
BLOCKS = 4
OTHER_MODE_SEQUENCES = 80


def run_block(mode, seeds):
    totals = {'moves': 0, 'stops': 0, 'holds': 0, 'faults': 0, 'look_around': 0, 'search': 0}
    for seed in seeds:
        try:
            counts = Sequence(seed, mode).run()
        except AssertionError as error:
            raise AssertionError(f'{mode} sequence seed {seed}: {error}') from None
        for key in totals:
            totals[key] += counts[key]
    return totals


@pytest.mark.parametrize('block', range(BLOCKS))
def test_random_faults_never_violate_the_envelope(block):
    seeds = range(block * SEQUENCES_PER_BLOCK, (block + 1) * SEQUENCES_PER_BLOCK)
    totals = run_block('continuous', seeds)
    # The sequences must actually exercise motion, holds and stops, or the checks prove nothing.
    assert totals['moves'] > 20 * SEQUENCES_PER_BLOCK // 4, totals
    assert totals['stops'] > SEQUENCES_PER_BLOCK and totals['holds'] > SEQUENCES_PER_BLOCK, totals
    assert totals['faults'] >= 2 * SEQUENCES_PER_BLOCK


@pytest.mark.parametrize('mode', [m for m in MODES if m != 'continuous'])
def test_random_faults_never_violate_the_envelope_in_the_other_motion_modes(mode):
    totals = run_block(mode, range(OTHER_MODE_SEQUENCES))
    assert totals['moves'] > 5 * OTHER_MODE_SEQUENCES and totals['stops'] > OTHER_MODE_SEQUENCES, totals
    # Each mode's own phase is reached and moves the arm (under the same checks).
    if mode == 'look_around':
        assert totals['look_around'] > 10 * OTHER_MODE_SEQUENCES, totals
    if mode == 'search':
        assert totals['search'] > 10 * OTHER_MODE_SEQUENCES, totals


def test_every_fault_kind_is_injected_and_seen():
    """The random draws cover every fault kind."""
    seen = set()
    for seed in range(BLOCKS * SEQUENCES_PER_BLOCK):
        seen.update(f.kind for f in random_faults(np.random.default_rng(seed), CYCLES['continuous']))
    assert seen == set(ALL_KINDS)


@pytest.mark.parametrize('mode', MODES)
def test_a_broken_safeguard_is_caught(mode, monkeypatch):
    """The checks can fail: with the speed clamp and the envelope's own final check off, they do."""
    from echo_guidance.control import envelope

    monkeypatch.setattr(envelope, '_clamp_norm', lambda v, limit: v * 3.0)
    monkeypatch.setattr(envelope.SafetyEnvelope, 'verify', lambda self, *args: None)
    with pytest.raises(AssertionError, match='speed|step|acceleration|tracking|workspace|turn'):
        run_block(mode, range(60))
