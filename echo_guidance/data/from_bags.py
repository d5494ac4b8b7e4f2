"""Demonstration bags → :class:`Demonstration` objects, with every excluded frame counted by reason.

Segmentation of one bag:

1. Recording windows: if the bag has RECORD_START pedal events, each window runs from a
   RECORD_START to the next RECORD_STOP (or the next RECORD_START, or the end of the bag); frames
   outside every window are excluded as ``outside_recording``. Without RECORD_START the whole bag
   is one window.
2. Within a window, each TARGET_REACHED mark ends a demonstration: its frames are those after the
   previous mark (or the window start) up to and including the mark's time. Its target pose T* is
   the probe pose at the mark's time, interpolated from ``/arm/probe_pose`` (linear translation,
   SLERP rotation) when pose samples lie within ``mark_tolerance_s`` on both sides, else the synced
   pose of the nearest valid frame within ``mark_tolerance_s``. Frames after the last mark of a
   window are excluded as ``after_target``.
3. A window without any mark becomes one demonstration whose target is the session's *declared*
   target, when ``extra_yaml`` of ``/session/info`` declares one (``target_pose_mm``, at the top level
   or under ``simulator:``, a 4×4 matrix in mm, in base); otherwise its frames are excluded as
   ``no_target``.
   With ``target_source='declared'`` the declared target replaces the mark's pose wherever both
   exist; with ``'mark'`` a declared target is never used.
4. Frames without a ``/recorder/synced_pose`` record are excluded as ``no_synced_pose``, those whose
   synced pose is flagged invalid as ``invalid_pose``. Sessions whose plane is not a guidance plane
   (A4C) are skipped as ``not_guidance_plane``; demonstrations with fewer than two valid frames as
   ``short_demonstration``.
"""

import collections
import pathlib

import numpy as np
import yaml

from echo_guidance.data.dataset import DatasetError, Demonstration, resize_frame
from echo_guidance.planes import ALL_PLANES, GUIDANCE_PLANES, UnknownPlaneError, check_plane

TARGET_REACHED = 1
RECORD_START = 2
RECORD_STOP = 3
TARGET_SOURCES = ('auto', 'mark', 'declared')
_END_OF_BAG = 2**62


class BagDataError(DatasetError):
    """A bag that cannot be turned into demonstrations (corrupt, empty, missing topics), with the reason."""


