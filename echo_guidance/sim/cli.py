"""`echo-guidance sim ...`: benchmark, demonstrations, contact sheet, single frames, patient lists.

Heavy modules (OpenCV, the renderer) are imported inside the handlers so ``--help`` stays fast.
"""

import argparse
import sys
from pathlib import Path

from echo_guidance.cli_options import add_no_progress, add_output_dir, add_output_file
from echo_guidance.planes import GUIDANCE_PLANES

MANIFEST_NAME = 'manifest.yaml'


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}') from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {value}')
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected an integer >= 0, got {text!r}') from None
    if value < 0:
        raise argparse.ArgumentTypeError(f'expected an integer >= 0, got {value}')
    return value


def _sizes(text):
    sizes = []
    for part in text.split(','):
        bits = part.lower().split('x')
        try:
            if len(bits) == 1:
                sizes.append((int(bits[0]), int(bits[0])))
            elif len(bits) == 2:
                sizes.append((int(bits[0]), int(bits[1])))
            else:
                raise ValueError
        except ValueError:
            raise argparse.ArgumentTypeError(
                f'image sizes are WIDTHxHEIGHT or SIZE, comma separated (e.g. 128x128,256x256), got {part!r}'
            ) from None
    return sizes


def _planes(text):
    from echo_guidance.planes import UnknownPlaneError, check_plane
    from echo_guidance.sim.patient import SIM_PLANES

    try:
        return [check_plane(p.strip(), SIM_PLANES) for p in text.split(',') if p.strip()]
    except UnknownPlaneError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seeds(text):
    try:
        seeds = [int(s) for s in text.split(',') if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated patient seeds, got {text!r}') from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f'expected non-negative patient seeds, got {text!r}')
    return seeds


def register(subparsers):
    """Add the ``sim`` command and its subcommands."""
    sim = subparsers.add_parser(
        'sim',
        help='virtual patient: benchmark, demonstrations, contact sheet',
        description='The virtual patient (docs/simulator.md).',
    )
    sub = sim.add_subparsers(dest='sim_command', metavar='SIM_COMMAND')
    sim.set_defaults(handler=lambda args: (sim.print_help(), 2)[1])

    p = sub.add_parser('bench', help='rendering speed, frames per second per image size')
    p.add_argument(
        '--sizes',
        type=_sizes,
        default=[(128, 128), (256, 256)],
        help='image sizes, e.g. 128x128,256x256 (default)',
    )
    p.add_argument('--seconds', type=float, default=2.0, help='time spent rendering per size (default 2)')
    p.add_argument('--seed', type=_non_negative_int, default=0, help='patient seed (default 0)')
    p.set_defaults(handler=cmd_bench)

    p = sub.add_parser('demos', help='write expert-like demonstration bags for N patients x planes')
    p.add_argument('--patients', type=_positive_int, required=True, help='number of patients')
    add_output_dir(p, 'output folder (bags go to OUTPUT_DIR/<split>/<patient>/)', required=True, type=Path)
    p.add_argument(
        '--split',
        choices=('train', 'val', 'test'),
        default='train',
        help='which split the patients come from (default train; see docs/simulator.md)',
    )
    p.add_argument(
        '--seed',
        type=_non_negative_int,
        default=0,
        help='first patient seed to consider (default 0); also varies the demonstrations',
    )
    p.add_argument(
        '--demos-per-plane', type=_positive_int, default=1, help='demonstrations per plane (default 1)'
    )
    p.add_argument(
        '--planes',
        type=_planes,
        default=list(GUIDANCE_PLANES),
        help='comma-separated planes (default PLAX,PSAX-AV,PSAX-MV)',
    )
    p.add_argument('--size', type=_sizes, default=[(128, 128)], help='image size (default 128x128)')
    p.add_argument(
        '--latency-ms', type=float, default=80.0, help='device latency of the frames (default 80)'
    )
    p.add_argument(
        '--workers', type=_positive_int, default=1, help='processes (default 1; the CPU has 2 cores)'
    )
    p.add_argument('--skip-existing', action='store_true', help='leave bags that already exist alone')
    add_no_progress(p)
    p.set_defaults(handler=cmd_demos)

    p = sub.add_parser('sheet', help='contact sheet of the standard planes and their neighbours')
    add_output_file(p, 'PNG file to write', required=True, type=Path)
    p.add_argument('--seeds', type=_seeds, default=[0, 1], help='patient seeds (default 0,1)')
    p.add_argument(
        '--planes', type=_planes, default=list(GUIDANCE_PLANES), help='planes (default guidance planes)'
    )
    p.add_argument('--size', type=_positive_int, default=128, help='tile size in pixels (default 128)')
    p.set_defaults(handler=cmd_sheet)

    p = sub.add_parser('render', help='render one frame (and its label image) of a standard plane')
    p.add_argument('--seed', type=_non_negative_int, default=0, help='patient seed (default 0)')
    p.add_argument(
        '--plane', type=lambda t: _planes(t)[0], default='PLAX', help='standard plane (default PLAX)'
    )
    p.add_argument('--time', type=float, default=0.0, help='time in seconds (cardiac phase; default 0)')
    p.add_argument('--size', type=_sizes, default=[(256, 256)], help='image size (default 256x256)')
    add_output_file(p, 'PNG file to write (labels go to *_labels.png)', required=True, type=Path)
    p.set_defaults(handler=cmd_render)

    p = sub.add_parser('patients', help='list the patient seeds of a split')
    p.add_argument('--split', choices=('train', 'val', 'test'), default='train', help='split (default train)')
    p.add_argument('--count', type=_positive_int, default=10, help='patients listed (default 10)')
    p.add_argument('--seed', type=_non_negative_int, default=0, help='first seed to consider')
    p.set_defaults(handler=cmd_patients)


def cmd_bench(args):
    """Print ``WxH: N frames/s`` per size."""
    from echo_guidance.sim.bench import benchmark, machine_description

    if args.seconds <= 0:
        print(f'error: --seconds must be > 0, got {args.seconds}', file=sys.stderr)
        return 2
    print(f'machine: {machine_description()}')
    for width, height, fps in benchmark(args.sizes, args.seconds, seed=args.seed):
        print(f'{width}x{height}: {fps:.0f} frames/s', flush=True)
    print(f'after: {machine_description()}')
    return 0


def _demos_for_patient(job):
    """Write every demonstration of one patient (runs in a worker process); return result dicts."""
    from echo_guidance.sim.demonstrations import DemoConfig, make_demonstration
    from echo_guidance.sim.patient import Patient
    from echo_guidance.sim.probe import ProbeConfig, ProbeRenderer

    seed, planes, per_plane, out, split, size, latency_s, base_seed, skip_existing = job
    patient = Patient.from_seed(seed)
    probe = ProbeConfig(width=size[0], height=size[1])
    renderer = ProbeRenderer(patient, probe)
    results = []
    for plane in planes:
        for k in range(per_plane):
            path = Path(out) / split / patient.patient_id / f'{plane}_{k:02d}'
            if skip_existing and (path / 'metadata.yaml').exists():
                results.append({'path': str(path), 'skipped': True})
                continue
            result = make_demonstration(
                patient,
                plane,
                path,
                demo_index=k,
                base_seed=base_seed,
                probe_config=probe,
                demo_config=DemoConfig(latency_s=latency_s),
                split=split,
                renderer=renderer,
            )
            results.append(result.as_dict())
    return seed, results


def cmd_demos(args):
    """Write N patients x planes x demos-per-plane bags and a manifest."""
    import multiprocessing

    import yaml

    from echo_guidance.progress import progress_bar
    from echo_guidance.sim.splits import seeds_for_split

    if not 0 <= args.latency_ms <= 2000:
        print(f'error: --latency-ms must be 0..2000, got {args.latency_ms}', file=sys.stderr)
        return 2
    seeds = seeds_for_split(args.split, args.patients, args.seed)
    size = args.size[0]
    if not args.skip_existing:
        from echo_guidance.sim.patient import patient_id_for_seed

        existing = [
            args.out / args.split / patient_id_for_seed(s) / f'{plane}_{k:02d}'
            for s in seeds
            for plane in args.planes
            for k in range(args.demos_per_plane)
        ]
        existing = [p for p in existing if p.exists()]
        if existing:
            print(
                f'error: {len(existing)} bag folder(s) exist already, e.g. {existing[0]}; '
                'use --skip-existing to keep them, or another --output-dir',
                file=sys.stderr,
            )
            return 2
    jobs = [
        (
            s,
            args.planes,
            args.demos_per_plane,
            str(args.out),
            args.split,
            size,
            args.latency_ms / 1000.0,
            args.seed,
            args.skip_existing,
        )
        for s in seeds
    ]
    total = len(jobs) * len(args.planes) * args.demos_per_plane
    results = []
    with progress_bar(total, f'sim demos ({args.split})', 'demo', enabled=not args.no_progress) as bar:
        if args.workers == 1:
            outputs = map(_demos_for_patient, jobs)
            pool = None
        else:
            pool = multiprocessing.get_context('fork').Pool(min(args.workers, len(jobs)))
            outputs = pool.imap_unordered(_demos_for_patient, jobs)
        try:
            for _, patient_results in outputs:
                results.extend(patient_results)
                bar.update(len(patient_results))
        finally:
            if pool is not None:
                pool.close()
                pool.join()

    manifest_path = args.out / MANIFEST_NAME
    manifest = {'bags': []}
    if manifest_path.exists():
        manifest = yaml.safe_load(manifest_path.read_text()) or {'bags': []}
    by_path = {b['path']: b for b in manifest.get('bags', [])}
    written = 0
    for r in results:
        if r.get('skipped'):
            continue
        r = dict(r, path=str(Path(r['path']).relative_to(args.out)), split=args.split)
        by_path[r['path']] = r
        written += 1
    manifest['bags'] = sorted(by_path.values(), key=lambda b: b['path'])
    manifest['splits'] = 'by patient: see echo_guidance/sim/splits.py and docs/simulator.md'
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    skipped = sum(1 for r in results if r.get('skipped'))
    print(
        f'wrote {written} bags ({skipped} skipped) for {len(seeds)} {args.split} patients to {args.out}; '
        f'manifest {manifest_path}'
    )
    return 0


def cmd_sheet(args):
    """Write the contact sheet PNG."""
    import cv2

    from echo_guidance.sim.sheet import contact_sheet

    image = contact_sheet(seeds=args.seeds, planes=args.planes, size=args.size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), image, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        print(f'error: could not write {args.out}', file=sys.stderr)
        return 1
    print(f'wrote {args.out} ({image.shape[1]}x{image.shape[0]}, {args.out.stat().st_size} bytes)')
    return 0


def cmd_render(args):
    """Write one frame and its label image (ids x 15 for visibility)."""
    import cv2

    from echo_guidance.sim.patient import Patient
    from echo_guidance.sim.probe import ProbeConfig, ProbeRenderer, bounding_boxes

    width, height = args.size[0]
    patient = Patient.from_seed(args.seed)
    renderer = ProbeRenderer(patient, ProbeConfig(width=width, height=height))
    frame, labels = renderer.render_with_labels(patient.standard_plane_pose(args.plane), args.time)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), frame)
    label_path = args.out.with_name(args.out.stem + '_labels.png')
    cv2.imwrite(str(label_path), (labels.astype('uint16') * 15).clip(0, 255).astype('uint8'))
    print(f'wrote {args.out} and {label_path}; structures in view: {", ".join(bounding_boxes(labels))}')
    return 0


def cmd_patients(args):
    """Print the seeds and ids of a split."""
    from echo_guidance.sim.patient import patient_id_for_seed
    from echo_guidance.sim.splits import seeds_for_split

    for seed in seeds_for_split(args.split, args.count, args.seed):
        print(f'{seed}\t{patient_id_for_seed(seed)}\t{args.split}')
    return 0
