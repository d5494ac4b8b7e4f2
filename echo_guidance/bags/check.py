"""Validation of a demonstration bag's content (``echo-guidance bag check``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from echo_guidance.bags import schema
from echo_guidance.bags.reader import BagError, DemonstrationBagReader


@dataclass
class CheckResult:
    """Outcome of check_bag: ``problems`` make the bag unfit for training, ``notes`` are informative."""

    bag_path: str
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def ok(self):
        """True when no problem was found."""
        return not self.problems


def _check_increasing(name, stamps, problems):
    stamps = np.asarray(stamps, dtype=np.int64)
    if stamps.size > 1:
        bad = np.flatnonzero(np.diff(stamps) <= 0)
        if bad.size:
            i = int(bad[0])
            problems.append(
                f'{name} stamps are not strictly increasing: {bad.size} time(s), first at index {i + 1} '
                f'({stamps[i]} then {stamps[i + 1]} ns)'
            )


def check_bag(path):
    """Check a bag: readable, required topics, increasing stamps, frame sizes, a synced pose per frame.

    Returns:
        CheckResult; never raises for a damaged bag (the error becomes a problem).
    """
    result = CheckResult(str(path))
    problems, notes = result.problems, result.notes
    try:
        reader = DemonstrationBagReader(path)
    except BagError as exc:
        problems.append(f'{type(exc).__name__}: {exc}')
        return result
    with reader:
        session = reader.session_info()
        counts = reader.message_counts
        if session['target_plane'] not in schema.SESSION_PLANES:
            problems.append(
                f'session target_plane {session["target_plane"]!r} is not one of {schema.SESSION_PLANES}'
            )
        try:
            previous = -1
            backwards = 0
            for record in reader.iter_messages():
                if record.log_time_ns <= previous:
                    backwards += 1
                previous = record.log_time_ns
            if backwards:
                problems.append(f'log times do not increase {backwards} time(s)')
            frame_stamps = []
            for stamp, image in reader.iter_frames():
                frame_stamps.append(stamp)
                if image.shape != (session['height'], session['width']):
                    problems.append(
                        f'frame {len(frame_stamps) - 1} has shape {image.shape}, session says '
                        f'{(session["height"], session["width"])}'
                    )
            poses = reader.probe_poses()
            synced = reader.synced_poses()
        except BagError as exc:
            problems.append(f'{type(exc).__name__}: {exc}')
            return result
        if not frame_stamps:
            problems.append(f'no frames on {schema.TOPIC_IMAGE}')
        if not poses.stamps_ns.size:
            problems.append(f'no probe poses on {schema.TOPIC_PROBE_POSE}')
        _check_increasing('frame', frame_stamps, problems)
        _check_increasing('probe pose', poses.stamps_ns, problems)
        _check_increasing('synced pose', synced.stamps_ns, problems)
        frames_set, synced_set = set(frame_stamps), set(synced.stamps_ns.tolist())
        without = len(frames_set - synced_set)
        orphans = len(synced_set - frames_set)
        if without:
            problems.append(f'{without} frame(s) have no {schema.TOPIC_SYNCED_POSE} message with their stamp')
        if orphans:
            problems.append(f'{orphans} synced pose(s) match no frame stamp')
        valid = int(synced.valid.sum())
        if synced.valid.size and valid < synced.valid.size:
            notes.append(
                f'{synced.valid.size - valid} of {synced.valid.size} frames have no valid synchronised pose '
                '(kept out of training data)'
            )
        info = reader.info()
        if info['state'] == schema.STATE_REPAIRED:
            notes.append(f'bag was repaired: {info["repair"]}')
        if info['log_times_clamped']:
            notes.append(
                f'{info["log_times_clamped"]} log time(s) were raised by the writer to stay increasing'
            )
        result.stats = {
            'frames': len(frame_stamps),
            'probe_poses': int(poses.stamps_ns.size),
            'synced_poses': int(synced.stamps_ns.size),
            'synced_valid': valid,
            'pedal_events': int(counts.get(schema.TOPIC_PEDAL, 0)),
            'duration_s': info['duration_s'],
        }
        if len(frame_stamps) > 1:
            result.stats['frame_rate_hz'] = (len(frame_stamps) - 1) / (
                (frame_stamps[-1] - frame_stamps[0]) / 1e9
            )
        if poses.stamps_ns.size > 1:
            result.stats['pose_rate_hz'] = (poses.stamps_ns.size - 1) / (
                (poses.stamps_ns[-1] - poses.stamps_ns[0]) / 1e9
            )
    return result
