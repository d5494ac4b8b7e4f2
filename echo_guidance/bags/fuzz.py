"""Seeded bag fuzzing (``echo-guidance bag fuzz``): corrupt a bag in many ways, run the tools on each.

``bag info``, ``bag check``, ``bag repair`` and the dataset builder run on every corrupted copy.

Corruptions of the MCAP file, each drawn from ``random.Random(f'{seed}:{kind}:{index}')``:

* ``truncate``: the file cut at a random byte;
* ``flip_header``: bits flipped in record headers (opcode and length of any record, the fixed fields
  of message records, the magic bytes): one bit, 2-8 bits, or 16 bytes inverted from a record start;
* ``flip_data``: 1-3 bits flipped inside message payloads;
* ``zero_range``: 1 to 4096 bytes (log-uniform) zeroed at a random offset;

and, as an extra kind, ``metadata_yaml``: metadata.yaml truncated or bit-flipped.

What is counted, per kind: tracebacks (any exception escaping a command, or an unexpected exception
the dataset builder wrapped), "complete" verdicts (exit 0 of ``bag info``, ``bag check``, a built
dataset) for a file whose bytes changed, and, after ``bag repair``, every intact original message
(whose record bytes are unchanged) that is missing from the repaired bag, read back with the mcap
library (checksums validated). Messages whose bytes changed but which repair kept anyway are
counted too (changes inside a payload that still decodes cannot be located in an unchunked file).
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import io
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from echo_guidance.bags import _mcap

KINDS = ('truncate', 'flip_header', 'flip_data', 'zero_range')
EXTRA_KINDS = ('metadata_yaml',)
_T0_NS = 1_750_000_000_000_000_000
_KEEP_EXAMPLES = 8


def make_fuzz_bag(path, frames=16, width=24, height=16, poses_per_frame=3):
    """Write a small complete demonstration bag for fuzzing; return its path.

    Session (target PLAX with a declared target pose), ``frames`` frames each preceded by probe poses
    at 1 kHz and followed by its synced pose (every 5th invalid) and a wrench sample, a RECORD_START
    and a TARGET_REACHED pedal event: every topic of the format, and enough for the dataset builder to
    make one demonstration.
    """
    from echo_guidance.bags.writer import DemonstrationBagWriter

    def pose(i):
        angle = 0.01 * i
        matrix = np.eye(4)
        cos, sin = math.cos(angle), math.sin(angle)
        matrix[:3, :3] = [[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]]
        matrix[:3, 3] = (400.0 + 0.2 * i, -50.0 + 0.1 * i, 300.0)
        return matrix

    session = dict(
        target_plane='PLAX',
        width=width,
        height=height,
        flange_to_probe=np.eye(4),
        operator_id='fuzz',
        subject_id='fuzz-01',
        extra_yaml={'target_pose_mm': pose(0).tolist()},
        stamp_ns=_T0_NS,
    )
    rng = np.random.default_rng(0)
    with DemonstrationBagWriter(path, session, fsync_interval_s=None) as writer:
        writer.write_pedal_event('RECORD_START', _T0_NS + 1)
        k = 0
        for i in range(frames):
            for _ in range(poses_per_frame):
                k += 1
                writer.write_probe_pose(pose(k), _T0_NS + k * 1_000_000)
            stamp = _T0_NS + k * 1_000_000 - 300_000
            writer.write_image(rng.integers(0, 256, (height, width), dtype=np.uint8), stamp)
            valid = i % 5 != 4
            writer.write_synced_pose(pose(k) if valid else None, stamp, valid, 0.0007, 0.0003)
            writer.write_wrench((0.1 * i, 0.0, -2.0), (0.0, 0.01, 0.0), stamp + 2)
        k += 1
        writer.write_probe_pose(pose(k), _T0_NS + k * 1_000_000)
        writer.write_pedal_event('TARGET_REACHED', _T0_NS + k * 1_000_000)
    return Path(path)


class _Original:
    """The fuzzed bag's bytes and the extent and identity of each of its records."""

    def __init__(self, bag):
        self.bag = Path(bag)
        mcaps = sorted(self.bag.glob('*.mcap'))
        if len(mcaps) != 1:
            raise ValueError(f'{bag}: expected one .mcap file, found {len(mcaps)}')
        self.mcap_name = mcaps[0].name
        self.data = mcaps[0].read_bytes()
        self.metadata = (self.bag / 'metadata.yaml').read_bytes()
        self.size = len(self.data)
        self.records, channels = [], {}
        self.messages = []  # (offset, end, (topic, log_time, payload))
        for event in _mcap.walk(self.data, self.size):
            if isinstance(event, _mcap.Damage):
                raise ValueError(f'{bag}: the bag to fuzz is itself damaged at byte {event.start}')
            self.records.append(event)
            if event.opcode == _mcap.OP_CHANNEL:
                channels[event.body.id] = event.body.topic
            elif event.opcode == _mcap.OP_MESSAGE:
                body = event.body
                key = (channels[body.channel_id], body.log_time, self.data[body.data_start : body.data_end])
                self.messages.append((event.offset, event.end, key))
        self.keys = {key for _, _, key in self.messages}


