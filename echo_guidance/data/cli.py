"""``echo-guidance dataset``: build training datasets from demonstration bags, inspect and benchmark them."""

import sys

from echo_guidance.cli_options import add_output_dir
from echo_guidance.planes import GUIDANCE_PLANES


def register(subparsers):
    """Add ``dataset build | info | bench | synth``."""
    p = subparsers.add_parser('dataset', help='build and inspect training datasets from demonstration bags')
    sub = p.add_subparsers(dest='dataset_command', metavar='ACTION')
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])

    b = sub.add_parser(
        'build', help='demonstration bags -> frames with ground-truth actions, split by subject'
    )
    b.add_argument('bags', nargs='+', help='bag directories, or folders searched recursively for bags')
    add_output_dir(b, 'new dataset directory', required=True)
    b.add_argument('--size', type=int, default=128, help='side of the stored square frames (default 128)')
    b.add_argument(
        '--fractions',
        type=float,
        nargs=3,
        default=(0.7, 0.15, 0.15),
        metavar=('TRAIN', 'VAL', 'TEST'),
        help='shares of subjects per split (default 0.7 0.15 0.15)',
    )
    b.add_argument('--seed', type=int, default=0, help='seed of the subject split')
    b.add_argument(
        '--subject-split',
        action='append',
        default=[],
        metavar='SUBJECT=SPLIT',
        help='put a subject in a given split (repeatable)',
    )
    b.add_argument(
        '--target-source',
        choices=('auto', 'mark', 'declared'),
        default='auto',
        help="target pose: the TARGET_REACHED mark's pose (auto: mark, else the session's declared "
        'target), or always the declared target where present',
    )
    b.add_argument(
        '--mark-tolerance',
        type=float,
        default=0.1,
        help='max distance (s) of pose samples from a mark to take its pose (default 0.1)',
    )
    b.add_argument(
        '--declared-splits',
        action='store_true',
        help='use the split each session declares in extra_yaml (split: or simulator.split:) for its subject',
    )
    b.add_argument(
        '--skip-bad', action='store_true', help='skip unreadable bags (counted) instead of stopping'
    )
    b.set_defaults(handler=_build)

    sp = sub.add_parser(
        'sample',
        help='frames rendered by the simulator at poses sampled around each plane, labelled exactly',
        description='Draw probe poses around each target plane of virtual patients (a mixture of '
        'regions), render them with the heart at a random phase and write a dataset in the same '
        "format as `dataset build` (patients keep the simulator's train/val/test split).",
    )
    add_output_dir(sp, 'new dataset directory', required=True)
    sp.add_argument('--train-patients', type=int, default=60, help='patients of the train split (default 60)')
    sp.add_argument('--val-patients', type=int, default=5, help='patients of the val split (default 5)')
    sp.add_argument('--test-patients', type=int, default=0, help='patients of the test split (default 0)')
    sp.add_argument(
        '--first-seed',
        type=int,
        default=1,
        help='first patient seed considered (default 1: the demo patient, seed 0, stays unseen)',
    )
    sp.add_argument(
        '--planes',
        default=','.join(GUIDANCE_PLANES),
        help='comma-separated target planes (default all three)',
    )
    sp.add_argument(
        '--poses-per-plane', type=int, default=300, help='poses per patient and plane (default 300)'
    )
    sp.add_argument(
        '--region',
        action='append',
        default=[],
        metavar='FRACTION:MM,DEG,DEPTH_MM',
        help='a share of the poses drawn within ±MM (x, y), ±DEG (roll, pitch, yaw) and ±DEPTH_MM '
        '(beam axis) of the plane (repeatable; default 0.5:6,6,3 and 0.5:30,30,5)',
    )
    sp.add_argument(
        '--group-size', type=int, default=50, help='poses per group ("demonstration") (default 50)'
    )
    sp.add_argument('--size', type=int, default=128, help='side of the stored square frames (default 128)')
    sp.add_argument(
        '--render-size', type=int, default=128, help='side of the rendered frames (default 128, as capture)'
    )
    sp.add_argument('--seed', type=int, default=0, help='seed of the pose draws (default 0)')
    sp.add_argument('--no-progress', action='store_true', help='print no progress lines')
    sp.set_defaults(handler=_sample)

    dg = sub.add_parser(
        'dagger',
        help='one DAgger round: run a policy in closed loop on training patients and label every '
        'visited pose with the simulator',
        description='Run POLICY (as closed-loop takes it) on virtual patients of the train split, '
        'record the pose of every frame it saw, label each with the ground-truth action and write '
        'them as a dataset (with --base: the base dataset plus the new samples).',
    )
    dg.add_argument(
        '--policy', required=True, metavar='[NAME=]SPEC', help='policy, as `closed-loop --policy`'
    )
    add_output_dir(dg, 'new dataset directory', required=True)
    dg.add_argument('--base', default=None, help='dataset to extend (the output holds both)')
    dg.add_argument('--train-patients', type=int, default=30, help='train-split patients (default 30)')
    dg.add_argument(
        '--first-seed',
        type=int,
        default=1,
        help='first patient seed (default 1: the demo patient stays unseen)',
    )
    dg.add_argument('--starts', type=int, default=2, help='random starts per patient and plane (default 2)')
    dg.add_argument(
        '--planes',
        default=','.join(GUIDANCE_PLANES),
        help='comma-separated target planes (default all three)',
    )
    dg.add_argument('--size', type=int, default=128, help='side of the stored frames (default 128)')
    dg.add_argument('--seed', type=int, default=0, help='seed of the start poses (default 0)')
    dg.add_argument(
        '--config',
        action='append',
        default=None,
        help='arm_control parameter file (limits, planner), as closed-loop (default config/arm_control.yaml)',
    )
    dg.add_argument(
        '--guidance-config', default=None, help='guidance node parameter file (default config/guidance.yaml)'
    )
    dg.add_argument('--threads', type=int, default=1, help='ONNX Runtime threads (default 1)')
    dg.add_argument('--no-progress', action='store_true', help='print no progress lines')
    dg.set_defaults(handler=_dagger)

    m = sub.add_parser(
        'merge',
        help='concatenate datasets of one frame size (e.g. demonstrations + sampled poses + DAgger rounds)',
    )
    m.add_argument('datasets', nargs='+', help='dataset directories')
    add_output_dir(m, 'new dataset directory', required=True)
    m.add_argument(
        '--size', type=int, default=None, help="resize every frame to this side (default: the inputs' size)"
    )
    m.set_defaults(handler=_merge)

    i = sub.add_parser('info', help='summarise a dataset directory')
    i.add_argument('dir', help='dataset directory')
    i.set_defaults(handler=_info)

    n = sub.add_parser('bench', help='measure loader throughput (samples/s)')
    n.add_argument('dir', help='dataset directory')
    n.add_argument('--split', default='train', help='split to load (default train)')
    n.add_argument('--batch-size', type=int, default=32, help='samples per batch (default 32)')
    n.add_argument('--pairs', action='store_true', help='draw world-model pairs as for Cardiac Dreamer')
    n.add_argument('--size', type=int, default=None, help='resize frames to this side on load')
    n.add_argument('--workers', type=int, default=1, help='loader worker processes (default 1)')
    n.add_argument('--batches', type=int, default=100, help='batches timed (default 100)')
    n.set_defaults(handler=_bench)

    s = sub.add_parser('synth', help='a small synthetic dataset (no simulator) for smoke tests')
    add_output_dir(s, 'new dataset directory', required=True)
    s.add_argument('--subjects', type=int, default=6, help='subjects (default 6)')
    s.add_argument('--frames', type=int, default=30, help='frames per demonstration')
    s.add_argument('--demos-per-plane', type=int, default=2, help='demonstrations per plane (default 2)')
    s.add_argument('--size', type=int, default=64, help='side of the frames (default 64)')
    s.add_argument('--seed', type=int, default=0, help='seed (default 0)')
    s.set_defaults(handler=_synth)


