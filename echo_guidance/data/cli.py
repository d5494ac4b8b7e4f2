"""``echo-guidance dataset``: build training datasets from demonstration bags, inspect and benchmark them."""

import sys

from echo_guidance.cli_options import add_output_dir


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
