"""Closed-loop evaluation over held-out patients, planes and random starts, for several policies.

Every policy sees the same patients (the simulator's test split by default), the same planes and
the same start poses (drawn from a generator seeded by patient, plane and start index), so the
comparison is paired. Reported per policy (and per plane): success rate with its Wilson 95%
interval (2.5–97.5 percentile level), how often the controller declared the plane reached and how
often it did so outside the tolerance, time to plane (simulated seconds and control cycles, over
the runs that declared it), path length, final error.
"""

import csv
import json
import math
import pathlib
import time

import numpy as np

from echo_guidance.closed_loop.episode import ClosedLoopConfig, run_episode, sample_start


def start_rng(seed, patient_seed, plane, start_index):
    """The generator of one start pose (the same for every policy)."""
    from echo_guidance.planes import ALL_PLANES

    return np.random.default_rng([int(seed), int(patient_seed), ALL_PLANES.index(plane), int(start_index)])


def wilson_interval(successes, n, z=1.959964):
    """Wilson score interval (95% by default) of a success proportion; (nan, nan) for n = 0."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(rows):
    """Aggregate episode rows (dicts) into the reported metrics."""
    n = len(rows)
    if n == 0:
        return {'episodes': 0}
    successes = sum(r['success'] for r in rows)
    low, high = wilson_interval(successes, n)
    declared = [r for r in rows if r['declared_reached']]

    def mean(values):
        values = [v for v in values if v is not None and math.isfinite(v)]
        return float(np.mean(values)) if values else math.nan

    def median(values):
        values = [v for v in values if v is not None and math.isfinite(v)]
        return float(np.median(values)) if values else math.nan

    return {
        'episodes': n,
        'success_rate': successes / n,
        'success_ci95': [low, high],
        'declared_reached_rate': len(declared) / n,
        'false_reached_rate': sum(not r['success'] for r in declared) / n,
        'time_to_plane_s_mean': mean(r['time_to_plane_s'] for r in declared),
        'time_to_plane_s_median': median(r['time_to_plane_s'] for r in declared),
        'cycles_to_plane_mean': mean(r['cycles_to_plane'] for r in declared),
        'path_length_mm_mean': mean(r['path_length_mm'] for r in rows),
        'path_rotation_deg_mean': mean(r['path_rotation_deg'] for r in rows),
        'final_error_mm_mean': mean(r['final_error_mm'] for r in rows),
        'final_error_mm_median': median(r['final_error_mm'] for r in rows),
        'final_error_deg_mean': mean(r['final_error_deg'] for r in rows),
        'final_error_deg_median': median(r['final_error_deg'] for r in rows),
        'start_error_mm_mean': mean(r['start_error_mm'] for r in rows),
        'start_error_deg_mean': mean(r['start_error_deg'] for r in rows),
    }


def _patient_episodes(
    policies, patient_seed, planes, starts, limits, planner_config, config, seed, trace_dir
):
    """Every policy's episodes on one patient (episode dicts, in policy / plane / start order)."""
    from echo_guidance.sim import Patient, ProbeConfig, ProbeRenderer

    patient = Patient.from_seed(patient_seed)
    renderer = ProbeRenderer(patient, ProbeConfig(width=config.image_size, height=config.image_size))
    episodes = []
    for plane in planes:
        target = patient.standard_plane_pose(plane)
        start_poses = [
            sample_start(patient, plane, start_rng(seed, patient_seed, plane, k), config)
            for k in range(starts)
        ]
        for name, factory in policies.items():
            for k, start_pose in enumerate(start_poses):
                trace = [] if trace_dir is not None else None
                result = run_episode(
                    patient,
                    renderer,
                    plane,
                    start_pose,
                    factory(plane, target),
                    limits,
                    planner_config,
                    config,
                    policy_name=name,
                    start_index=k,
                    trace=trace,
                )
                episodes.append(result.as_dict())
                if trace is not None:
                    write_trace(trace, trace_dir, f'{name}_{patient.patient_id}_{plane}_{k}.csv')
    return episodes


_WORKER = {}


def _worker_init(build_policies, arguments):
    _WORKER['policies'] = build_policies()
    _WORKER['arguments'] = arguments


def _worker_patient(patient_seed):
    return patient_seed, _patient_episodes(_WORKER['policies'], patient_seed, *_WORKER['arguments'])


def _describe(result, started):
    return (
        f'{result["policy"]} sim-{result["patient_seed"]:06d} {result["plane"]} '
        f'start {result["start_index"]}: '
        f'{"success" if result["success"] else "failure"} ({result["end_state"]}: {result["end_reason"]}), '
        f'final {result["final_error_mm"]:.1f} mm / {result["final_error_deg"]:.1f} deg, '
        f'{time.monotonic() - started:.0f} s'
    )


