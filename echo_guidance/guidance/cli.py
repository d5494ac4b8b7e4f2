"""``echo-guidance guidance quantize``: an int8 copy of an exported model for fast CPU guidance."""

import json
import sys

from echo_guidance.cli_options import add_output_file


def register(subparsers):
    """Add ``guidance quantize``."""
    parser = subparsers.add_parser('guidance', help='live guidance tools (quantize a model)')
    sub = parser.add_subparsers(dest='guidance_command', metavar='COMMAND')
    q = sub.add_parser(
        'quantize',
        help='int8 copy of an exported ONNX model, with its error against float',
        description='Static int8 quantization (ONNX Runtime, QDQ, per-channel weights) of an '
        'ONNX file written by echo-guidance export; prints |int8 - float| per axis.',
    )
    q.add_argument('onnx', help='float ONNX model (echo-guidance export)')
    add_output_file(q, 'int8 ONNX file to write', required=True)
    source = q.add_mutually_exclusive_group(required=True)
    source.add_argument(
        '--calibration-data',
        metavar='DATASET_DIR',
        help='dataset (echo-guidance dataset build): calibrate on train frames, check on val',
    )
    source.add_argument(
        '--sim-patients',
        type=int,
        metavar='N',
        help='calibrate and check on frames of simulated approaches of N train-split patients',
    )
    q.add_argument('--frames', type=int, default=128, help='calibration frames (default 128)')
    q.add_argument('--check-frames', type=int, default=128, help='frames for the int8-vs-float check')
    q.add_argument('--method', choices=('minmax', 'percentile'), default='minmax', help='calibration method')
    q.add_argument(
        '--scope',
        choices=('encoder', 'all'),
        default='encoder',
        help='quantize the encoder only (default; head and Dreamer stay float) or every node',
    )
    q.add_argument(
        '--per-tensor', action='store_true', help='one weight scale per tensor (default per channel)'
    )
    q.add_argument('--seed', type=int, default=0, help='seed of the calibration frames (default 0)')
    q.set_defaults(handler=_quantize)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def _model_planes(backend, planes):
    """Map global plane indices (GUIDANCE_PLANES order) to the model's query indices."""
    import numpy as np

    from echo_guidance.planes import GUIDANCE_PLANES

    names = [GUIDANCE_PLANES[int(p)] for p in planes]
    return np.array([backend.planes.index(n) if n in backend.planes else 0 for n in names], dtype=np.int64)


def _quantize(args):
    from echo_guidance.guidance.backends import BackendError, OnnxRuntimeBackend
    from echo_guidance.guidance.quantize import QuantizationError, frames_from_dataset, quantize_model

    try:
        backend = OnnxRuntimeBackend(args.onnx, 'cpu')
        size = backend.input_size
        if args.calibration_data:
            calibration = frames_from_dataset(args.calibration_data, size, args.frames, 'train', args.seed)
            check = frames_from_dataset(args.calibration_data, size, args.check_frames, 'val', args.seed + 1)
        else:
            from echo_guidance.guidance.simulated import approach_frames
            from echo_guidance.sim.splits import seeds_for_split

            seeds = seeds_for_split('train', args.sim_patients)
            calibration = approach_frames(size, args.frames, seeds=seeds, seed=args.seed)
            check = approach_frames(size, args.check_frames, seeds=seeds, seed=args.seed + 1)
        calibration = (calibration[0], _model_planes(backend, calibration[1]))
        check = (check[0], _model_planes(backend, check[1]))
        record = quantize_model(
            args.onnx,
            args.out,
            calibration,
            check,
            per_channel=not args.per_tensor,
            calibrate_method=args.method,
            scope=args.scope,
        )
    except (BackendError, QuantizationError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(json.dumps({'out': args.out, **record}))
    return 0
