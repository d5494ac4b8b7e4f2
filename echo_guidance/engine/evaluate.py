"""Evaluation of guidance checkpoints: the paper's Table 1, error norms, bootstrap CIs, the Fig. 3 plot.

For every checkpoint (baseline and Dreamer side by side) on one split of a dataset:

- per plane and per axis, the mean absolute error of the 6-D action (mm, degrees; rotation errors
  wrapped to (-180°, 180°]) — Table 1 — with its relative change of each Dreamer model against the
  first baseline model, ``100 · (MAE_dreamer − MAE_baseline) / MAE_baseline`` %;
- the mean translation-error norm (mm) and mean geodesic rotation error (degrees);
- 95 % confidence intervals by a *demonstration-cluster* percentile bootstrap: demonstrations (not
  frames, which are strongly correlated within one approach) are resampled with replacement within
  each plane, ``--bootstrap`` times, and the 2.5th and 97.5th percentiles of the statistic are
  reported; relative changes use a paired bootstrap (the same resampled demonstrations for both);
- the Fig. 3 stability plot: per plane, absolute error (mean of the six per-axis absolute errors,
  mm and degrees mixed as in the paper) against the mean pose difference to the target (mean of the
  six |â_t| components), in equal-width bins, mean line with a ±1 std band, one curve per model.

Dreamer checkpoints are evaluated on their refined output (policy action refined through the
Dreamer, see DreamerPolicy); their policy head alone is reported too, as ``<label> (policy head)``.

Outputs in ``--out``: ``results.json``, ``results.md``, ``stability.png``, ``predictions_<label>.npz``.
"""

import json
import pathlib
import re

import numpy as np
import torch

from echo_guidance.data.dataset import GuidanceDataset
from echo_guidance.engine.checkpoint import file_sha256, load_model
from echo_guidance.engine.train import amp_dtype, predict_split
from echo_guidance.models.config import ACTION_AXES
from echo_guidance.models.losses import wrapped_action_error
from echo_guidance.planes import GUIDANCE_PLANES

AXIS_UNITS = ('mm', 'mm', 'mm', 'deg', 'deg', 'deg')
CI_LEVEL = 95.0
CI_PERCENTILES = (2.5, 97.5)
STOP_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


def within_mask(target, within):
    """Samples whose target action is within ``(mm, deg)`` on every axis (all when ``within`` is None)."""
    target = np.asarray(target)
    if within is None:
        return np.ones(len(target), bool)
    mm, deg = within
    return np.all(np.abs(target[:, :3]) <= mm, axis=1) & np.all(np.abs(target[:, 3:]) <= deg, axis=1)


def stop_judgement_table(distance, target, thresholds=STOP_THRESHOLDS):
    """Frame-by-frame error rates of a distance head taken as "reached" below each threshold.

    Rows: threshold, ``false_reached`` (share of frames outside the 5 mm / 5° window called reached),
    ``missed_reached`` (share inside called not reached), with the distance MAE near the plane.
    The live judgement takes the median over the frames at one pose, so these are per-frame rates.
    """
    from echo_guidance.engine.train import distance_metrics

    return [{'threshold': float(t), **distance_metrics(distance, target, threshold=t)} for t in thresholds]


def sample_errors(pred, target):
    """Per-sample errors: abs per axis (N, 6), translation norm (N,) mm, geodesic rotation (N,) degrees."""
    from echo_guidance.geometry import geodesic_rotation_error_deg, translation_error_mm

    abs_err = np.abs(wrapped_action_error(torch.from_numpy(pred), torch.from_numpy(target)).numpy())
    return {
        'abs': abs_err,
        'translation_norm': np.asarray(
            translation_error_mm(pred.astype(np.float64), target.astype(np.float64))
        ),
        'geodesic': np.asarray(
            geodesic_rotation_error_deg(pred.astype(np.float64), target.astype(np.float64))
        ),
    }


def _cluster_sums(values, groups):
    """Per-group sums of values (N, K) and counts, for groups given as integer ids (N,)."""
    uniq, inv = np.unique(groups, return_inverse=True)
    sums = np.zeros((len(uniq), values.shape[1]))
    np.add.at(sums, inv, values)
    counts = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    return sums, counts


