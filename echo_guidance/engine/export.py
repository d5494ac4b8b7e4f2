"""Export a guidance checkpoint to ONNX for the live guidance node, and check it against PyTorch.

The graph (one for all planes):

- input ``image``: uint8 (batch, 1, S, S), the grayscale frame in grey levels 0..255, already
  cropped and resized to S = model.input_size (normalisation happens inside the graph);
- input ``plane``: int64 (batch,), the target plane's query index (PLAX 0, PSAX-AV 1, PSAX-MV 2;
  ``echo_guidance.planes.plane_index``), so one graph serves every plane;
- output ``action``: float32 (batch, 6), the guidance action (x, y, z mm; roll, pitch, yaw degrees)
  in the probe frame — for Dreamer models the refined action;
- output ``distance`` (models with a distance head only): float32 (batch,), the stop judgement's
  distance to the plane in units of the success window (``model.distance_tolerance``).

The batch dimension is dynamic. The ONNX model's metadata (``metadata_props``) holds the model
config, plane names, input size, architecture digest and the source checkpoint's SHA-256.
"""

import json
import math
import pathlib

import numpy as np
import torch

from echo_guidance.engine.checkpoint import file_sha256, load_model
from echo_guidance.models.networks import architecture_digest

DEFAULT_OPSET = 18


def _scale_symbolic(factor):
    """An ONNX symbolic that multiplies its input by a constant (for aten::deg2rad / aten::rad2deg)."""

    def symbolic(g, x):
        return g.op('Mul', x, g.op('Constant', value_t=torch.tensor(factor, dtype=torch.float32)))

    return symbolic


def register_angle_symbolics(opset):
    """Teach the TorchScript ONNX exporter deg2rad and rad2deg (echo_guidance.geometry uses them)."""
    torch.onnx.register_custom_op_symbolic('aten::deg2rad', _scale_symbolic(math.pi / 180.0), opset)
    torch.onnx.register_custom_op_symbolic('aten::rad2deg', _scale_symbolic(180.0 / math.pi), opset)


class ExportWrapper(torch.nn.Module):
    """The model's inference forward with the plane-range check left out (not traceable)."""

    def __init__(self, model):
        """Wrap a GuidancePolicy or DreamerPolicy in eval mode."""
        super().__init__()
        self.model = model.eval()

    @property
    def output_names(self):
        """``('action',)``, plus ``'distance'`` for a model with a distance head."""
        return ('action',) if self.model.distance is None else ('action', 'distance')

    def forward(self, image, plane):
        """Action (B, 6) for uint8 frames (B, 1, S, S) and plane indices (B,).

        A model with a distance head returns (action, distance (B,)).
        """
        m = self.model
        tokens = m.encode(image)
        if m.config.kind == 'dreamer':
            action = m.refine(tokens, plane)[2]
        else:
            action = m.to_physical(m.policy_normalised(tokens, plane))
        if m.distance is None:
            return action
        return action, m.predict_distance(tokens, plane)


def export_onnx(checkpoint, out_path, opset=DEFAULT_OPSET):
    """Write the ONNX graph of ``checkpoint`` to ``out_path``; return (path, model)."""
    import onnx

    model, _ = load_model(checkpoint)
    wrapper = ExportWrapper(model)
    size = model.config.input_size
    image = torch.randint(0, 256, (2, 1, size, size), dtype=torch.uint8)
    plane = torch.zeros(2, dtype=torch.int64)
    out_path = pathlib.Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    register_angle_symbolics(opset)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # The fused transformer kernel that eval mode picks has no ONNX equivalent; export the plain ops.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                (image, plane),
                str(out_path),
                dynamo=False,
                opset_version=opset,
                input_names=['image', 'plane'],
                output_names=list(wrapper.output_names),
                dynamic_axes={
                    'image': {0: 'batch'},
                    'plane': {0: 'batch'},
                    **{name: {0: 'batch'} for name in wrapper.output_names},
                },
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    proto = onnx.load(str(out_path))
    meta = {
        'echo_guidance.model_config': json.dumps(model.config.to_dict()),
        'echo_guidance.planes': json.dumps(list(model.config.planes)),
        'echo_guidance.input_size': str(size),
        'echo_guidance.input': 'image uint8 (batch,1,S,S) grey levels; plane int64 (batch,) query index',
        'echo_guidance.output': 'action float32 (batch,6): x,y,z mm; roll,pitch,yaw deg (probe frame)'
        + ('' if model.distance is None else '; distance float32 (batch,): distance to plane / tolerance'),
        'echo_guidance.outputs': json.dumps(list(wrapper.output_names)),
        'echo_guidance.architecture_digest': architecture_digest(model),
        'echo_guidance.checkpoint_sha256': file_sha256(checkpoint),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out_path))
    return out_path, model


def parity_check(model, onnx_path, batch=4, seed=0, images=None, planes=None):
    """Compare ONNX Runtime with PyTorch on the same inputs; return {'max_abs_diff', 'batch'}.

    Random frames are used unless ``images`` (uint8 (B, 1, S, S)) are given; planes cycle through
    the model's planes unless given.
    """
    import onnxruntime as ort

    size = model.config.input_size
    rng = np.random.default_rng(seed)
    if images is None:
        images = rng.integers(0, 256, size=(batch, 1, size, size), dtype=np.uint8)
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if planes is None:
        planes = np.arange(len(images)) % len(model.config.planes)
    planes = np.asarray(planes, dtype=np.int64)
    session = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    wrapper = ExportWrapper(model.eval())
    names = list(wrapper.output_names)
    outputs = session.run(names, {'image': images, 'plane': planes})
    with torch.no_grad():
        expected = wrapper(torch.from_numpy(images), torch.from_numpy(planes))
    expected = (expected,) if len(names) == 1 else expected
    diffs = [float(np.abs(g - w.numpy()).max()) for g, w in zip(outputs, expected)]
    got, want = outputs[0], expected[0].numpy()
    return {
        'max_abs_diff': max(diffs),
        'batch': int(len(images)),
        'onnx': got,
        'torch': want,
    }
