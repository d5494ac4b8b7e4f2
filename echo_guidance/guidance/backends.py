"""Inference backends that run an exported guidance model on one frame: ONNX Runtime or PyTorch, CPU or CUDA.

=====================  ==============================  ==============================================
backend                model file                      runs on
=====================  ==============================  ==============================================
``onnxruntime-cpu``    ``.onnx`` (``echo-guidance      ONNX Runtime's CPU provider (fastest measured on
                       export``, or its int8 copy      the CPU, docs/guidance.md)
                       from ``guidance quantize``)
``onnxruntime-cuda``   ``.onnx``                       ONNX Runtime's CUDA provider (needs the
                                                       onnxruntime-gpu package and a CUDA device)
``torch-cpu``          checkpoint ``.pt``              eager PyTorch on the CPU (reference)
``torch-cuda``         checkpoint ``.pt``              eager PyTorch on a CUDA device
=====================  ==============================  ==============================================

Every backend answers ``predict(image, plane_index)`` with the action (6,) in mm / degrees, and
``predict_all(image, plane_index)`` with every output of the model (``{'action': (6,), 'distance': float}``
for a model with the stop judgement's distance head; ``outputs`` names them), for a uint8 (S, S) frame
already preprocessed (:func:`echo_guidance.guidance.preprocess.prepare_frame`). A requested
device that is absent raises :class:`DeviceUnavailableError` before anything is loaded; ONNX Runtime
silently falls back to the CPU when CUDA fails, so the CUDA backend checks which provider it got.
"""

import json
import math
import os
from pathlib import Path

import numpy as np

BACKENDS = ('onnxruntime-cpu', 'onnxruntime-cuda', 'torch-cpu', 'torch-cuda')
"""Backend names, as the node's ``backend`` parameter takes them."""

META_PREFIX = 'echo_guidance.'
REQUIRED_METADATA = ('input_size', 'planes', 'model_config')
"""metadata_props keys (after the prefix) that ``echo-guidance export`` writes and the backends need."""


class BackendError(ValueError):
    """A backend cannot be built (unknown name, bad option)."""


class ModelFileError(BackendError):
    """The model file is missing, unreadable, or not an echo_guidance export."""


class DeviceUnavailableError(BackendError):
    """The requested device (CUDA) or its runtime is not available on this machine."""


def _model_name(path):
    """A short model name from its file: the stem, or ``run/best`` for checkpoints named best/last."""
    path = Path(path)
    if path.stem in ('best', 'last') and path.parent.name:
        return f'{path.parent.name}-{path.stem}'
    return path.stem


def _check_file(path, suffixes, backend):
    path = Path(path)
    if not str(path).strip() or str(path) == '.':
        raise ModelFileError(f'backend {backend}: no model file given (parameter model_path is empty)')
    if not path.is_file():
        raise ModelFileError(
            f'model file {path} does not exist (backend {backend} needs a {" or ".join(suffixes)} file)'
        )
    if path.suffix not in suffixes:
        hint = (
            'export the checkpoint first: echo-guidance export CKPT --out model.onnx, or use a torch-* '
            'backend'
            if path.suffix == '.pt'
            else 'torch backends load the checkpoint (.pt) the ONNX file was exported from; use an '
            'onnxruntime-* backend for .onnx files'
        )
        raise ModelFileError(f'backend {backend} loads {" or ".join(suffixes)} files, got {path}: {hint}')
    return path


class InferenceBackend:
    """Common interface: ``predict(image, plane_index) -> action (6,)``; attributes describe the model.

    Attributes:
        name: the backend name (one of :data:`BACKENDS`).
        path: the model file.
        input_size: the model's square input side S.
        planes: plane names in query-index order.
        model_config: the model config as a dict (kind, encoder, ...).
        model_id: ``<model name>@<checkpoint digest>/<backend>``,
            e.g. ``cpu_dreamer@3f2a1c9e/onnxruntime-cpu``.
        quantization: the int8 quantization record of a quantized ONNX file, or None.
        outputs: the model's output names (``action`` first; ``distance`` with a distance head).
    """

    name = ''
    outputs = ('action',)

    def __init__(self):
        """Set the attributes a subclass fills in."""
        self.path = None
        self.input_size = 0
        self.planes = ()
        self.model_config = {}
        self.model_id = ''
        self.quantization = None
        self.warm_up_warning = ''

    def predict_batch_all(self, images, planes):
        """Every output for uint8 frames (B, 1, S, S) and plane indices (B,): {name: float64 (B, ...)}."""
        raise NotImplementedError

    def predict_batch(self, images, planes):
        """Actions (B, 6) float64 for uint8 frames (B, 1, S, S) and plane indices (B,)."""
        return self.predict_batch_all(images, planes)['action']

    def predict(self, image, plane_index):
        """Action (6,) float64 (mm, degrees) for one uint8 (S, S) frame and one plane index."""
        return self.predict_all(image, plane_index)['action']

    def predict_all(self, image, plane_index):
        """Every output for one uint8 (S, S) frame: ``{'action': (6,)[, 'distance': float]}``."""
        image = np.asarray(image)
        size = self.input_size
        if image.shape != (size, size) or image.dtype != np.uint8:
            raise ValueError(
                f'backend {self.name} takes one uint8 ({size}, {size}) frame, '
                f'got {image.dtype} {image.shape}: preprocess it with prepare_frame'
            )
        plane_index = int(plane_index)
        if not 0 <= plane_index < len(self.planes):
            raise ValueError(f"plane index {plane_index} is outside the model's planes {self.planes}")
        out = self.predict_batch_all(image[None, None], np.array([plane_index], dtype=np.int64))
        return {name: (value[0] if name == 'action' else float(value[0])) for name, value in out.items()}

    def describe(self):
        """A dict for logs and diagnostics."""
        return {
            'backend': self.name,
            'model': str(self.path),
            'model_id': self.model_id,
            'input_size': self.input_size,
            'planes': list(self.planes),
            'kind': self.model_config.get('kind', ''),
            'encoder': self.model_config.get('encoder', ''),
            'quantization': self.quantization['method'] if self.quantization else 'none',
            'outputs': list(self.outputs),
        }

    def close(self):
        """Release the model."""