def _flip(data, position, rng, bits=1):
    for _ in range(bits):
        data[position] ^= 1 << rng.randrange(8)


def corrupt(original, kind, rng):
    """Return (mcap bytes, metadata.yaml bytes, description) of one corruption of ``original``."""
    data = bytearray(original.data)
    metadata = original.metadata
    if kind == 'truncate':
        cut = rng.randrange(original.size)
        return bytes(data[:cut]), metadata, f'cut at byte {cut} of {original.size}'
    if kind == 'flip_header':
        choice = rng.random()
        if choice < 0.04:
            at = rng.choice([rng.randrange(8), original.size - 8 + rng.randrange(8)])
            _flip(data, at, rng)
            return bytes(data), metadata, f'bit flipped in the magic bytes at {at}'
        record = rng.choice(original.records)
        head = _mcap.RECORD_HEAD + (22 if record.opcode == _mcap.OP_MESSAGE else 0)
        if choice < 0.75:
            at = record.offset + rng.randrange(min(head, record.end - record.offset))
            bits = 1 if choice < 0.6 else rng.randint(2, 8)
            _flip(data, at, rng, bits)
            return bytes(data), metadata, f'{bits} bit(s) flipped at byte {at} (record at {record.offset})'
        end = min(record.offset + 16, original.size)
        for at in range(record.offset, end):
            data[at] ^= 0xFF
        return bytes(data), metadata, f'16 bytes inverted from the record start at {record.offset}'
    if kind == 'flip_data':
        offset, end, key = rng.choice(original.messages)
        start = end - len(key[2])
        bits = rng.randint(1, 3)
        for _ in range(bits):
            _flip(data, start + rng.randrange(len(key[2])), rng)
        return bytes(data), metadata, f'{bits} bit(s) flipped in the payload of the message at byte {offset}'
    if kind == 'zero_range':
        length = int(round(math.exp(rng.uniform(0, math.log(4096)))))
        start = rng.randrange(original.size)
        end = min(start + length, original.size)
        data[start:end] = bytes(end - start)
        return bytes(data), metadata, f'bytes {start}-{end} zeroed'
    if kind == 'metadata_yaml':
        text = bytearray(metadata)
        if rng.random() < 0.3:
            cut = rng.randrange(len(text))
            return bytes(data), bytes(text[:cut]), f'metadata.yaml cut at byte {cut}'
        positions = [rng.randrange(len(text)) for _ in range(rng.randint(1, 3))]
        for at in positions:
            _flip(text, at, rng)
        return bytes(data), bytes(text), f'metadata.yaml bits flipped at {positions}'
    raise ValueError(f'unknown corruption kind {kind!r}; known: {KINDS + EXTRA_KINDS}')


def _changed_positions(original, data):
    """Sorted positions of the original's bytes that differ (or are gone) in ``data``."""
    size = min(len(data), original.size)
    a = np.frombuffer(original.data, np.uint8, size)
    b = np.frombuffer(data, np.uint8, size)
    changed = np.flatnonzero(a != b)
    if len(data) < original.size:
        changed = np.concatenate([changed, np.arange(len(data), original.size)])
    return changed


def _run_command(argv):
    """Run ``echo-guidance ARGV`` in this process; return (exit status, stdout, stderr, traceback)."""
    from echo_guidance.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(argv)
    except SystemExit as exc:
        return (exc.code if isinstance(exc.code, int) else 2), out.getvalue(), err.getvalue(), ''
    except Exception:  # noqa: BLE001 (counting exceptions is the point)
        return None, out.getvalue(), err.getvalue(), traceback.format_exc()
    return status, out.getvalue(), err.getvalue(), ''


def _dataset(bag):
    """Run the dataset builder's bag step; return (built, clear error, traceback text)."""
    from echo_guidance.bags.errors import BagError
    from echo_guidance.data.from_bags import BagDataError, read_bag_demonstrations

    try:
        read_bag_demonstrations(bag, 16)
    except BagDataError as exc:
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, BagError | BagDataError):
            return False, '', ''.join(traceback.format_exception(cause))
        text = str(exc)
        return False, text if (str(bag) in text) else '', ''
    except Exception:  # noqa: BLE001
        return False, '', traceback.format_exc()
    return True, '', ''


