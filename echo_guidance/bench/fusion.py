"""`echo-guidance bench fusion`: single-frame against fused guidance on simulated approaches.

Drives the virtual patient in process: for each test-split patient and target plane, an expert-like
approach (the kind of path the training demonstrations follow) is rendered at 30 fps with the arm's
pose noise on the measured poses (:mod:`echo_guidance.guidance.simulated`). The model predicts every
frame once; each variant then turns the same predictions into guidance:

* ``single``: the frame's own prediction (the paper's guidance);
* ``default``: temporal fusion with the shipped settings (``FusionConfig()``, what the node runs);
* ``<method>:<window_s>[:<motion>]``, e.g. ``median:1.0:3``: temporal fusion
  (:mod:`echo_guidance.guidance.fusion`) of the predictions of the last ``window_s`` seconds moved into
  the current probe frame by the measured probe motion, combined by per-axis weighted median or trimmed
  mean, with past frames down-weighted by the probe's travel since (``motion`` mm and degrees; 0 = no
  motion weighting; absent = the default).

Reported per variant, against the ground truth â_t = U⁻¹(T_t⁻¹ · T*) from the true poses:

* **error**: per-axis mean absolute error (mm, degrees, angles wrapped), mean translation-error norm,
  mean geodesic rotation error — all frames, and the frames after the probe reached the plane (hold);
* **jitter**: mean frame-to-frame change of the error |(a_t − â_t) − (a_{t−1} − â_{t−1})| per axis, the
  part of the guidance's frame-to-frame change that the probe's real motion does not explain;
* **plane reached**: share of hold frames judged reached, and of frames judged reached while the true
  pose was farther than the exit thresholds (false "reached");
* **confidence**: mean per-axis error of frames whose axis confidence is >= 0.5 against < 0.5.

Verdict: the default fusion (``default``) is kept when it lowers the jitter (mean over the translation
axes and over the rotation axes) by at least 10 % against ``single`` without raising either mean error
by more than 1 %; otherwise the guidance node should run with ``fusion.enabled: false``.
"""

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

MAX_ERROR_INCREASE_PERCENT = 1.0
MIN_JITTER_DECREASE_PERCENT = 10.0
DEFAULT_VARIANTS = (
    'single,default,median:1.0:0,median:1.0:0.5,median:1.0:2,median:1.0:4,mean:1.0:1,median:2.0:1'
)


def register_bench(subparsers):
    """Add ``bench fusion``."""
    parser = subparsers.add_parser(
        'fusion',
        help='single-frame vs fused guidance on simulated approaches',
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        '--model',
        action='append',
        required=True,
        help='model file (.onnx or checkpoint .pt); repeat to compare several',
    )
    parser.add_argument(
        '--backend', default=None, help='backend (default: onnxruntime-cpu for .onnx, torch-cpu for .pt)'
    )
    parser.add_argument('--patients', type=int, default=5, help='test-split patients (default 5)')
    parser.add_argument('--first-seed', type=int, default=0, help='first patient seed searched (default 0)')
    parser.add_argument('--planes', default='PLAX,PSAX-AV,PSAX-MV', help='target planes')
    parser.add_argument(
        '--approaches', type=int, default=1, help='approaches per patient and plane (default 1)'
    )
    parser.add_argument(
        '--variants', default=DEFAULT_VARIANTS, help=f'guidance variants (default {DEFAULT_VARIANTS})'
    )
    parser.add_argument(
        '--max-duration', type=float, default=None, help='cut approaches after this many seconds'
    )
    parser.add_argument('--threads', type=int, default=2, help='ONNX Runtime threads (default 2)')
    parser.add_argument('--json', default=None, metavar='PATH', help='also write the figures as JSON')
    parser.set_defaults(handler=run)


@dataclasses.dataclass(frozen=True)
class Variant:
    """A guidance variant: name, and the fusion config (None = single frame)."""

    name: str
    fusion: object


def parse_variants(text):
    """Variants from ``single,median:1.0,mean:0.5``; raise ValueError naming a bad entry."""
    from echo_guidance.guidance.fusion import FusionConfig

    variants = []
    for item in (t.strip() for t in text.split(',')):
        if not item:
            continue
        if item == 'single':
            variants.append(Variant('single', FusionConfig(enabled=False)))
            continue
        if item == 'default':
            variants.append(Variant('default', FusionConfig()))
            continue
        method, _, rest = item.partition(':')
        window, _, motion = rest.partition(':')
        try:
            extra = {'motion_scale_mm': float(motion), 'motion_scale_deg': float(motion)} if motion else {}
            window_s = float(window) if window else 1.0
            config = FusionConfig(
                method=method, window_s=window_s, max_frames=max(30, int(window_s * 30) + 1), **extra
            )
        except ValueError as err:
            raise ValueError(f'variant {item!r}: {err}') from None
        variants.append(Variant(item, config))
    if not variants:
        raise ValueError('no variants given')
    return variants