def declared_target(session):
    """The target pose (4×4 mm) declared in the session's ``extra_yaml``, or None."""
    text = session.get('extra_yaml') or ''
    if not text.strip():
        return None
    try:
        extra = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BagDataError(f'session extra_yaml is not valid YAML: {exc}') from exc
    if not isinstance(extra, dict):
        return None
    value = extra.get('target_pose_mm')
    if value is None and isinstance(extra.get('simulator'), dict):
        value = extra['simulator'].get('target_pose_mm')
    if value is None:
        return None
    T = np.asarray(value, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise BagDataError(
            f'session extra_yaml target_pose_mm must be a finite 4x4 matrix, got shape {T.shape}'
        )
    return T


def no_demonstrations_message(exclusions):
    """The error when no bag gave a usable demonstration: exclusion counts and how to fix the main cause."""
    counts = {reason: int(n) for reason, n in (exclusions or {}).items() if n}
    text = 'no usable demonstrations: nothing to write'
    text += f' (frames excluded by reason: {counts})' if counts else ' (no frames were read)'
    if counts.get('no_target'):
        text += (
            f'. {counts["no_target"]} frames have no target pose: their recording window holds no '
            'TARGET_REACHED mark and their session declares no target pose. To fix it, mark the target '
            'while recording: press the pedal\'s TARGET button when the probe shows the plane (each mark '
            'ends a demonstration there); or declare the target pose in the session: recorder parameter '
            "session.extra_yaml 'target_pose_mm: <4x4 probe pose, mm, in base>' (top level or under "
            'simulator:). Simulated recordings: `echo-guidance record --profile record_sim` does both '
            "now: its simulated sonographer (pedal port sim:sonographer) marks the plane when the probe "
            'is there and its recorder declares the virtual patient\'s true pose '
            '(session.sim_patient_seed); record_sim bags made before that have neither, record them again. '
            'With --target-source mark a declared target is never used'
        )
    elif counts.get('invalid_pose') or counts.get('no_synced_pose'):
        text += (
            '. Frames without a valid synchronised pose had no arm pose sample within the recorder\'s '
            'sync_tolerance_s on both sides of them (see docs/recording.md, Synchronisation)'
        )
    return text


def declared_split(session):
    """The split (train / val / test) the session's ``extra_yaml`` declares for its subject, or None."""
    try:
        extra = yaml.safe_load(session.get('extra_yaml') or '') or {}
    except yaml.YAMLError:
        return None
    if not isinstance(extra, dict):
        return None
    value = extra.get('split')
    if value is None and isinstance(extra.get('simulator'), dict):
        value = extra['simulator'].get('split')
    return value or None


def pose_at_time(stamp_ns, probe_stamps_ns, probe_poses, tolerance_s):
    """Probe pose interpolated at ``stamp_ns`` from samples within ``tolerance_s`` on both sides, or None."""
    from echo_guidance.geometry import interpolate_pose

    if probe_stamps_ns is None or len(probe_stamps_ns) == 0:
        return None
    k = int(np.searchsorted(probe_stamps_ns, stamp_ns, side='right'))
    if k == 0 or k > len(probe_stamps_ns):
        return None
    t0, t1 = probe_stamps_ns[k - 1], probe_stamps_ns[min(k, len(probe_stamps_ns) - 1)]
    if t0 == stamp_ns:
        return np.asarray(probe_poses[k - 1], dtype=np.float64)
    if k == len(probe_stamps_ns):
        return None
    tol_ns = tolerance_s * 1e9
    if stamp_ns - t0 > tol_ns or t1 - stamp_ns > tol_ns:
        return None
    return np.asarray(
        interpolate_pose(stamp_ns * 1e-9, t0 * 1e-9, probe_poses[k - 1], t1 * 1e-9, probe_poses[k])
    )


def split_recording(
    session,
    frame_stamps_ns,
    frames,
    synced_present,
    synced_valid,
    synced_poses,
    pedal_events,
    probe_stamps_ns=None,
    probe_poses=None,
    target_source='auto',
    mark_tolerance_s=0.1,
    source='',
):
    """Split one recording into demonstrations (see the module docstring).

    Args:
        session: Session info dict (``subject_id``, ``target_plane``, ``extra_yaml``).
        frame_stamps_ns: Frame acquisition times (N,), ns, increasing.
        frames: N uint8 images (any size; already resized is cheapest).
        synced_present: (N,) bool, a SyncedPose record exists for the frame.
        synced_valid: (N,) bool, that record is flagged valid.
        synced_poses: (N, 4, 4) mm, meaningful where valid.
        pedal_events: Iterable of (stamp_ns, event code).
        probe_stamps_ns: Raw probe-pose times (M,), ns, increasing (for the pose at a mark).
        probe_poses: Raw probe poses (M, 4, 4), mm.
        target_source: ``auto`` (mark, else declared), ``mark`` or ``declared`` (declared wherever present).
        mark_tolerance_s: How far pose samples may lie from a mark's time.
        source: Name of the recording, for messages and the manifest.

    Returns:
        (list of Demonstration, Counter of excluded frames by reason, list of per-demonstration notes).
    """
    if target_source not in TARGET_SOURCES:
        raise ValueError(f'target_source {target_source!r}: expected one of {", ".join(TARGET_SOURCES)}')
    excluded = collections.Counter()
    notes = []
    n = len(frame_stamps_ns)
    stamps = np.asarray(frame_stamps_ns, dtype=np.int64)
    plane = session.get('target_plane', '')
    subject = session.get('subject_id', '')
    if plane not in GUIDANCE_PLANES:
        try:
            check_plane(plane, ALL_PLANES)
        except UnknownPlaneError as exc:
            raise BagDataError(f'{source}: session target_plane: {exc}') from exc
        excluded['not_guidance_plane'] += n
        return [], +excluded, notes
    if not subject:
        raise BagDataError(f'{source}: session has no subject_id; the dataset is split by subject')
    declared = declared_target(session)
    events = sorted((int(t), int(e)) for t, e in pedal_events)
    has_start = any(e == RECORD_START for _, e in events)

    windows = []
    if has_start:
        open_at = None
        for t, e in events:
            if e == RECORD_START:
                if open_at is not None:
                    windows.append((open_at, t - 1))
                open_at = t
            elif e == RECORD_STOP and open_at is not None:
                windows.append((open_at, t))
                open_at = None
        if open_at is not None:
            windows.append((open_at, _END_OF_BAG))
    else:
        # A mark after the last frame still ends the demonstration that precedes it.
        windows.append((-_END_OF_BAG, _END_OF_BAG))

    in_window = np.zeros(n, bool)
    demos = []
    for w0, w1 in windows:
        sel = (stamps >= w0) & (stamps <= w1)
        in_window |= sel
        marks = [t for t, e in events if e == TARGET_REACHED and w0 <= t <= w1]
        segments = []
        prev = w0 - 1
        for mark in marks:
            segments.append((prev + 1, mark, mark))
            prev = mark
        if marks:
            excluded['after_target'] += int(np.sum(sel & (stamps > prev)))
        else:
            segments.append((w0, w1, None))
        for s0, s1, mark in segments:
            seg = np.flatnonzero((stamps >= s0) & (stamps <= s1))
            target, how = None, ''
            if mark is not None and not (target_source == 'declared' and declared is not None):
                target = pose_at_time(mark, probe_stamps_ns, probe_poses, mark_tolerance_s)
                how = 'mark (interpolated probe pose)'
                if target is None:
                    cand = seg[np.asarray(synced_valid, bool)[seg]] if len(seg) else seg
                    if len(cand):
                        nearest = cand[np.argmin(np.abs(stamps[cand] - mark))]
                        if abs(stamps[nearest] - mark) <= mark_tolerance_s * 1e9:
                            target = np.asarray(synced_poses[nearest], np.float64)
                            how = 'mark (nearest synced frame)'
            if target is None and declared is not None and target_source != 'mark':
                target, how = declared, 'declared'
            if target is None:
                excluded['no_target'] += len(seg)
                continue
            missing = ~np.asarray(synced_present, bool)[seg]
            invalid = np.asarray(synced_present, bool)[seg] & ~np.asarray(synced_valid, bool)[seg]
            excluded['no_synced_pose'] += int(missing.sum())
            excluded['invalid_pose'] += int(invalid.sum())
            keep = seg[~missing & ~invalid]
            if len(keep) < 2:
                excluded['short_demonstration'] += len(keep)
                continue
            note = {'source': source, 'frames': int(len(keep)), 'target_source': how}
            if declared is not None and how.startswith('mark'):
                from echo_guidance.geometry import geodesic_rotation_error_deg, translation_error_mm

                note['mark_vs_declared_mm'] = float(translation_error_mm(target, declared))
                note['mark_vs_declared_deg'] = float(geodesic_rotation_error_deg(target, declared))
            notes.append(note)
            demos.append(
                Demonstration(
                    frames=[frames[i] for i in keep],
                    stamps=stamps[keep] * 1e-9,
                    poses=np.asarray(synced_poses, np.float64)[keep],
                    target_pose=target,
                    subject=subject,
                    plane=plane,
                    source=f'{source}#{len(demos)}',
                    target_source=how,
                )
            )
    excluded['outside_recording'] += int(np.sum(~in_window))
    return demos, +excluded, notes  # unary + drops the reasons that counted nothing


def find_bags(paths):
    """Bag directories among ``paths``: each path is a bag (has metadata.yaml) or is searched recursively."""
    found = []
    for p in map(pathlib.Path, paths):
        if not p.exists():
            raise BagDataError(f'{p} does not exist')
        if (p / 'metadata.yaml').is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(m.parent for m in p.rglob('metadata.yaml')))
        else:
            raise BagDataError(f'{p} is not a bag directory (no metadata.yaml) nor a folder of bags')
    if not found:
        raise BagDataError(f'no bags (directories with metadata.yaml) found in {", ".join(map(str, paths))}')
    return found