def _read_repaired(bag):
    """Messages of a repaired bag read with the mcap library (checksums validated): set of keys."""
    from mcap.records import Channel, Message
    from mcap.stream_reader import StreamReader

    mcaps = sorted(Path(bag).glob('*.mcap'))
    keys, channels = set(), {}
    with open(mcaps[0], 'rb') as stream:
        for record in StreamReader(stream, validate_crcs=True).records:
            if isinstance(record, Channel):
                channels[record.id] = record.topic
            elif isinstance(record, Message):
                keys.add((channels[record.channel_id], record.log_time, bytes(record.data)))
    return keys


def run_case(original, kind, index, seed, work):
    """Corrupt a copy of the bag, run the four tools on it; return a dict of what happened."""
    rng = random.Random(f'{seed}:{kind}:{index}')
    data, metadata, description = corrupt(original, kind, rng)
    case = {'case': f'{kind}:{index}', 'description': description, 'tracebacks': {}}
    bag = Path(work) / f'{kind}-{index}' / 'bag'
    bag.mkdir(parents=True)
    (bag / original.mcap_name).write_bytes(data)
    (bag / 'metadata.yaml').write_bytes(metadata)
    changed = _changed_positions(original, data)
    case['changed'] = bool(changed.size) or metadata != original.metadata
    case['mcap_changed'] = bool(changed.size)

    for tool in ('info', 'check'):
        status, out, err, tb = _run_command(['bag', tool, str(bag)])
        case[f'{tool}_status'] = status
        if tb:
            case['tracebacks'][tool] = tb
        elif status not in (0, 1, 3, 4) or (status in (3, 4) and not (err + out).strip()):
            case.setdefault('unclear', []).append(f'{tool} exit {status}: {(err + out).strip()[-300:]}')
    built, message, tb = _dataset(bag)
    case['dataset_built'] = built
    if tb:
        case['tracebacks']['dataset'] = tb
    elif not built and not message:
        case.setdefault('unclear', []).append('dataset error does not name the bag')
    elif not built and 'repair' not in message and case['mcap_changed']:
        case.setdefault('unclear', []).append(f'dataset error does not suggest repair: {message[-300:]}')

    status, out, err, tb = _run_command(['bag', 'repair', '--json', str(bag)])
    case['repair_status'] = status
    if tb:
        case['tracebacks']['repair'] = tb
    report = {}
    if status == 0:
        try:
            report = json.loads(out)
        except ValueError:
            case.setdefault('unclear', []).append(f'repair --json printed no JSON: {out[-300:]}')
    case['repair_action'] = report.get('action')
    case['synced_added'] = int(report.get('synced_poses_added') or 0)

    # Intact original messages: none of their record bytes changed.
    starts = np.array([m[0] for m in original.messages], np.int64)
    ends = np.array([m[1] for m in original.messages], np.int64)
    intact = np.ones(len(starts), bool)
    if changed.size:
        first_changed = np.searchsorted(changed, starts)
        next_change = changed[np.minimum(first_changed, changed.size - 1)]
        intact = (first_changed == changed.size) | (next_change >= ends)
    damage_at = int(changed[0]) if changed.size else original.size
    intact_keys = [original.messages[i][2] for i in np.flatnonzero(intact)]
    after = [original.messages[i][2] for i in np.flatnonzero(intact & (starts > damage_at))]
    kept = set()
    if status == 0:
        try:
            kept = _read_repaired(bag)
        except Exception as exc:  # noqa: BLE001
            case['repaired_unreadable'] = f'{type(exc).__name__}: {exc}'
        check_status, out, err, tb = _run_command(['bag', 'check', str(bag)])
        case['repaired_check_status'] = check_status
        if tb:
            case['tracebacks']['check_repaired'] = tb
        elif check_status != 0 and _nothing_to_check(out):
            case['repaired_empty'] = True  # no session info or no frame survived: nothing to check
        elif check_status != 0:
            case['repaired_check_output'] = (out + err).strip()[-600:]
    case['intact'] = len(intact_keys)
    case['intact_kept'] = sum(k in kept for k in intact_keys)
    case['intact_after_damage'] = len(after)
    case['intact_after_damage_kept'] = sum(k in kept for k in after)
    case['altered_kept'] = max(len(kept - original.keys) - case['synced_added'], 0)
    case['lost'] = [
        f'{k[0]} at log time {k[1]}' for k in intact_keys if k not in kept
    ][:_KEEP_EXAMPLES]
    shutil.rmtree(bag.parent, ignore_errors=True)
    return case


