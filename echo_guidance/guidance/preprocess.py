"""Frames as the guidance model needs them, with the training pipeline's preprocessing contract.

The model was trained on frames resized to S×S by ``echo_guidance.data.dataset.resize_frame``
(docs/learning.md §1); :func:`prepare_frame` calls that same function, so live frames are
preprocessed exactly as the training frames were. Image messages arrive as raw fields
(encoding, height, width, step, bytes); :func:`frame_from_image_fields` turns them into a uint8
(H, W) array or raises :class:`FrameFormatError` naming what is wrong.
"""

import numpy as np

ACCEPTED_ENCODINGS = ('mono8', '8UC1')
"""Image encodings the guidance takes: one 8-bit grey channel (8UC1 is the same memory layout)."""


class FrameFormatError(ValueError):
    """A frame the guidance cannot use: wrong encoding, size, type or a truncated buffer."""


def frame_from_image_fields(encoding, height, width, step, data):
    """Return the uint8 (height, width) frame held by a sensor_msgs/Image's fields.

    Args:
        encoding: the message's encoding; only ``mono8`` (or ``8UC1``) is accepted.
        height, width: image size in pixels.
        step: bytes per row (>= width; rows may be padded).
        data: the pixel bytes (bytes, bytearray, array.array or a NumPy array).

    Raises:
        FrameFormatError: another encoding, an empty image, a step shorter than a row, or a buffer
            whose length does not match height × step.
    """
    if encoding not in ACCEPTED_ENCODINGS:
        raise FrameFormatError(
            f'image encoding {encoding!r} is not supported: the guidance model takes 8-bit grey frames '
            f'(encoding mono8)'
        )
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise FrameFormatError(f'image is empty ({width}x{height})')
    if step < width:
        raise FrameFormatError(f'image step {step} is shorter than a row of {width} mono8 pixels')
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8)
    buffer = buffer.reshape(-1)
    if buffer.size != height * step:
        raise FrameFormatError(
            f'image data holds {buffer.size} bytes, expected height x step = {height} x {step} = '
            f'{height * step} (truncated or inconsistent message)'
        )
    return buffer.reshape(height, step)[:, :width]


def check_frame_size(frame, expected_size):
    """Raise FrameFormatError unless ``frame`` is ``expected_size`` = (width, height); None = any size."""
    if expected_size is None:
        return
    width, height = expected_size
    if frame.shape[:2] != (height, width):
        raise FrameFormatError(
            f'frame is {frame.shape[1]}x{frame.shape[0]} pixels but the guidance is configured for '
            f'{width}x{height} frames (expected_width/expected_height): check the capture settings'
        )


def prepare_frame(frame, input_size, expected_size=None):
    """Return ``frame`` as the model's uint8 (input_size, input_size) input, via resize_frame.

    Args:
        frame: uint8 (H, W) or (H, W, 1) grey frame, already cropped by the capture node.
        input_size: the model's square input side S (from the ONNX metadata or the checkpoint).
        expected_size: optional (width, height) the frame must have; another size is refused.

    Raises:
        FrameFormatError: not a uint8 grey frame, or not of the expected size.
    """
    from echo_guidance.data.dataset import DatasetError, resize_frame

    image = np.asarray(frame)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2 or image.dtype != np.uint8:
        raise FrameFormatError(f'frames must be uint8 (H, W) grey images, got {image.dtype} {image.shape}')
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise FrameFormatError(f'frame is empty ({image.shape[1]}x{image.shape[0]})')
    check_frame_size(image, expected_size)
    try:
        return np.ascontiguousarray(resize_frame(image, int(input_size)))
    except DatasetError as err:
        raise FrameFormatError(str(err)) from None