def read_bag_demonstrations(bag_path, size, target_source='auto', mark_tolerance_s=0.1):
    """Read one bag with DemonstrationBagReader and split it; frames are resized to ``size`` on the way in.

    Returns:
        (demonstrations, Counter of excluded frames, summary dict for the manifest).
    """
    from echo_guidance.bags import BagError, DemonstrationBagReader

    bag_path = pathlib.Path(bag_path)
    try:
        with DemonstrationBagReader(bag_path) as reader:
            content = _read_content(reader, size)
    except BagDataError:
        raise
    except BagError as exc:  # damaged, cut off, foreign: the message names the offset and the next step
        raise BagDataError(f'cannot read bag {bag_path}: {exc}') from exc
    except Exception as exc:  # not expected from the reader: still one clear line naming the bag
        raise BagDataError(
            f'cannot read bag {bag_path}: {type(exc).__name__}: {exc}; check it with '
            f'`echo-guidance bag check {bag_path}`, repair it with `echo-guidance bag repair {bag_path}`'
        ) from exc
    if len(content['frame_stamps_ns']) == 0:
        raise BagDataError(f'bag {bag_path} has no frames on /us/image')
    demos, excluded, notes = split_recording(
        content['session'],
        content['frame_stamps_ns'],
        content['frames'],
        content['synced_present'],
        content['synced_valid'],
        content['synced_poses'],
        content['pedal_events'],
        content['probe_stamps_ns'],
        content['probe_poses'],
        target_source,
        mark_tolerance_s,
        source=str(bag_path),
    )
    summary = {
        'bag': str(bag_path),
        'subject': content['session'].get('subject_id', ''),
        'plane': content['session'].get('target_plane', ''),
        'frames': len(content['frame_stamps_ns']),
        'demonstrations': len(demos),
        'declared_split': declared_split(content['session']),
        'excluded': dict(excluded),
        'notes': notes,
    }
    return demos, excluded, summary