def _nothing_to_check(check_output):
    """Whether ``bag check`` failed only because no session info, message or frame survived."""
    problems = [line for line in check_output.splitlines() if line.startswith('PROBLEM: ')]
    empty = ('PROBLEM: EmptyBagError', 'PROBLEM: no frames on', 'PROBLEM: no probe poses on')
    return bool(problems) and all(line.startswith(empty) for line in problems)


def _cases(kinds, corruptions):
    return [(kind, index) for kind in kinds for index in range(corruptions)]


def _worker(args):
    original, cases, seed, work = args
    return [run_case(original, kind, index, seed, work) for kind, index in cases]


def run_fuzz(
    corruptions=250, seed=0, bag=None, work_dir=None, kinds=KINDS + EXTRA_KINDS, jobs=1, progress=None
):
    """Run the fuzz; return the report dict (see :func:`summarise_cases`).

    Args:
        corruptions: corruptions per kind.
        seed: the seed every corruption is drawn from.
        bag: the bag to corrupt (default: a small one made by :func:`make_fuzz_bag`).
        work_dir: folder for the corrupted copies (default: a temporary folder, removed after).
        kinds: which corruption kinds to apply.
        jobs: worker processes.
        progress: ``fn(done, total)`` called as cases finish.
    """
    started = time.monotonic()
    temporary = work_dir is None
    # Memory-backed where there is one: the tools fsync what they write, which a disk makes slow.
    shm = '/dev/shm' if os.path.isdir('/dev/shm') and os.access('/dev/shm', os.W_OK) else None
    work = Path(tempfile.mkdtemp(prefix='bag-fuzz-', dir=shm) if temporary else work_dir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        source = Path(bag) if bag is not None else make_fuzz_bag(work / 'fuzz_bag')
        original = _Original(source)
        cases = _cases(kinds, corruptions)
        results = []
        if jobs > 1:
            import multiprocessing

            chunks = [(original, cases[i::jobs], seed, work) for i in range(jobs)]
            with multiprocessing.get_context('fork').Pool(jobs) as pool:
                for part in pool.imap_unordered(_worker, chunks):
                    results.extend(part)
        else:
            for i, (kind, index) in enumerate(cases):
                results.append(run_case(original, kind, index, seed, work))
                if progress is not None:
                    progress(i + 1, len(cases))
        order = {case: i for i, case in enumerate(f'{k}:{n}' for k, n in cases)}
        results.sort(key=lambda r: order[r['case']])
        report = summarise_cases(results, kinds)
        report['bag'] = {
            'path': str(bag) if bag is not None else 'generated by make_fuzz_bag()',
            'bytes': original.size,
            'messages': len(original.messages),
        }
        report['seed'] = seed
        report['corruptions_per_kind'] = corruptions
        report['wall_s'] = round(time.monotonic() - started, 1)
        python = platform.python_version()
        report['machine'] = f'{platform.machine()}, {os.cpu_count()} CPU core(s), Python {python}'
        report['date'] = datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d')
        return report
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


def summarise_cases(results, kinds):
    """Aggregate per-case results into per-kind and total figures, with examples of every failure."""
    per_kind = {}
    for kind in kinds:
        rows = [r for r in results if r['case'].split(':')[0] == kind]
        per_kind[kind] = _aggregate(rows)
    mcap_kinds = [r for r in results if r['case'].split(':')[0] in KINDS]
    report = {'kinds': per_kind, 'total': _aggregate(mcap_kinds)}
    failures = collections.defaultdict(list)
    for r in results:
        for tool, tb in r['tracebacks'].items():
            failures['tracebacks'].append({'case': r['case'], 'tool': tool, 'description': r['description'],
                                           'traceback': tb[-1500:]})
        if r['mcap_changed'] and (r['info_status'] == 0 or r['check_status'] == 0 or r['dataset_built']):
            failures['complete_on_changed'].append({'case': r['case'], 'description': r['description']})
        if r['intact_kept'] < r['intact']:
            failures['intact_lost'].append(
                {'case': r['case'], 'description': r['description'], 'lost': r['lost'],
                 'count': r['intact'] - r['intact_kept']}
            )
        if r.get('repaired_check_output'):
            failures['repaired_check_failed'].append({'case': r['case'], 'description': r['description'],
                                                      'output': r['repaired_check_output']})
        for text in r.get('unclear', []):
            failures['unclear'].append({'case': r['case'], 'description': r['description'], 'detail': text})
    report['examples'] = {k: v[:_KEEP_EXAMPLES] for k, v in failures.items()}
    return report


def _aggregate(rows):
    changed = [r for r in rows if r['mcap_changed']]
    tracebacks = collections.Counter(tool for r in rows for tool in r['tracebacks'])
    return {
        'cases': len(rows),
        'mcap_changed': len(changed),
        'tracebacks': sum(tracebacks.values()),
        'tracebacks_by_tool': dict(tracebacks),
        'info_complete_on_changed': sum(r['info_status'] == 0 for r in changed),
        'check_ok_on_changed': sum(r['check_status'] == 0 for r in changed),
        'dataset_built_from_changed': sum(bool(r['dataset_built']) for r in changed),
        'unclear_verdicts': sum(len(r.get('unclear', [])) for r in rows),
        'info_exit_codes': dict(sorted(collections.Counter(str(r['info_status']) for r in rows).items())),
        'check_exit_codes': dict(sorted(collections.Counter(str(r['check_status']) for r in rows).items())),
        'repair_exit_codes': dict(sorted(collections.Counter(str(r['repair_status']) for r in rows).items())),
        'repair_actions': dict(sorted(collections.Counter(str(r['repair_action']) for r in rows).items())),
        'intact_messages': sum(r['intact'] for r in rows),
        'intact_kept': sum(r['intact_kept'] for r in rows),
        'intact_lost': sum(r['intact'] - r['intact_kept'] for r in rows),
        'intact_after_damage': sum(r['intact_after_damage'] for r in rows),
        'intact_after_damage_kept': sum(r['intact_after_damage_kept'] for r in rows),
        'altered_messages_kept': sum(r['altered_kept'] for r in rows),
        'synced_poses_added': sum(r['synced_added'] for r in rows),
        'repaired_check_ok': sum(r.get('repaired_check_status') == 0 for r in rows),
        'repaired_empty': sum(bool(r.get('repaired_empty')) for r in rows),
        'repaired_check_failed': sum(bool(r.get('repaired_check_output')) for r in rows),
        'repaired_unreadable': sum(bool(r.get('repaired_unreadable')) for r in rows),
    }


def passed(report):
    """Whether the fuzz met its bar: no traceback, no "complete" on changed bytes, no intact message lost."""
    totals = [report['total']] + list(report['kinds'].values())
    return all(
        t['tracebacks'] == 0
        and t['info_complete_on_changed'] == 0
        and t['check_ok_on_changed'] == 0
        and t['dataset_built_from_changed'] == 0
        and t['intact_lost'] == 0
        and t['repaired_unreadable'] == 0
        for t in totals
    )


def markdown(report, command):
    """Return the report as Markdown (the table docs/bag-format.md quotes)."""
    lines = [
        f'`{command}` ({report["date"]}, {report["machine"]}; bag of {report["bag"]["bytes"]} bytes, '
        f'{report["bag"]["messages"]} messages; {report["wall_s"]} s)',
        '',
        '| kind | cases | tracebacks | info "complete" on changed | check OK on changed '
        '| dataset from changed | intact messages kept | intact after damage kept | altered kept '
        '| synced added | repaired pass check | repaired without session or frames |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for name, t in list(report['kinds'].items()) + [('all MCAP kinds', report['total'])]:
        lines.append(
            f'| {name} | {t["cases"]} | {t["tracebacks"]} | {t["info_complete_on_changed"]} | '
            f'{t["check_ok_on_changed"]} | {t["dataset_built_from_changed"]} | '
            f'{t["intact_kept"]}/{t["intact_messages"]} | '
            f'{t["intact_after_damage_kept"]}/{t["intact_after_damage"]} | '
            f'{t["altered_messages_kept"]} | {t["synced_poses_added"]} | '
            f'{t["repaired_check_ok"]}/{t["repaired_check_ok"] + t["repaired_check_failed"]} | '
            f'{t["repaired_empty"]} |'
        )
    lines.append('')
    lines.append('PASSED' if passed(report) else 'FAILED')
    return '\n'.join(lines)


def write_report(report, out_dir, command):
    """Write report.json and report.md into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = dict(report, command=command)
    json_path = out_dir / 'report.json'
    json_path.write_text(json.dumps(report, indent=2) + '\n')
    md_path = out_dir / 'report.md'
    md_path.write_text(markdown(report, command) + '\n')
    return json_path, md_path


def _print_progress(done, total):
    if done == total or done % 50 == 0:
        print(f'{done}/{total} corruptions', file=sys.stderr, flush=True)
