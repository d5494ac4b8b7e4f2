"""`echo-guidance bench model`: per-frame model latency, ONNX Runtime against eager PyTorch in one run.

For each input size (default 128 and 224) it times, on batch-1 frames with the same thread count:

* ``torch-eager``: the PyTorch model (``torch.inference_mode``, float32) — the reference;
* ``onnxruntime``: the exported float graph in ONNX Runtime (the node's session options: intra-op
  threads = ``--threads``, graph optimisation ALL, no spinning);
* ``onnxruntime-int8``: its static int8 copy (``echo-guidance guidance quantize``), unless ``--no-int8``;
* ``engine-step``: the guidance node's whole per-frame step on the fastest graph (preprocessing,
  inference, fusion of 30 frames with poses, confidence).

The backends take turns in blocks of 10 frames, so load from other processes hits them alike.
Reported: median and p90 per backend, and the ratio eager median / ONNX Runtime median. Pass criteria
at 128² (docs/guidance.md): ONNX Runtime median <= 10 ms and >= 2x faster than eager PyTorch.
Without ``--checkpoint``/``--onnx`` the network of ``--config`` is built with random weights (latency
depends on the architecture, not the weights); the output says which model was timed.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_MEDIAN_MS = 10.0
TARGET_RATIO = 2.0


def register_bench(subparsers):
    """Add ``bench model``."""
    parser = subparsers.add_parser(
        'model',
        help='guidance model latency: ONNX Runtime vs eager PyTorch',
        description=__doc__.splitlines()[0],
    )
    parser.add_argument('--sizes', default='128,224', help='input sizes, comma-separated (default 128,224)')
    parser.add_argument(
        '--config',
        default='config/train/cpu_dreamer.yaml',
        help='training config whose model is timed with random weights (default cpu_dreamer)',
    )
    parser.add_argument(
        '--checkpoint', default=None, help='a trained checkpoint (.pt): timed at its own size'
    )
    parser.add_argument('--onnx', default=None, help='an exported .onnx file: timed at its own size')
    parser.add_argument(
        '--calibration-data',
        default=None,
        metavar='DATASET_DIR',
        help='dataset for the int8 calibration of a trained model (default: random frames)',
    )
    parser.add_argument('--threads', type=int, default=2, help='threads for every backend (default 2)')
    parser.add_argument('--iterations', type=int, default=200, help='timed frames per backend (default 200)')
    parser.add_argument(
        '--warmup', type=int, default=10, help='untimed frames per backend first (default 10)'
    )
    parser.add_argument('--no-int8', action='store_true', help='skip the int8 copy')
    parser.add_argument('--spinning', action='store_true',
                        help="let ONNX Runtime's threads busy-wait between runs (the node does not)")
    parser.add_argument('--work-dir', default=None, help='where exported files go (default: a temp folder)')
    parser.add_argument('--json', default=None, metavar='PATH', help='also write the figures as JSON')
    parser.set_defaults(handler=run)


def _stats(seconds):
    ms = np.asarray(seconds) * 1e3
    return {
        'median_ms': round(float(np.median(ms)), 3),
        'p90_ms': round(float(np.percentile(ms, 90)), 3),
        'mean_ms': round(float(ms.mean()), 3),
        'n': int(ms.size),
    }


def time_round_robin(callables, iterations, warmup, block=10):
    """Time each callable ``iterations`` times, in turns of ``block`` calls; return {name: [seconds]}."""
    for fn in callables.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in callables}
    done = 0
    while done < iterations:
        n = min(block, iterations - done)
        for name, fn in callables.items():
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        done += n
    return times


def _engine_step_callable(backend, frames):
    from echo_guidance.geometry import action_to_matrix
    from echo_guidance.guidance.engine import GuidanceEngine

    engine = GuidanceEngine(backend, backend.planes[0])
    poses = action_to_matrix(
        np.column_stack([np.linspace(0, 30, 64)] + [np.zeros(64)] * 2 + [np.linspace(0, 10, 64)] * 3)
    )
    counter = {'i': 0}

    def step():
        i = counter['i']
        counter['i'] += 1
        engine.step(frames[i % len(frames)], poses[i % len(poses)], i / 30.0)

    return step


def bench_size(size, args, work_dir, log):
    """Time every backend at one input size; return the result dict."""
    import torch

    from echo_guidance.bench._guidance_models import (
        describe_file,
        export_checkpoint,
        model_config_from,
        quantized_copy,
        random_checkpoint,
    )
    from echo_guidance.guidance.backends import OnnxRuntimeBackend, TorchBackend, read_onnx_metadata
    from echo_guidance.models.config import ModelConfig

    trained_size = None
    if args.onnx:
        trained_size = int(read_onnx_metadata(args.onnx)['input_size'])
    elif args.checkpoint:
        from echo_guidance.engine.checkpoint import read_checkpoint

        trained_size = ModelConfig.from_dict(read_checkpoint(args.checkpoint)['model_config']).input_size
    if trained_size == size:
        onnx_path = Path(args.onnx) if args.onnx else export_checkpoint(args.checkpoint, work_dir)
        if args.checkpoint:
            checkpoint, source = Path(args.checkpoint), f'trained: {args.checkpoint}'
        else:
            config = ModelConfig.from_dict(json.loads(read_onnx_metadata(onnx_path)['model_config']))
            checkpoint = random_checkpoint(config, work_dir)
            source = f'trained ONNX {args.onnx}; eager PyTorch with the same architecture, random weights'
    else:
        if trained_size is not None:
            base = (
                ModelConfig.from_dict(json.loads(read_onnx_metadata(args.onnx)['model_config']))
                if args.onnx
                else model_config_from_checkpoint(args.checkpoint)
            )
            config = base.replace(input_size=size)
        else:
            config = model_config_from(args.config, size)
        checkpoint = random_checkpoint(config, work_dir)
        onnx_path = export_checkpoint(checkpoint, work_dir)
        source = (
            f'random weights: {config.kind} {config.encoder} at {size}² (architecture of '
            f'{args.checkpoint or args.onnx or args.config})'
        )
    log(f'\n{size}x{size}: {source}\n  onnx: {describe_file(onnx_path)}')
    backends = {
        'torch-eager': TorchBackend(checkpoint, 'cpu', args.threads),
        'onnxruntime': OnnxRuntimeBackend(onnx_path, 'cpu', args.threads, args.spinning),
    }
    int8_note = None
    if not args.no_int8:
        int8_path, record, calibration = quantized_copy(
            onnx_path, work_dir, args.calibration_data if trained_size == size else None
        )
        backends['onnxruntime-int8'] = OnnxRuntimeBackend(int8_path, 'cpu', args.threads, args.spinning)
        int8_note = {'calibration': calibration, 'vs_float': record['vs_float']}
        log(
            f'  int8: {int8_path} (calibration: {calibration}); |int8 - float| mean per axis '
            f'{record["vs_float"]["mean_abs"]} (mm x3, deg x3)'
        )
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (8, size, size), dtype=np.uint8)
    counter = {'i': 0}

    def caller(backend):
        def call():
            i = counter['i'] = counter['i'] + 1
            backend.predict(frames[i % len(frames)], i % len(backend.planes))

        return call

    callables = {name: caller(b) for name, b in backends.items()}
    fastest = 'onnxruntime-int8' if 'onnxruntime-int8' in backends else 'onnxruntime'
    callables['engine-step'] = _engine_step_callable(backends[fastest], frames)
    times = time_round_robin(callables, args.iterations, args.warmup)
    stats = {name: _stats(t) for name, t in times.items()}
    eager = stats['torch-eager']['median_ms']
    ratios = {name: round(eager / stats[name]['median_ms'], 2) for name in backends if name != 'torch-eager'}
    return {
        'size': size,
        'model': source,
        'onnx': str(onnx_path),
        'stats': stats,
        'eager_over': ratios,
        'engine_step_backend': fastest,
        'int8': int8_note,
    }


def model_config_from_checkpoint(checkpoint):
    """ModelConfig stored in a checkpoint."""
    from echo_guidance.engine.checkpoint import read_checkpoint
    from echo_guidance.models.config import ModelConfig

    return ModelConfig.from_dict(read_checkpoint(checkpoint)['model_config'])


def _machine():
    import platform

    cpu = ''
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return f'{cpu or platform.processor()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}'


def run(args):
    """Run the benchmark; return 0 when the 128² criteria pass (or 128 is not timed), 1 if not, 2 on error."""
    import onnxruntime
    import torch

    from echo_guidance.guidance.backends import BackendError

    try:
        sizes = [int(s) for s in args.sizes.split(',') if s.strip()]
    except ValueError:
        print(
            f'bench model: --sizes must be integers separated by commas, got {args.sizes!r}', file=sys.stderr
        )
        return 2
    if args.checkpoint and args.onnx:
        print('bench model: give --checkpoint or --onnx, not both', file=sys.stderr)
        return 2
    if args.iterations < 1 or args.threads < 1:
        print('bench model: --iterations and --threads must be >= 1', file=sys.stderr)
        return 2

    def log(text):
        print(text, flush=True)

    log(
        f'bench model: {_machine()}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; '
        f'{args.threads} threads, {args.iterations} frames per backend, batch 1, ONNX Runtime spinning '
        f'{"on" if args.spinning else "off"}'
    )
    results = []
    with tempfile.TemporaryDirectory(prefix='echo_guidance-bench-model-') as tmp:
        work_dir = Path(args.work_dir) if args.work_dir else Path(tmp)
        work_dir.mkdir(parents=True, exist_ok=True)
        for size in sizes:
            try:
                result = bench_size(size, args, work_dir, log)
            except (BackendError, ValueError, OSError) as err:
                print(f'bench model: {size}x{size}: {err}', file=sys.stderr)
                return 2
            results.append(result)
            log(f'  {"backend":<18} {"median ms":>10} {"p90 ms":>9}   eager/this')
            for name, s in result['stats'].items():
                ratio = result['eager_over'].get(name)
                log(
                    f'  {name:<18} {s["median_ms"]:>10.2f} {s["p90_ms"]:>9.2f}   '
                    + (
                        f'{ratio:.2f}x'
                        if ratio
                        else (
                            '(reference)'
                            if name == 'torch-eager'
                            else f'({result["engine_step_backend"]}, whole step)'
                        )
                    )
                )
    failures = []
    for result in results:
        if result['size'] != 128:
            continue
        best = min((n for n in result['eager_over']), key=lambda n: result['stats'][n]['median_ms'])
        median, ratio = result['stats'][best]['median_ms'], result['eager_over'][best]
        verdict = median <= TARGET_MEDIAN_MS and ratio >= TARGET_RATIO
        log(
            f'\n128x128 criteria ({best}): median {median:.2f} ms <= {TARGET_MEDIAN_MS} ms: '
            f'{"yes" if median <= TARGET_MEDIAN_MS else "NO"}; '
            f'{ratio:.2f}x eager PyTorch >= {TARGET_RATIO}x: '
            f'{"yes" if ratio >= TARGET_RATIO else "NO"}'
        )
        if not verdict:
            failures.append(f'128x128 {best}: {median:.2f} ms, {ratio:.2f}x eager')
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    'machine': _machine(),
                    'threads': args.threads,
                    'iterations': args.iterations,
                    'results': results,
                    'failures': failures,
                },
                indent=2,
            )
        )
    return 1 if failures else 0