def _read_content(reader, size):
    """Pull the arrays split_recording needs out of a DemonstrationBagReader."""
    from echo_guidance.bags import MissingTopicsError

    session = reader.session_info()
    frame_stamps, frames = [], []
    for stamp_ns, image in reader.iter_frames():
        frame_stamps.append(int(stamp_ns))
        frames.append(resize_frame(image, size))
    order = np.argsort(frame_stamps, kind='stable')
    frame_stamps = np.asarray(frame_stamps, np.int64)[order]
    frames = [frames[i] for i in order]
    synced = reader.synced_poses()
    by_stamp = {int(s): (bool(v), T) for s, v, T in zip(synced.stamps_ns, synced.valid, synced.poses_mm)}
    n = len(frame_stamps)
    present, valid, poses = np.zeros(n, bool), np.zeros(n, bool), np.tile(np.eye(4), (n, 1, 1))
    for i, s in enumerate(frame_stamps):
        rec = by_stamp.get(int(s))
        if rec is not None:
            present[i] = True
            valid[i] = rec[0] and bool(np.all(np.isfinite(rec[1])))
            if valid[i]:
                poses[i] = rec[1]
    probe = reader.probe_poses()
    try:
        pedal = [(e['stamp_ns'], e['event']) for e in reader.pedal_events()]
    except MissingTopicsError:  # a bag without any pedal event has no /pedal/event channel
        pedal = []
    return {
        'session': session,
        'frame_stamps_ns': frame_stamps,
        'frames': frames,
        'synced_present': present,
        'synced_valid': valid,
        'synced_poses': poses,
        'probe_stamps_ns': np.asarray(probe.stamps_ns, np.int64),
        'probe_poses': np.asarray(probe.poses_mm, np.float64),
        'pedal_events': pedal,
    }