def bootstrap_indices(n_groups, n_boot, rng):
    """(n_boot, n_groups) counts of how often each group is drawn in each resample."""
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    counts = np.zeros((n_boot, n_groups))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n_groups), draws.ravel()), 1)
    return counts


def summarise(values, groups, weights_boot):
    """Mean of values (N, K) and its bootstrap percentile CI given resample weights over groups."""
    sums, counts = _cluster_sums(values, groups)
    mean = sums.sum(0) / counts.sum()
    boot = (weights_boot @ sums) / (weights_boot @ counts)[:, None]
    lo, hi = np.percentile(boot, CI_PERCENTILES, axis=0)
    return mean, lo, hi, boot


def _metric_table(errors, groups, weights_boot):
    values = np.concatenate(
        [errors['abs'], errors['translation_norm'][:, None], errors['geodesic'][:, None]], 1
    )
    mean, lo, hi, boot = summarise(values, groups, weights_boot)
    names = [f'mae_{a}' for a in ACTION_AXES] + ['translation_norm_mm', 'geodesic_deg']
    table = {
        n: {'mean': float(m), 'ci_low': float(a), 'ci_high': float(b)}
        for n, m, a, b in zip(names, mean, lo, hi)
    }
    return table, boot, names


def stability_curve(pose_difference, abs_error_mean, edges):
    """Binned mean and std of the error against the pose difference; returns dict of lists."""
    which = np.clip(np.digitize(pose_difference, edges) - 1, 0, len(edges) - 2)
    centres, means, stds, counts = [], [], [], []
    for b in range(len(edges) - 1):
        sel = which == b
        if sel.sum() == 0:
            continue
        centres.append(float(0.5 * (edges[b] + edges[b + 1])))
        means.append(float(abs_error_mean[sel].mean()))
        stds.append(float(abs_error_mean[sel].std()))
        counts.append(int(sel.sum()))
    return {'bin_centre': centres, 'mean': means, 'std': stds, 'count': counts}


def safe_label(label):
    """A file-name-safe version of a model label."""
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', label).strip('_') or 'model'