def read_onnx_metadata(session_or_path):
    """The ``echo_guidance.*`` metadata_props of an ONNX model (InferenceSession or path), prefix removed."""
    if isinstance(session_or_path, (str, os.PathLike)):
        import onnx

        proto = onnx.load(str(session_or_path), load_external_data=False)
        items = {p.key: p.value for p in proto.metadata_props}
    else:
        items = dict(session_or_path.get_modelmeta().custom_metadata_map)
    return {key[len(META_PREFIX) :]: value for key, value in items.items() if key.startswith(META_PREFIX)}


def session_options(threads=2, spinning=False):
    """ONNX Runtime session options for a small CPU: ``threads`` intra-op threads, all graph optimisations.

    ``spinning=False`` stops ONNX Runtime's worker threads from busy-waiting after each run: on a
    2-core machine that also captures and displays frames, spinning threads take the CPU those need.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry('session.intra_op.allow_spinning', '1' if spinning else '0')
    return options


class OnnxRuntimeBackend(InferenceBackend):
    """An ONNX graph written by ``echo-guidance export`` (or its int8 copy) in ONNX Runtime."""

    def __init__(self, path, device='cpu', threads=2, spinning=False):
        """Load ``path`` on ``device`` ('cpu' or 'cuda'); raise ModelFileError / DeviceUnavailableError."""
        super().__init__()
        self.name = f'onnxruntime-{device}'
        if device not in ('cpu', 'cuda'):
            raise BackendError(f'ONNX Runtime device must be cpu or cuda, got {device!r}')
        self.path = _check_file(path, ('.onnx',), self.name)
        import onnxruntime as ort

        if device == 'cuda':
            available = ort.get_available_providers()
            if 'CUDAExecutionProvider' not in available:
                raise DeviceUnavailableError(
                    f'backend onnxruntime-cuda needs ONNX Runtime with CUDA (the onnxruntime-gpu package) '
                    f'and a CUDA device; this onnxruntime {ort.__version__} offers only '
                    f'{", ".join(available)}. '
                    f'Use backend onnxruntime-cpu, or install onnxruntime-gpu on a machine with a GPU.'
                )
            providers = ['CUDAExecutionProvider', 'CPUExecutionProvider']
        else:
            providers = ['CPUExecutionProvider']
        try:
            self.session = ort.InferenceSession(
                str(self.path), session_options(threads, spinning), providers=providers
            )
        except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
            raise ModelFileError(f'cannot load ONNX model {self.path}: {type(err).__name__}: {err}') from None
        if device == 'cuda' and self.session.get_providers()[0] != 'CUDAExecutionProvider':
            raise DeviceUnavailableError(
                f'backend onnxruntime-cuda: ONNX Runtime could not start its CUDA provider (no usable CUDA '
                f'device or driver) and fell back to {self.session.get_providers()}'
            )
        meta = read_onnx_metadata(self.session)
        missing = [key for key in REQUIRED_METADATA if key not in meta]
        if missing:
            raise ModelFileError(
                f'{self.path} is not an echo-guidance export: its metadata_props lack '
                f'{", ".join(META_PREFIX + k for k in missing)} (write it with echo-guidance export)'
            )
        try:
            self.input_size = int(meta['input_size'])
            self.planes = tuple(json.loads(meta['planes']))
            self.model_config = json.loads(meta['model_config'])
            self.quantization = json.loads(meta['quantization']) if 'quantization' in meta else None
        except (ValueError, TypeError) as err:
            raise ModelFileError(f'{self.path}: unreadable echo_guidance metadata: {err}') from None
        inputs = {i.name: i.type for i in self.session.get_inputs()}
        if inputs.get('image') != 'tensor(uint8)' or inputs.get('plane') != 'tensor(int64)':
            raise ModelFileError(f'{self.path}: expected inputs image uint8 and plane int64, got {inputs}')
        digest = meta.get('checkpoint_sha256', '')[:8] or 'unknown'
        self.model_id = f'{_model_name(self.path)}@{digest}/{self.name}'
        names = [o.name for o in self.session.get_outputs()]
        if 'action' not in names:
            raise ModelFileError(f'{self.path}: the graph has no output named action (outputs {names})')
        self.outputs = ('action',) + tuple(n for n in ('distance',) if n in names)

    def predict_batch_all(self, images, planes):
        """Every output for uint8 frames (B, 1, S, S) and plane indices (B,): {name: float64 (B, ...)}."""
        out = self.session.run(
            list(self.outputs),
            {
                'image': np.ascontiguousarray(images, dtype=np.uint8),
                'plane': np.ascontiguousarray(planes, dtype=np.int64),
            },
        )
        return {name: value.astype(np.float64) for name, value in zip(self.outputs, out)}


class TorchBackend(InferenceBackend):
    """A training checkpoint (.pt) in eager PyTorch (``torch.inference_mode``), on the CPU or CUDA."""

    def __init__(self, path, device='cpu', threads=2):
        """Load the checkpoint at ``path`` on ``device``; raise ModelFileError / DeviceUnavailableError."""
        super().__init__()
        self.name = f'torch-{device}'
        if device not in ('cpu', 'cuda'):
            raise BackendError(f'PyTorch device must be cpu or cuda, got {device!r}')
        import torch

        if device == 'cuda' and not torch.cuda.is_available():
            built = torch.version.cuda
            raise DeviceUnavailableError(
                f'backend torch-cuda: no CUDA device is available (torch {torch.__version__}, '
                + (f'built with CUDA {built}' if built else 'a CPU-only build')
                + '). Use backend onnxruntime-cpu or torch-cpu, or run on a machine with an NVIDIA GPU.'
            )
        self.path = _check_file(path, ('.pt', '.pth'), self.name)
        from echo_guidance.engine.checkpoint import CheckpointError, file_sha256, load_model
        from echo_guidance.engine.export import ExportWrapper

        if device == 'cpu':
            torch.set_num_threads(int(threads))
        try:
            model, _ = load_model(self.path, device=device)
        except CheckpointError as err:
            raise ModelFileError(str(err)) from None
        self.device = torch.device(device)
        self.module = ExportWrapper(model).eval()
        self.input_size = model.config.input_size
        self.planes = tuple(model.config.planes)
        self.model_config = model.config.to_dict()
        self.model_id = f'{_model_name(self.path)}@{file_sha256(self.path)[:8]}/{self.name}'
        self.outputs = self.module.output_names
        self._torch = torch

    def predict_batch_all(self, images, planes):
        """Every output for uint8 frames (B, 1, S, S) and plane indices (B,): {name: float64 (B, ...)}."""
        torch = self._torch
        with torch.inference_mode():
            image = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).to(self.device)
            plane = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.int64)).to(self.device)
            out = self.module(image, plane)
        out = (out,) if len(self.outputs) == 1 else out
        return {name: v.float().cpu().numpy().astype(np.float64) for name, v in zip(self.outputs, out)}


def load_backend(model_path, backend='onnxruntime-cpu', threads=2, spinning=False, warm_up=True):
    """Build the backend named ``backend`` for ``model_path``; run one warm-up frame.

    Raises:
        BackendError: unknown backend name or bad thread count.
        DeviceUnavailableError: a CUDA backend on a machine without CUDA (or without onnxruntime-gpu).
        ModelFileError: the file is missing, of the wrong kind, or not an echo_guidance model.
    """
    if backend not in BACKENDS:
        raise BackendError(f'unknown backend {backend!r}: expected one of {", ".join(BACKENDS)}')
    if not (isinstance(threads, int) and threads >= 1):
        raise BackendError(f'threads must be a positive integer, got {threads!r}')
    runtime, device = backend.rsplit('-', 1)
    if runtime == 'onnxruntime':
        engine = OnnxRuntimeBackend(model_path, device, threads, spinning)
    else:
        engine = TorchBackend(model_path, device, threads)
    if warm_up:
        # Also catches graphs that load but cannot run (shape or operator errors) before the first frame.
        image = np.full((engine.input_size, engine.input_size), 64, dtype=np.uint8)
        try:
            out = engine.predict(image, 0)
        except Exception as err:  # the runtimes raise their own types
            raise ModelFileError(
                f'{model_path}: the model fails on a test frame: {type(err).__name__}: {err}'
            ) from None
        if out.shape != (6,):
            raise ModelFileError(f'{model_path}: the model returned shape {out.shape}, expected (6,)')
        if not all(math.isfinite(v) for v in out):
            # Not fatal: live frames may still give finite actions; each NaN frame is published as invalid.
            engine.warm_up_warning = (
                f'the model returned non-finite values on a uniform grey test frame: {out}'
            )
    return engine