def run_variant(variant, approach, raw, reached_config=None):
    """Guidance (actions (N, 6), axis confidences (N, 6), reached (N,)) of one variant on one approach."""
    from echo_guidance.guidance.fusion import PlaneReachedJudge, TemporalFusion

    fusion = TemporalFusion(variant.fusion)
    judge = PlaneReachedJudge(reached_config)
    actions, confidences, reached = [], [], []
    for stamp, pose, prediction in zip(approach.stamps, approach.measured_poses, raw):
        estimate = fusion.update(stamp, pose, prediction)
        actions.append(estimate.action)
        confidences.append(estimate.axis_confidence)
        reached.append(judge.update(estimate.action, estimate.confidence))
    return np.array(actions), np.array(confidences), np.array(reached)


def action_errors(pred, truth):
    """Per-axis signed error (N, 6), angles wrapped to (−180, 180]."""
    from echo_guidance.guidance.fusion import wrap_degrees

    err = np.asarray(pred, dtype=float) - np.asarray(truth, dtype=float)
    err[:, 3:] = wrap_degrees(err[:, 3:])
    return err


def summarise(records, reached_config=None):
    """Figures of one variant over all approaches (see the module docstring)."""
    from echo_guidance.geometry import geodesic_rotation_error_deg, translation_error_mm
    from echo_guidance.guidance.fusion import ReachedConfig, rotation_angle_deg

    cfg = reached_config or ReachedConfig()
    errors, jitter, hold_errors, hold_jitter = [], [], [], []
    norms, geodesic, conf_hi, conf_lo = [], [], [], []
    hold_frames = hold_reached = false_reached = frames = 0
    for approach, actions, confidences, reached in records:
        err = action_errors(actions, approach.actions)
        errors.append(np.abs(err))
        step = np.abs(np.diff(err, axis=0))
        step[:, 3:] = np.abs(((np.diff(err[:, 3:], axis=0) + 180.0) % 360.0) - 180.0)
        jitter.append(step)
        hold = approach.stamps >= approach.reach_time
        hold_errors.append(np.abs(err[hold]))
        hold_jitter.append(step[hold[1:] & hold[:-1]])
        norms.append(translation_error_mm(actions, approach.actions))
        geodesic.append(geodesic_rotation_error_deg(actions, approach.actions))
        hi = confidences >= 0.5
        conf_hi.append(np.where(hi, np.abs(err), np.nan))
        conf_lo.append(np.where(~hi, np.abs(err), np.nan))
        hold_frames += int(hold.sum())
        hold_reached += int((reached & hold).sum())
        true_t = np.linalg.norm(approach.actions[:, :3], axis=1)
        true_r = np.array([rotation_angle_deg(a) for a in approach.actions])
        false_reached += int((reached & ((true_t > cfg.exit_mm) | (true_r > cfg.exit_deg))).sum())
        frames += len(actions)

    def axes(blocks):
        stacked = np.concatenate(blocks, axis=0) if blocks else np.zeros((0, 6))
        return [round(float(v), 3) for v in np.nanmean(stacked, axis=0)] if len(stacked) else [None] * 6

    mae, jit = axes(errors), axes(jitter)
    return {
        'frames': frames,
        'mae': mae,
        'mae_translation_mean': round(float(np.mean(mae[:3])), 3),
        'mae_rotation_mean': round(float(np.mean(mae[3:])), 3),
        'translation_error_norm_mm': round(float(np.mean(np.concatenate(norms))), 3),
        'geodesic_rotation_error_deg': round(float(np.mean(np.concatenate(geodesic))), 3),
        'jitter': jit,
        'jitter_translation_mean': round(float(np.mean(jit[:3])), 3),
        'jitter_rotation_mean': round(float(np.mean(jit[3:])), 3),
        'hold_mae': axes(hold_errors),
        'hold_jitter': axes(hold_jitter),
        'hold_frames': hold_frames,
        'hold_reached_share': round(hold_reached / hold_frames, 3) if hold_frames else None,
        'false_reached_frames': false_reached,
        'mae_confidence_at_least_0.5': axes(conf_hi),
        'mae_confidence_below_0.5': axes(conf_lo),
    }


def verdict(summaries):
    """Whether the default fusion beats single-frame guidance on both error and jitter."""
    if 'single' not in summaries or 'default' not in summaries:
        return None
    single, fused = summaries['single'], summaries['default']
    def change(key):
        before, after = single[key], fused[key]
        if before == 0:
            return 0.0 if after == 0 else math.inf
        return 100.0 * (after / before - 1.0)

    error_change = {group: change(f'mae_{group}_mean') for group in ('translation', 'rotation')}
    jitter_change = {group: change(f'jitter_{group}_mean') for group in ('translation', 'rotation')}
    error_ok = all(v <= MAX_ERROR_INCREASE_PERCENT for v in error_change.values())
    jitter_ok = all(v <= -MIN_JITTER_DECREASE_PERCENT for v in jitter_change.values())
    return {
        'keep_fusion': bool(error_ok and jitter_ok),
        'error_change_percent': {k: round(v, 1) for k, v in error_change.items()},
        'jitter_change_percent': {k: round(v, 1) for k, v in jitter_change.items()},
    }