def evaluate(
    checkpoints,
    data_dir,
    out_dir,
    split='test',
    labels=None,
    batch_size=64,
    n_boot=1000,
    bins=10,
    device='cpu',
    amp='none',
    seed=0,
    progress=None,
    within=None,
    stop_thresholds=STOP_THRESHOLDS,
):
    """Evaluate checkpoints on a split; write results.json, results.md, stability.png; return the results.

    ``within=(mm, deg)`` keeps only samples whose target is that close to the probe on every axis
    (|x|, |y|, |z| <= mm and |roll|, |pitch|, |yaw| <= deg). Models with a distance head also get the
    stop judgement's frame-by-frame error rates at each of ``stop_thresholds`` (see
    :func:`stop_judgement_table`).
    """
    dataset = GuidanceDataset(data_dir)
    arrays = dataset.split(split)
    if len(arrays['frames']) == 0:
        raise ValueError(f'split {split!r} of {data_dir} has no samples to evaluate on')
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = list(labels or [])
    if labels and len(labels) != len(checkpoints):
        raise ValueError(f'{len(labels)} labels given for {len(checkpoints)} checkpoints')
    dev = torch.device(device)
    dtype = amp_dtype(amp, dev)

    runs = []  # (label, kind, predictions)
    models_info = []
    for k, path in enumerate(checkpoints):
        model, state = load_model(path, device=dev)
        label = labels[k] if labels else (state.get('train_config', {}).get('name') or model.config.kind)
        if any(label == r[0] for r in runs):
            label = f'{label} #{k + 1}'
        if progress:
            progress(f'predicting {split} with {label} ({path})')
        pred = predict_split(model, data_dir, split, batch_size=batch_size, device=dev, dtype=dtype)
        if within is not None:
            keep = within_mask(pred['target'], within)
            if not keep.any():
                raise ValueError(f'no sample of split {split!r} lies within {within[0]} mm / {within[1]} deg')
            pred = {k: np.asarray(v)[keep] for k, v in pred.items()}
        runs.append((label, model.config.kind, pred['pred'], pred))
        if 'pred_policy' in pred:
            runs.append((f'{label} (policy head)', 'dreamer-policy-head', pred['pred_policy'], pred))
        models_info.append(
            {
                'label': label,
                'checkpoint': str(path),
                'sha256': file_sha256(path),
                'kind': model.config.kind,
                'step': state.get('step'),
                'model_config': state['model_config'],
            }
        )
    index = runs[0][3]['index']
    target = runs[0][3]['target']
    plane = runs[0][3]['plane']
    demo = np.asarray(arrays['demo'])[index]
    rng = np.random.default_rng(seed)

    results = {
        'data': str(data_dir),
        'split': split,
        'samples': int(len(index)),
        'models': models_info,
        'ci': {
            'level_percent': CI_LEVEL,
            'percentiles': list(CI_PERCENTILES),
            'resamples': n_boot,
            'method': 'percentile bootstrap over demonstrations (cluster), within each plane; '
            "over all demonstrations for 'all'",
        },
        'within': None if within is None else {'mm': float(within[0]), 'deg': float(within[1])},
        'per_plane': {},
        'relative_change_percent': {},
        'stability': {},
        'stop_judgement': {
            label: stop_judgement_table(np.asarray(pred['distance']), target, stop_thresholds)
            for label, kind, _, pred in runs
            if 'distance' in pred and kind != 'dreamer-policy-head'
        },
    }
    errors = {label: sample_errors(p, target) for label, _, p, _ in runs}
    baseline = next((label for label, kind, _, _ in runs if kind == 'baseline'), None)
    dreamers = [label for label, kind, _, _ in runs if kind == 'dreamer']
    present = [p for i, p in enumerate(GUIDANCE_PLANES) if np.any(plane == i)]
    pose_diff = np.abs(target).mean(axis=1)
    for plane_name in present + ['all']:
        sel = np.ones(len(plane), bool) if plane_name == 'all' else plane == GUIDANCE_PLANES.index(plane_name)
        groups = demo[sel]
        n_groups = len(np.unique(groups))
        weights_boot = bootstrap_indices(n_groups, n_boot, rng)
        plane_res, boots = {}, {}
        for label, _, _, _ in runs:
            e = {k: v[sel] for k, v in errors[label].items()}
            table, boots[label], names = _metric_table(e, groups, weights_boot)
            plane_res[label] = {'samples': int(sel.sum()), 'demonstrations': n_groups, **table}
        results['per_plane'][plane_name] = plane_res
        if baseline:
            rel = {}
            for label in dreamers:
                base_mean = np.array([plane_res[baseline][n]['mean'] for n in names])
                dream_mean = np.array([plane_res[label][n]['mean'] for n in names])
                change = 100.0 * (dream_mean - base_mean) / base_mean
                boot_change = 100.0 * (boots[label] - boots[baseline]) / boots[baseline]
                lo, hi = np.percentile(boot_change, CI_PERCENTILES, axis=0)
                rel[f'{label} vs {baseline}'] = {
                    n: {'percent': float(c), 'ci_low': float(a), 'ci_high': float(b)}
                    for n, c, a, b in zip(names, change, lo, hi)
                }
            results['relative_change_percent'][plane_name] = rel
        if plane_name != 'all':
            edges = np.linspace(pose_diff[sel].min(), pose_diff[sel].max() + 1e-9, bins + 1)
            results['stability'][plane_name] = {
                label: stability_curve(pose_diff[sel], errors[label]['abs'][sel].mean(axis=1), edges)
                for label, _, _, _ in runs
            }
    for label, _, p, pred in runs:
        np.savez_compressed(
            out / f'predictions_{safe_label(label)}.npz',
            pred=p,
            target=target,
            plane=plane,
            index=index,
            demo=demo,
            **({'distance': np.asarray(pred['distance'])} if 'distance' in pred else {}),
        )
    (out / 'results.json').write_text(json.dumps(results, indent=2))
    (out / 'results.md').write_text(results_markdown(results))
    plot_stability(results, out / 'stability.png')
    return results


def _within_lines(within):
    return [f'Samples whose target lies within {within["mm"]:g} mm / {within["deg"]:g}° on every axis.', '']


