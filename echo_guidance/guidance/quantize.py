"""Int8 copies of exported guidance models for fast CPU inference, with their accuracy cost measured.

``quantize_model`` runs ONNX Runtime's static quantization (QDQ format, int8 per-channel weights,
uint8 activations) on an ONNX file written by ``echo-guidance export``, calibrating the activation
ranges on real frames (a dataset split or simulator renders), then compares the int8 graph with the
float graph on *other* frames: per-axis mean and max |Δ| of the action (mm, degrees, angles wrapped).
The record of the method, calibration and that comparison goes into the new file's metadata
(``echo_guidance.quantization``) next to the original metadata, so the guidance node reports it.

On CPUs with int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI) the int8 ResNet runs about 3×
faster than float (docs/guidance.md); whether its extra error is acceptable is a question for
``echo-guidance bench fusion``, which measures error against the ground truth for both files.
"""

import json
import tempfile
from pathlib import Path

import numpy as np

from echo_guidance.guidance.backends import META_PREFIX, ModelFileError, OnnxRuntimeBackend


class QuantizationError(ValueError):
    """The model cannot be quantized, or the calibration data is unusable."""


def frames_from_dataset(dataset_dir, size, count, split='train', seed=0):
    """Return (frames (N, size, size) uint8, plane indices (N,)) drawn from a dataset split.

    Frames of another size are resized with the preprocessing contract (resize_frame).
    """
    from echo_guidance.data.dataset import resize_frame

    split_dir = Path(dataset_dir) / split
    try:
        frames = np.load(split_dir / 'frames.npy', mmap_mode='r')
        planes = np.load(split_dir / 'plane.npy')
    except (OSError, ValueError) as err:
        raise QuantizationError(f'cannot read calibration frames from {split_dir}: {err}') from None
    if len(frames) == 0:
        raise QuantizationError(f'{split_dir} holds no frames')
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(len(frames), size=min(count, len(frames)), replace=False))
    out = np.stack([resize_frame(np.asarray(frames[i]), size) for i in index])
    return out, planes[index].astype(np.int64)


def frames_from_simulator(size, count, seeds=(0, 1), seed=0):
    """Return (frames, plane indices) rendered along simulated approaches to every guidance plane."""
    from echo_guidance.guidance.simulated import approach_frames

    frames, planes = approach_frames(size, count, seeds=seeds, seed=seed)
    return frames, planes


class _Reader:
    """The CalibrationDataReader ONNX Runtime's quantizer pulls frames from."""

    def __init__(self, frames, planes):
        self._items = iter(
            [{'image': f[None, None], 'plane': np.array([p], dtype=np.int64)} for f, p in zip(frames, planes)]
        )

    def get_next(self):
        return next(self._items, None)


def compare_backends(reference, candidate, frames, planes):
    """Per-axis mean and max |candidate − reference| (angles wrapped) over frames; returns a dict."""
    from echo_guidance.guidance.fusion import wrap_degrees

    a = np.stack([reference.predict(f, p) for f, p in zip(frames, planes)])
    b = np.stack([candidate.predict(f, p) for f, p in zip(frames, planes)])
    diff = np.abs(b - a)
    diff[:, 3:] = np.abs(wrap_degrees(b[:, 3:] - a[:, 3:]))
    return {
        'frames': int(len(frames)),
        'mean_abs': [round(float(v), 4) for v in diff.mean(axis=0)],
        'max_abs': [round(float(v), 4) for v in diff.max(axis=0)],
        'reference_mean_abs_action': [round(float(v), 3) for v in np.abs(a).mean(axis=0)],
    }


def quantize_model(
    src, out, calibration, check, per_channel=True, calibrate_method='minmax', threads=2, scope='encoder'
):
    """Write an int8 copy of the ONNX model ``src`` to ``out``; return the quantization record.

    Args:
        src: float ONNX file from ``echo-guidance export``.
        out: where the int8 file goes.
        calibration: (frames (N, S, S) uint8, plane indices (N,)) for the activation ranges.
        check: (frames, plane indices) for the float-vs-int8 comparison (other frames than calibration).
        per_channel: per-output-channel weight scales (more accurate for convolutions).
        calibrate_method: ``minmax`` or ``percentile`` (clips the top 0.01 % of activations).
        threads: ONNX Runtime threads for the comparison.
        scope: ``encoder`` quantizes only the ResNet encoder (nodes named ``/encoder/...``: nearly all
            the compute) and keeps the guidance head and the Dreamer's transformer in float, whose
            int8 versions moved the Dreamer's rotations by ~2° on average; ``all`` quantizes every node.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reference = OnnxRuntimeBackend(src, 'cpu', threads)
    if reference.quantization:
        raise QuantizationError(f'{src} is already quantized ({reference.quantization["method"]})')
    if scope not in ('encoder', 'all'):
        raise QuantizationError(f'quantization scope {scope!r}: expected encoder or all')
    methods = {'minmax': CalibrationMethod.MinMax, 'percentile': CalibrationMethod.Percentile}
    if calibrate_method not in methods:
        raise QuantizationError(
            f'calibration method {calibrate_method!r}: expected one of {", ".join(methods)}'
        )
    frames, planes = calibration
    size = reference.input_size
    if len(frames) == 0 or np.asarray(frames).shape[1:] != (size, size):
        raise QuantizationError(
            f'calibration frames must be (N, {size}, {size}) uint8 with N > 0, got {np.asarray(frames).shape}'
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='echo_guidance-quant-') as tmp:
        prepared = Path(tmp) / 'prepared.onnx'
        try:
            quant_pre_process(str(src), str(prepared))
        except Exception:  # noqa: BLE001  (ONNX Runtime's symbolic shape inference asserts on some graphs)
            # The Dreamer's reshapes defeat symbolic shape inference; ONNX's own shape inference suffices.
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        extra = {'CalibPercentile': 99.99} if calibrate_method == 'percentile' else {}
        excluded = []
        if scope == 'encoder':
            graph = onnx.load(str(prepared), load_external_data=False).graph
            excluded = [n.name for n in graph.node if not n.name.startswith('/encoder/')]
            if len(excluded) == len(graph.node):
                raise QuantizationError(f'{src} has no /encoder/ nodes to quantize; use scope all')
        quantize_static(
            str(prepared),
            str(Path(tmp) / 'int8.onnx'),
            _Reader(frames, planes),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=methods[calibrate_method],
            extra_options=extra,
            nodes_to_exclude=excluded,
        )
        proto = onnx.load(str(Path(tmp) / 'int8.onnx'))
    source_meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    del proto.metadata_props[:]
    for key, value in source_meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    record = {
        'method': 'onnxruntime static int8 (QDQ; int8 weights per-channel, uint8 activations)'
        if per_channel
        else 'onnxruntime static int8 (QDQ; int8 weights per-tensor, uint8 activations)',
        'scope': scope,
        'calibrate_method': calibrate_method,
        'calibration_frames': int(len(frames)),
        'float_model': Path(src).name,
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_PREFIX + 'quantization', json.dumps(record)
    onnx.save(proto, str(out))
    try:
        candidate = OnnxRuntimeBackend(out, 'cpu', threads)
    except ModelFileError as err:
        raise QuantizationError(f'the quantized model does not load: {err}') from None
    check_frames, check_planes = check
    record['vs_float'] = compare_backends(reference, candidate, check_frames, check_planes)
    # Rewrite the record with the comparison so the file carries its own accuracy cost.
    proto = onnx.load(str(out))
    for entry in proto.metadata_props:
        if entry.key == META_PREFIX + 'quantization':
            entry.value = json.dumps(record)
    onnx.save(proto, str(out))
    return record
