"""``echo-guidance train | evaluate | export``: the learning stack's commands."""

import sys

from echo_guidance.cli_options import add_output_dir, add_output_file


def register(subparsers):
    """Add the ``train``, ``evaluate`` and ``export`` commands."""
    t = subparsers.add_parser('train', help='train a guidance model from a config (torchrun for DDP)')
    t.add_argument('config', help='YAML training config, e.g. config/train/cpu_baseline.yaml')
    t.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        default=None,
        help='resume from a checkpoint (no value: OUT_DIR/last.pt)',
    )
    t.add_argument(
        '--set',
        action='append',
        default=[],
        metavar='SECTION.KEY=VALUE',
        help='override a config value, e.g. --set train.steps=100 (repeatable)',
    )
    t.add_argument('--no-progress', action='store_true', help='no progress (without a terminal: plain lines)')
    t.set_defaults(handler=_train)

    e = subparsers.add_parser('evaluate', help='Table 1, error norms with bootstrap CIs, the stability plot')
    e.add_argument('checkpoints', nargs='+', help='checkpoints (baseline and Dreamer side by side)')
    e.add_argument('--data', required=True, help='dataset directory')
    add_output_dir(e, 'output directory', required=True)
    e.add_argument('--split', default='test', help='dataset split to evaluate (default test)')
    e.add_argument('--label', action='append', default=None, help='name per checkpoint (repeat, in order)')
    e.add_argument('--batch-size', type=int, default=64, help='evaluation batch size (default 64)')
    e.add_argument('--bootstrap', type=int, default=1000, help='bootstrap resamples (default 1000)')
    e.add_argument('--bins', type=int, default=10, help='bins of the stability plot')
    e.add_argument('--device', default='cpu', help='torch device (default cpu)')
    e.add_argument('--seed', type=int, default=0, help='seed of the bootstrap resampling (default 0)')
    e.add_argument(
        '--within',
        type=_mm_deg,
        default=None,
        metavar='MM,DEG',
        help='only samples whose target is within MM on each of x, y, z and DEG on each rotation axis',
    )
    e.set_defaults(handler=_evaluate)

    x = subparsers.add_parser('export', help='export a checkpoint to ONNX and check parity with PyTorch')
    x.add_argument('checkpoint', help='checkpoint to export (best.pt or last.pt of a training run)')
    add_output_file(x, 'output .onnx file', required=True)
    x.add_argument('--opset', type=int, default=18, help='ONNX opset (default 18)')
    x.add_argument('--no-check', action='store_true', help='skip the ONNX Runtime parity check')
    x.add_argument(
        '--tolerance',
        type=float,
        default=1e-2,
        help='max allowed |onnx - torch| in mm/degrees for the parity check (default 0.01)',
    )
    x.set_defaults(handler=_export)


def _train(args):
    import json

    from echo_guidance.data.dataset import DatasetError
    from echo_guidance.engine.checkpoint import CheckpointError
    from echo_guidance.engine.config import TrainConfigError, load_config
    from echo_guidance.engine.train import train

    try:
        cfg = load_config(args.config, args.set)
        summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    except (TrainConfigError, CheckpointError, DatasetError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    summary.pop('history', None)
    if summary.get('rank', 0) == 0:
        print(json.dumps(summary))
    return 0


def _mm_deg(text):
    import argparse

    try:
        mm, deg = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected MM,DEG (two numbers), got {text!r}') from None
    if not (mm > 0 and deg > 0):
        raise argparse.ArgumentTypeError(f'MM and DEG must be > 0, got {text!r}')
    return mm, deg


def _evaluate(args):
    from echo_guidance.data.dataset import DatasetError
    from echo_guidance.engine.checkpoint import CheckpointError
    from echo_guidance.engine.evaluate import evaluate

    try:
        evaluate(
            args.checkpoints,
            args.data,
            args.out,
            args.split,
            args.label,
            args.batch_size,
            args.bootstrap,
            args.bins,
            args.device,
            seed=args.seed,
            progress=lambda m: print(m, file=sys.stderr),
            within=args.within,
        )
    except (CheckpointError, DatasetError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(open(f'{args.out}/results.md').read())
    return 0


def _export(args):
    import json

    from echo_guidance.engine.checkpoint import CheckpointError
    from echo_guidance.engine.export import export_onnx, parity_check

    try:
        path, model = export_onnx(args.checkpoint, args.out, args.opset)
    except CheckpointError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    result = {
        'onnx': str(path),
        'opset': args.opset,
        'input_size': model.config.input_size,
        'planes': list(model.config.planes),
    }
    if not args.no_check:
        parity = parity_check(model, path)
        result['parity_max_abs_diff'] = parity['max_abs_diff']
        result['parity_ok'] = parity['max_abs_diff'] <= args.tolerance
    print(json.dumps(result))
    return 0 if result.get('parity_ok', True) else 1