def results_markdown(results):
    """Table 1 (per plane, per axis MAE with CIs and relative change) and error norms, as Markdown."""
    lines = [
        f'# Guidance evaluation on split `{results["split"]}` of `{results["data"]}`',
        '',
        *(_within_lines(results['within']) if results.get('within') else []),
        f'{results["samples"]} samples. Confidence intervals: {results["ci"]["level_percent"]:.0f} % '
        f'(percentiles {results["ci"]["percentiles"][0]}–{results["ci"]["percentiles"][1]}), '
        f'{results["ci"]["resamples"]} resamples, {results["ci"]["method"]}.',
        '',
        '## Mean absolute error per axis (Table 1)',
        '',
        '| Plane | Model | x (mm) | y (mm) | z (mm) | roll (°) | pitch (°) | yaw (°) |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for plane, models in results['per_plane'].items():
        rel = results['relative_change_percent'].get(plane, {})
        for label, m in models.items():
            cells = []
            for axis in ACTION_AXES:
                v = m[f'mae_{axis}']
                cell = f'{v["mean"]:.2f} [{v["ci_low"]:.2f}, {v["ci_high"]:.2f}]'
                for key, change in rel.items():
                    if key.startswith(label + ' vs '):
                        cell += f' ({change[f"mae_{axis}"]["percent"]:+.1f} %)'
                cells.append(cell)
            lines.append(f'| {plane} | {label} | ' + ' | '.join(cells) + ' |')
    lines += [
        '',
        '## Translation error norm and geodesic rotation error',
        '',
        '| Plane | Model | samples | demos | translation norm (mm) | geodesic (°) |',
        '|---|---|---|---|---|---|',
    ]
    for plane, models in results['per_plane'].items():
        for label, m in models.items():
            t, g = m['translation_norm_mm'], m['geodesic_deg']
            lines.append(
                f'| {plane} | {label} | {m["samples"]} | {m["demonstrations"]} | '
                f'{t["mean"]:.2f} [{t["ci_low"]:.2f}, {t["ci_high"]:.2f}] | '
                f'{g["mean"]:.2f} [{g["ci_low"]:.2f}, {g["ci_high"]:.2f}] |'
            )
    if any(results['relative_change_percent'].values()):
        lines += [
            '',
            '## Relative change of MAE, Dreamer vs baseline (paired bootstrap CI)',
            '',
            '| Plane | Comparison | ' + ' | '.join(ACTION_AXES) + ' |',
            '|---|---|' + '---|' * 6,
        ]
        for plane, comparisons in results['relative_change_percent'].items():
            for key, change in comparisons.items():
                cells = [
                    f'{change[f"mae_{a}"]["percent"]:+.1f} % [{change[f"mae_{a}"]["ci_low"]:+.1f}, '
                    f'{change[f"mae_{a}"]["ci_high"]:+.1f}]'
                    for a in ACTION_AXES
                ]
                lines.append(f'| {plane} | {key} | ' + ' | '.join(cells) + ' |')
    if results.get('stop_judgement'):
        lines += [
            '',
            '## Stop judgement (distance head), frame by frame',
            '',
            '"Reached" = distance below the threshold; false reached: share of frames outside the '
            '5 mm / 5° window called reached; missed: share inside called not reached.',
            '',
            '| Model | threshold | false reached | missed | distance MAE (true distance < 2) |',
            '|---|---|---|---|---|',
        ]
        for label, rows in results['stop_judgement'].items():
            for row in rows:
                lines.append(
                    f'| {label} | {row["threshold"]:.2f} | {100 * row["false_reached"]:.1f} % | '
                    f'{100 * row["missed_reached"]:.1f} % | {row["distance_mae"]:.3f} |'
                )
    lines += ['', 'Models:', '']
    for m in results['models']:
        lines.append(
            f'- {m["label"]}: `{m["checkpoint"]}` ({m["kind"]}, step {m["step"]}, sha256 {m["sha256"][:12]})'
        )
    return '\n'.join(lines) + '\n'


def plot_stability(results, path):
    """Write the Fig. 3 stability plot (one panel per plane) as PNG."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    planes = list(results['stability'])
    fig, axes = plt.subplots(1, max(1, len(planes)), figsize=(5 * max(1, len(planes)), 4), squeeze=False)
    for ax, plane in zip(axes[0], planes):
        for label, curve in results['stability'][plane].items():
            x, m, s = (np.asarray(curve[k]) for k in ('bin_centre', 'mean', 'std'))
            (line,) = ax.plot(x, m, '--', marker='o', markersize=3, label=label)
            ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.2)
        ax.set_title(plane)
        ax.set_xlabel('mean pose difference to target (mm / °)')
        ax.set_ylabel('absolute error (mm / °)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