def _parse_subject_splits(items):
    out = {}
    for item in items:
        if '=' not in item:
            raise ValueError(f'--subject-split {item!r}: expected SUBJECT=SPLIT')
        subject, split = item.split('=', 1)
        out[subject] = split
    return out


def _declared_splits(sources):
    """{subject: split} from the bags' declared splits; ValueError when one subject is declared in two."""
    out = {}
    for summary in sources:
        split, subject = summary.get('declared_split'), summary.get('subject')
        if not split or not subject:
            continue
        if out.setdefault(subject, split) != split:
            raise ValueError(f'subject {subject!r} is declared in split {out[subject]!r} and {split!r}')
    return out


def _build(args):
    import collections
    import json

    from echo_guidance.data.dataset import DatasetError, describe, write_dataset
    from echo_guidance.data.from_bags import BagDataError, find_bags, read_bag_demonstrations

    try:
        bags = find_bags(args.bags)
        demos, excluded, sources = [], collections.Counter(), []
        for bag in bags:
            try:
                d, ex, summary = read_bag_demonstrations(
                    bag, args.size, args.target_source, args.mark_tolerance
                )
            except BagDataError as exc:
                if not args.skip_bad:
                    raise
                print(f'skipping: {exc}', file=sys.stderr)
                excluded['unreadable_bags'] += 1
                sources.append({'bag': str(bag), 'error': str(exc)})
                continue
            print(
                f'{bag}: {summary["frames"]} frames, {len(d)} demonstrations'
                + (f', excluded {dict(ex)}' if sum(ex.values()) else '')
            )
            demos.extend(d)
            excluded.update(ex)
            sources.append(summary)
        fixed = _parse_subject_splits(args.subject_split)
        if args.declared_splits:
            fixed = {**_declared_splits(sources), **fixed}
        manifest = write_dataset(
            demos,
            args.out,
            args.size,
            tuple(args.fractions),
            args.seed,
            fixed,
            dict(excluded),
            sources,
        )
    except (DatasetError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(describe(manifest))
    print(json.dumps({'out': args.out, 'excluded_frames': manifest['excluded_frames']}))
    return 0


def _info(args):
    from echo_guidance.data.dataset import DatasetError, GuidanceDataset, describe

    try:
        ds = GuidanceDataset(args.dir)
    except DatasetError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(describe(ds.manifest))
    return 0


def _bench(args):
    import json

    from echo_guidance.data.dataset import DatasetError
    from echo_guidance.data.loader import benchmark_loader

    try:
        result = benchmark_loader(
            args.dir, args.split, args.batch_size, args.pairs, args.size, args.workers, args.batches
        )
    except DatasetError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def _synth(args):
    from echo_guidance.data.dataset import DatasetError, describe, write_dataset
    from echo_guidance.data.synthetic import synthetic_demonstrations

    demos = synthetic_demonstrations(
        args.subjects, args.demos_per_plane, args.frames, args.size, seed=args.seed
    )
    try:
        manifest = write_dataset(
            demos, args.out, args.size, seed=args.seed, sources=[{'synthetic': True, 'seed': args.seed}]
        )
    except DatasetError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(describe(manifest))
    return 0


def sampler_plan(args):
    """(seeds by split, SamplerConfig) from ``dataset sample`` arguments; ValueError naming a bad one."""
    from echo_guidance.planes import check_plane
    from echo_guidance.sim.sampler import DEFAULT_REGIONS, SamplerConfig, SampleRegion
    from echo_guidance.sim.splits import seeds_for_split

    for name in ('train_patients', 'val_patients', 'test_patients', 'first_seed'):
        if getattr(args, name) < 0:
            raise ValueError(f'--{name.replace("_", "-")} must be >= 0, got {getattr(args, name)}')
    planes = [check_plane(p.strip()) for p in args.planes.split(',') if p.strip()]
    if not planes:
        raise ValueError('--planes names no plane')
    regions = tuple(SampleRegion.parse(text) for text in args.region) or DEFAULT_REGIONS
    config = SamplerConfig(args.poses_per_plane, regions, args.group_size)
    seeds = {
        split: seeds_for_split(split, count, args.first_seed)
        for split, count in (
            ('train', args.train_patients),
            ('val', args.val_patients),
            ('test', args.test_patients),
        )
    }
    if not seeds['train']:
        raise ValueError('--train-patients is 0: a dataset needs training patients')
    return planes, seeds, config


def _sample(args):
    import itertools
    import time

    from echo_guidance.data.dataset import DatasetError, describe, write_dataset
    from echo_guidance.sim import patient_id_for_seed
    from echo_guidance.sim.sampler import sampled_demonstrations

    try:
        planes, seeds, config = sampler_plan(args)
        all_seeds = list(itertools.chain(*seeds.values()))
        fixed = {patient_id_for_seed(s): split for split, group in seeds.items() for s in group}
        started = time.monotonic()
        total = len(all_seeds) * len(planes) * config.poses_per_plane
        counts = ', '.join(f'{split} {len(group)}' for split, group in seeds.items())
        print(
            f'sampling {total} frames: {len(all_seeds)} patients ({counts}), '
            f'planes {", ".join(planes)}; {config.describe()}',
            flush=True,
        )
        demos = sampled_demonstrations(all_seeds, planes, config, args.render_size, args.seed)
        seen = set()

        def progress(text):  # one line per patient, not per group
            subject = text.split('(', 1)[-1].split(',', 1)[0]
            if subject not in seen:
                seen.add(subject)
                print(
                    f'[{len(seen)}/{len(all_seeds)}] {text.split(":", 1)[0]} {subject} '
                    f'({time.monotonic() - started:.0f} s)',
                    flush=True,
                )

        manifest = write_dataset(
            demos,
            args.out,
            args.size,
            fixed_splits=fixed,
            sources=[
                {
                    'sampler': config.to_dict(),
                    'seed': args.seed,
                    'render_size': args.render_size,
                    'patients': {k: list(v) for k, v in seeds.items()},
                    'planes': planes,
                }
            ],
            progress=None if args.no_progress else progress,
        )
    except (DatasetError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(describe(manifest))
    print(f'written in {time.monotonic() - started:.0f} s')
    return 0


def _merge(args):
    from echo_guidance.data.dataset import DatasetError, describe, merge_datasets

    try:
        manifest = merge_datasets(args.datasets, args.out, progress=print, size=args.size)
    except DatasetError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(describe(manifest))
    return 0


def _dagger(args):
    import pathlib
    import tempfile
    import time

    from echo_guidance.closed_loop.cli import load_controller_config
    from echo_guidance.closed_loop.dagger import collect_visited_states, dagger_demonstrations
    from echo_guidance.closed_loop.episode import ClosedLoopConfig
    from echo_guidance.closed_loop.policies import PolicySpecError, parse_policy
    from echo_guidance.data.dataset import DatasetError, describe, merge_datasets, write_dataset
    from echo_guidance.guidance.settings import guidance_parameters_from_yaml
    from echo_guidance.planes import check_plane
    from echo_guidance.sim import patient_id_for_seed
    from echo_guidance.sim.splits import seeds_for_split

    started = time.monotonic()
    try:
        planes = [check_plane(p.strip()) for p in args.planes.split(',') if p.strip()]
        if args.train_patients < 1 or args.starts < 1:
            raise ValueError('--train-patients and --starts must be at least 1')
        if pathlib.Path(args.out).exists() and any(pathlib.Path(args.out).iterdir()):
            raise DatasetError(f'output directory {args.out} exists and is not empty; choose a new one')
        seeds = seeds_for_split('train', args.train_patients, args.first_seed)
        limits, planner = load_controller_config(args.config)
        parameters = guidance_parameters_from_yaml(args.guidance_config) if args.guidance_config else None
        name, factory = parse_policy(args.policy, args.seed, args.threads, parameters)
        config = ClosedLoopConfig()
        progress = None if args.no_progress else (lambda text: print(text, flush=True))
        episodes = collect_visited_states(
            factory, seeds, planes, args.starts, limits, planner, config, args.seed, progress
        )
        successes = sum(e.success for e in episodes)
        print(
            f'dagger: {len(episodes)} episodes of {name}, {successes} successful, '
            f'{sum(len(e.times) for e in episodes)} visited frames ({time.monotonic() - started:.0f} s)',
            flush=True,
        )
        source = {
            'dagger': {
                'policy': args.policy,
                'policy_description': factory.describe(),
                'patients': seeds,
                'planes': planes,
                'starts': args.starts,
                'seed': args.seed,
                'episodes': len(episodes),
                'successes': successes,
            }
        }
        fixed = {patient_id_for_seed(seed): 'train' for seed in seeds}
        demos = dagger_demonstrations(episodes, name, config.image_size)
        if args.base is None:
            manifest = write_dataset(demos, args.out, args.size, fixed_splits=fixed, sources=[source])
        else:
            parent = pathlib.Path(args.out).resolve().parent
            parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=parent) as scratch:
                new = pathlib.Path(scratch) / 'dagger'
                write_dataset(demos, new, args.size, fixed_splits=fixed, sources=[source])
                manifest = merge_datasets(
                    [args.base, new], args.out, labels=[args.base, f'dagger round ({name})']
                )
    except (DatasetError, PolicySpecError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(describe(manifest))
    print(f'written in {time.monotonic() - started:.0f} s')
    return 0
