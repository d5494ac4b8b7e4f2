"""``echo-guidance guidance quantize | train-default``: int8 copies of models; the default models' recipe."""

import json
import sys
from pathlib import Path

from echo_guidance.cli_options import add_output_dir, add_output_file


def register(subparsers):
    """Add ``guidance quantize`` and ``guidance train-default``."""
    parser = subparsers.add_parser(
        'guidance', help='live guidance tools (quantize a model, train the default models)'
    )
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
    d = sub.add_parser(
        'train-default',
        help='train the default coarse and fine models with the pipeline (hours on a 2-core CPU)',
        description="Run the default guidance models' recipe (echo_guidance/guidance/recipe.py, "
        'docs/guidance-models.md): sampled data, training, export (and DAgger rounds when the recipe '
        'asks for them). Each command is printed '
        'as it runs; finished steps are skipped, so an interrupted run goes on where it stopped.',
    )
    add_output_dir(
        d,
        'work folder (data, training runs, models) (default out/default_models)',
        default='out/default_models',
    )
    d.add_argument(
        '--install',
        action='store_true',
        help='copy the resulting models and their training configs into models/guidance/ of this '
        'checkout and write SHA256SUMS',
    )
    d.set_defaults(handler=_train_default)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def train_default_models(work_dir, say=print):
    """Run the recipe in ``work_dir``; return (coarse, fine) result paths. Raises PipelineError."""
    from echo_guidance.guidance.recipe import recipe_steps, result_models
    from echo_guidance.pipeline import run_steps

    steps = recipe_steps(work_dir)
    say(f'default models: {len(steps)} steps in {work_dir} (finished ones are skipped)')
    timings = run_steps(steps, say=say, prefix='default models: ')
    say(f'default models: {sum(timings.values()):.0f} s for the steps that ran')
    return result_models(work_dir)


def _train_default(args):
    from echo_guidance.guidance.recipe import install
    from echo_guidance.pipeline import PipelineError

    try:
        coarse, fine = train_default_models(args.out, say=lambda text: print(text, flush=True))
    except PipelineError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'default models: {coarse}, {fine}')
    if args.install:
        from echo_guidance.guidance.default_models import MODELS_DIR, models_dir

        checkout = source_checkout()
        if checkout is None:
            print(
                'error: --install copies the models into models/guidance/ of a checkout: run it from '
                'inside the repository (no folder with package.xml and echo_guidance/ above '
                f'{Path.cwd()})',
                file=sys.stderr,
            )
            return 1
        sums = install(args.out, checkout / MODELS_DIR)
        print(f'default models: installed into {sums.parent} ({sums.name} written); commit them there')
        installed = models_dir()
        if installed.resolve() != sums.parent.resolve():
            # An installed package (pip, colcon) reads its own copy: refresh it too, so this checkout's
            # commands use the new models at once (scripts/bootstrap.sh would on its next run).
            install(args.out, installed)
            print(f'default models: and into the installed copy {installed}')
    return 0


def source_checkout(start=None):
    """The repository folder at or above ``start`` (default: the working directory), or None."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / 'package.xml').is_file() and (folder / 'echo_guidance' / '__init__.py').is_file():
            return folder
    return None


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
