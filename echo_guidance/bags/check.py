"""Validation of a demonstration bag's content (``echo-guidance bag check``).

The bag is opened with :class:`DemonstrationBagReader`, which verifies the MCAP file first
(checksums, framing, counts); a damaged bag gets one verdict naming the byte offset and the repair
command. An intact bag's content is then checked: required topics, message counts against
metadata.yaml, increasing log times and stamps, frame sizes, a synced pose per frame. Findings that
concern many frames are reported once, with their count and the first few examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from echo_guidance.bags import schema
from echo_guidance.bags.errors import (
    EXIT_DAMAGED,
    EXIT_NOT_A_BAG,
    EXIT_OK,
    EXIT_PROBLEMS,
    BagError,
    repair_hint,
)
from echo_guidance.bags.reader import DemonstrationBagReader, metadata_topic_counts

#: How many examples a summarised finding lists.
EXAMPLES = 5


@dataclass
class CheckResult:
    """Outcome of check_bag: ``problems`` make the bag unfit for training, ``notes`` are informative.

    Attributes:
        exit_code: 0 (no problem), 1 (content problems), 3 (damaged: repair it), 4 (not a bag).
        verdict: the one-line verdict the command prints last.
        offset: byte offset of the damage when the bag is damaged, else None.
    """

    bag_path: str
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    exit_code: int = EXIT_OK
    verdict: str = 'OK'
    offset: int | None = None

    @property
    def ok(self):
        """True when no problem was found."""
        return not self.problems


def summarise(count, what, examples, total=None):
    """'N <what> (of TOTAL), first: a, b, c' with at most EXAMPLES examples."""
    shown = ', '.join(str(e) for e in list(examples)[:EXAMPLES])
    more = ', ...' if count > EXAMPLES else ''
    of = f' of {total}' if total is not None else ''
    return f'{count}{of} {what}' + (f' (first: {shown}{more})' if shown else '')


def _check_increasing(name, stamps, problems):
    stamps = np.asarray(stamps, dtype=np.int64)
    if stamps.size > 1:
        bad = np.flatnonzero(np.diff(stamps) <= 0)
        if bad.size:
            examples = [f'index {i + 1} ({stamps[i]} then {stamps[i + 1]} ns)' for i in bad[:EXAMPLES]]
            problems.append(summarise(int(bad.size), f'{name} stamp(s) not strictly increasing', examples))


def _frames_by_stamp(frame_stamps, stamps):
    index = {s: i for i, s in enumerate(frame_stamps)}
    return [f'frame {index[s]} at {s} ns' if s in index else f'{s} ns' for s in sorted(stamps)]


def check_bag(path):
    """Check a bag: intact files, required topics, counts, increasing stamps, frame sizes, synced poses.

    Returns:
        CheckResult; never raises for a damaged or foreign bag (the error becomes its verdict).
    """
    result = CheckResult(str(path))
    problems = result.problems
    try:
        reader = DemonstrationBagReader(path)
    except BagError as exc:
        return _refused(result, exc, path)
    except OSError as exc:
        problems.append(f'the bag cannot be read: {exc}')
        result.exit_code, result.verdict = EXIT_NOT_A_BAG, f'UNREADABLE: {exc}'
        return result
    try:
        with reader:
            _check_content(reader, result)
    except BagError as exc:
        return _refused(result, exc, path)
    if problems:
        result.exit_code, result.verdict = EXIT_PROBLEMS, f'FAILED: {len(problems)} problem(s)'
    return result


def _refused(result, exc, path):
    result.problems.append(f'{type(exc).__name__}: {exc}')
    result.exit_code = exc.exit_code
    result.offset = exc.offset
    where = f' at byte {exc.offset}' if exc.offset is not None else ''
    if exc.exit_code == EXIT_DAMAGED:
        result.verdict = f'DAMAGED{where}: {repair_hint(path)}'
    elif exc.exit_code == EXIT_NOT_A_BAG:
        result.verdict = 'NOT USABLE: not a demonstration bag this software can read or repair'
    else:
        result.verdict = 'FAILED: 1 problem(s)'
    return result


def _check_content(reader, result):
    problems, notes = result.problems, result.notes
    session = reader.session_info()
    info = reader.info()
    repaired = info['state'] == schema.STATE_REPAIRED
    if session['target_plane'] not in schema.SESSION_PLANES:
        plane = session['target_plane']
        problems.append(f'session target_plane {plane!r} is not one of {schema.SESSION_PLANES}')
    decoded = dict.fromkeys(reader.message_counts, 0)
    previous, backwards = -1, []
    for record in reader.iter_messages():
        decoded[record.topic] = decoded.get(record.topic, 0) + 1
        if record.log_time_ns <= previous:
            backwards.append(f'{record.topic} at {record.log_time_ns} ns')
        previous = record.log_time_ns
    listed = metadata_topic_counts(reader.metadata)
    for topic, count in decoded.items():
        if listed.get(topic, 0) != count:
            problems.append(
                f'{count} message(s) decoded on {topic}, metadata.yaml counts {listed.get(topic, 0)}'
            )
    if backwards:
        problems.append(summarise(len(backwards), 'log time(s) not greater than the previous one', backwards))
    frame_stamps, wrong_size = [], []
    for stamp, image in reader.iter_frames():
        frame_stamps.append(stamp)
        if image.shape != (session['height'], session['width']):
            wrong_size.append(f'frame {len(frame_stamps) - 1} is {image.shape}')
    if wrong_size:
        size = (session['height'], session['width'])
        problems.append(summarise(len(wrong_size), f'frame(s) not of the session size {size}', wrong_size))
    poses = reader.probe_poses()
    synced = reader.synced_poses()
    if not frame_stamps:
        problems.append(f'no frames on {schema.TOPIC_IMAGE}')
    if not poses.stamps_ns.size:
        problems.append(f'no probe poses on {schema.TOPIC_PROBE_POSE}')
    _check_increasing('frame', frame_stamps, problems)
    _check_increasing('probe pose', poses.stamps_ns, problems)
    _check_increasing('synced pose', synced.stamps_ns, problems)
    frames_set, synced_set = set(frame_stamps), set(synced.stamps_ns.tolist())
    without = frames_set - synced_set
    orphans = synced_set - frames_set
    if without:
        problems.append(
            summarise(
                len(without),
                f'frame(s) have no {schema.TOPIC_SYNCED_POSE} message with their stamp',
                _frames_by_stamp(frame_stamps, without),
            )
        )
    if orphans:
        examples = _frames_by_stamp([], orphans)
        finding = summarise(len(orphans), 'synced pose(s) match no frame stamp', examples)
        if repaired:
            notes.append(f'{finding}: their frames were lost in the damage the repair skipped')
        else:
            problems.append(finding)
    valid = int(synced.valid.sum())
    if synced.valid.size and valid < synced.valid.size:
        invalid = set(synced.stamps_ns[~synced.valid].tolist())
        notes.append(
            summarise(
                synced.valid.size - valid,
                'frames have no valid synchronised pose (kept out of training data)',
                _frames_by_stamp(frame_stamps, invalid & frames_set),
                total=synced.valid.size,
            )
        )
    if repaired:
        notes.append(f'bag was repaired: {info["repair"]}')
    if info['log_times_clamped']:
        notes.append(f'{info["log_times_clamped"]} log time(s) were raised by the writer to stay increasing')
    notes.append(f'files: {info["integrity"]}')
    result.stats = {
        'frames': len(frame_stamps),
        'probe_poses': int(poses.stamps_ns.size),
        'synced_poses': int(synced.stamps_ns.size),
        'synced_valid': valid,
        'pedal_events': int(reader.message_counts.get(schema.TOPIC_PEDAL, 0)),
        'duration_s': info['duration_s'],
    }
    if len(frame_stamps) > 1 and frame_stamps[-1] != frame_stamps[0]:
        result.stats['frame_rate_hz'] = (len(frame_stamps) - 1) / ((frame_stamps[-1] - frame_stamps[0]) / 1e9)
    if poses.stamps_ns.size > 1 and poses.stamps_ns[-1] != poses.stamps_ns[0]:
        result.stats['pose_rate_hz'] = (poses.stamps_ns.size - 1) / (
            (poses.stamps_ns[-1] - poses.stamps_ns[0]) / 1e9
        )