def predict_approach(backend, approach, plane):
    """The model's raw prediction (N, 6) for every frame of an approach (preprocessing contract applied)."""
    from echo_guidance.guidance.preprocess import prepare_frame

    index = backend.planes.index(plane)
    return np.stack([backend.predict(prepare_frame(f, backend.input_size), index) for f in approach.frames])


def run(args):
    """Run the benchmark; return 0, or 2 when it could not run."""
    from echo_guidance.guidance.backends import BackendError, load_backend
    from echo_guidance.guidance.simulated import simulate_approach
    from echo_guidance.planes import check_plane
    from echo_guidance.sim import Patient, ProbeConfig, ProbeRenderer
    from echo_guidance.sim.splits import seeds_for_split

    try:
        variants = parse_variants(args.variants)
        planes = [check_plane(p.strip()) for p in args.planes.split(',') if p.strip()]
        backends = [
            load_backend(
                m,
                args.backend or ('torch-cpu' if m.endswith(('.pt', '.pth')) else 'onnxruntime-cpu'),
                threads=args.threads,
            )
            for m in args.model
        ]
    except (BackendError, ValueError) as err:
        print(f'bench fusion: {err}', file=sys.stderr)
        return 2
    if args.patients < 1 or args.approaches < 1:
        print('bench fusion: --patients and --approaches must be >= 1', file=sys.stderr)
        return 2
    sizes = {b.input_size for b in backends}
    seeds = seeds_for_split('test', args.patients, args.first_seed)
    print(
        f'bench fusion: models {", ".join(b.model_id for b in backends)}; test patients {seeds}; planes '
        f'{", ".join(planes)}; {args.approaches} approach(es) each; '
        f'variants {", ".join(v.name for v in variants)}',
        flush=True,
    )
    records = {(b.model_id, v.name): [] for b in backends for v in variants}
    started = time.monotonic()
    for seed in seeds:
        patient = Patient.from_seed(seed)
        for size in sorted(sizes):
            renderer = ProbeRenderer(patient, ProbeConfig(width=size, height=size))
            for plane in planes:
                for k in range(args.approaches):
                    approach = simulate_approach(
                        patient, renderer, plane, demo_index=k, max_duration_s=args.max_duration
                    )
                    for backend in (b for b in backends if b.input_size == size):
                        raw = predict_approach(backend, approach, plane)
                        for variant in variants:
                            actions, confidences, reached = run_variant(variant, approach, raw)
                            records[(backend.model_id, variant.name)].append(
                                (approach, actions, confidences, reached)
                            )
        print(f'  patient {seed} done ({time.monotonic() - started:.0f} s)', flush=True)
    report = {'patients': seeds, 'planes': planes, 'approaches': args.approaches, 'models': {}}
    for backend in backends:
        summaries = {v.name: summarise(records[(backend.model_id, v.name)]) for v in variants}
        report['models'][backend.model_id] = {'variants': summaries, 'verdict': verdict(summaries)}
        _print_table(backend.model_id, summaries, report['models'][backend.model_id]['verdict'])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _print_table(model_id, summaries, decision):
    print(f'\n{model_id}')
    print(
        f'  {"variant":<12} {"MAE mm (x,y,z)":>22} {"MAE deg (r,p,y)":>22} {"|t| mm":>7} {"geo deg":>8} '
        f'{"jitter mm":>9} {"jitter deg":>10} {"hold MAE mm/deg":>16} {"reached":>8} {"false":>6}'
    )
    for name, s in summaries.items():
        hold = s['hold_mae']
        hold_text = f'{np.mean(hold[:3]):.2f}/{np.mean(hold[3:]):.2f}' if hold[0] is not None else '-'
        print(
            f'  {name:<12} {" ".join(f"{v:6.2f}" for v in s["mae"][:3]):>22} '
            f'{" ".join(f"{v:6.2f}" for v in s["mae"][3:]):>22} {s["translation_error_norm_mm"]:7.2f} '
            f'{s["geodesic_rotation_error_deg"]:8.2f} {s["jitter_translation_mean"]:9.3f} '
            f'{s["jitter_rotation_mean"]:10.3f} {hold_text:>16} '
            f'{s["hold_reached_share"] if s["hold_reached_share"] is not None else "-":>8} '
            f'{s["false_reached_frames"]:>6}'
        )
    if decision is not None:
        print(
            f'  verdict: default fusion vs single: error change (%) {decision["error_change_percent"]}, '
            f'jitter change (%) {decision["jitter_change_percent"]} -> '
            f'{"keep fusion" if decision["keep_fusion"] else "disable fusion (fusion.enabled: false)"}'
        )