def evaluate_closed_loop(
    policies,
    patient_seeds,
    planes,
    starts,
    limits,
    planner_config,
    config=None,
    seed=0,
    progress=None,
    trace_dir=None,
    jobs=1,
    build_policies=None,
):
    """Run every policy on every (patient, plane, start); return ``{'episodes': [...], 'summary': {...}}``.

    Args:
        policies: {name: factory} with ``factory(plane, target_pose_mm) -> policy``.
        patient_seeds: virtual patient seeds.
        planes: target planes.
        starts: start poses per patient and plane.
        limits, planner_config: the controller's settings.
        config: :class:`ClosedLoopConfig`.
        seed: seed of the start poses.
        progress: optional ``progress(text)``.
        trace_dir: optional directory: one CSV per episode
            (``<policy>_<patient>_<plane>_<start>.csv``, columns
            :data:`~echo_guidance.closed_loop.episode.TRACE_FIELDS`, one row per frame).
        jobs: worker processes (patients are shared out among them; each builds its own policies
            with ``build_policies()``, a picklable callable returning the same dict). The results do
            not depend on it.
    """
    config = config or ClosedLoopConfig()
    if not policies:
        raise ValueError('closed-loop evaluation needs at least one policy')
    if starts < 1 or not patient_seeds or not planes:
        raise ValueError('closed-loop evaluation needs at least one patient, one plane and one start')
    started = time.monotonic()
    arguments = (planes, starts, limits, planner_config, config, seed, trace_dir)
    by_patient = {}
    if jobs > 1 and len(patient_seeds) > 1:
        if build_policies is None:
            raise ValueError('closed-loop evaluation with jobs > 1 needs build_policies')
        import multiprocessing

        context = multiprocessing.get_context('spawn')
        with context.Pool(min(jobs, len(patient_seeds)), _worker_init, (build_policies, arguments)) as pool:
            for patient_seed, episodes in pool.imap_unordered(_worker_patient, list(patient_seeds)):
                by_patient[patient_seed] = episodes
                if progress:
                    for result in episodes:
                        progress(_describe(result, started))
    else:
        for patient_seed in patient_seeds:
            by_patient[patient_seed] = _patient_episodes(policies, patient_seed, *arguments)
            if progress:
                for result in by_patient[patient_seed]:
                    progress(_describe(result, started))
    episodes = [e for patient_seed in patient_seeds for e in by_patient[patient_seed]]
    summary = {}
    for name in policies:
        rows = [e for e in episodes if e['policy'] == name]
        summary[name] = {'all': summarise(rows)}
        for plane in planes:
            summary[name][plane] = summarise([r for r in rows if r['plane'] == plane])
    return {
        'episodes': episodes,
        'summary': summary,
        'settings': {
            'patient_seeds': list(patient_seeds),
            'planes': list(planes),
            'starts': starts,
            'seed': seed,
            'closed_loop': config.__dict__,
            'limits': limits.to_mapping(),
            'planner': planner_config.to_mapping(),
            'policies': {name: factory.describe() for name, factory in policies.items()},
            'jobs': jobs,
            'wall_time_s': time.monotonic() - started,
        },
    }


def write_trace(rows, out_dir, filename):
    """Write one episode's trace rows (dicts with the TRACE_FIELDS keys) to ``out_dir/filename``."""
    from echo_guidance.closed_loop.episode import TRACE_FIELDS

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    safe = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in filename)
    with open(out / safe, 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=list(TRACE_FIELDS))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f'{v:.3f}' if isinstance(v, float) else v) for k, v in row.items()})
    return out / safe


def _fmt(value, digits=1):
    return (
        '—'
        if value is None or (isinstance(value, float) and not math.isfinite(value))
        else f'{value:.{digits}f}'
    )


def markdown_table(results):
    """The summary as a Markdown table (one row per policy, then per policy and plane)."""
    lines = [
        '| policy | plane | runs | success (95% CI) | declared reached | false reached | time to plane s '
        '(median) | cycles | path mm | path deg | final mm (median) | final deg (median) |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for name, by_plane in results['summary'].items():
        for plane, s in by_plane.items():
            if not s.get('episodes'):
                continue
            low, high = s['success_ci95']
            lines.append(
                f'| {name} | {plane} | {s["episodes"]} | {100 * s["success_rate"]:.0f}% '
                f'({100 * low:.0f}–{100 * high:.0f}%) | {100 * s["declared_reached_rate"]:.0f}% | '
                f'{100 * s["false_reached_rate"]:.0f}% | {_fmt(s["time_to_plane_s_mean"])} '
                f'({_fmt(s["time_to_plane_s_median"])}) | {_fmt(s["cycles_to_plane_mean"], 0)} | '
                f'{_fmt(s["path_length_mm_mean"])} | {_fmt(s["path_rotation_deg_mean"])} | '
                f'{_fmt(s["final_error_mm_mean"])} ({_fmt(s["final_error_mm_median"])}) | '
                f'{_fmt(s["final_error_deg_mean"])} ({_fmt(s["final_error_deg_median"])}) |'
            )
    return '\n'.join(lines)


def write_report(results, out_dir):
    """Write results.json, episodes.csv and results.md into ``out_dir``; return the Markdown text."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'results.json').write_text(json.dumps(results, indent=1, default=float))
    fields = [k for k in results['episodes'][0] if k != 'reasons'] + ['reasons']
    with open(out / 'episodes.csv', 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in results['episodes']:
            writer.writerow({**row, 'reasons': json.dumps(row['reasons'])})
    settings = results['settings']
    text = (
        '# Closed-loop evaluation\n\n'
        f'{len(settings["patient_seeds"])} patients (seeds {settings["patient_seeds"]}), planes '
        f'{", ".join(settings["planes"])}, {settings["starts"]} starts each (seed {settings["seed"]}); '
        f'success = final error <= {settings["closed_loop"]["success_mm"]:g} mm and '
        f'{settings["closed_loop"]["success_deg"]:g} deg; time limit '
        f'{settings["closed_loop"]["time_limit_s"]:g} s '
        f'(simulated). Wall time {settings["wall_time_s"]:.0f} s.\n\n'
        + '\n'.join(f'- `{name}`: {text}' for name, text in settings['policies'].items())
        + '\n\n'
        + markdown_table(results)
        + '\n'
    )
    (out / 'results.md').write_text(text)
    return text
