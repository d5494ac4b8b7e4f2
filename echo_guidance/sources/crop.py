"""The one place where source frames become the published image: mono8, cropped, resized.

Order of operations (documented in docs/capture.md):

1. :func:`to_mono8` checks the pixel type and converts colour to grayscale (ITU-R BT.601 luma).
2. The crop ``(x, y, width, height)`` in *source* pixels is cut out (the ultrasound sector without
   the scanner's user interface). A crop of width or height 0 means "the whole frame".
3. The crop is resized to the output size (area interpolation when shrinking, linear when
   enlarging). An output size of 0 x 0 keeps the crop size.

:class:`FramePreprocessor` also locks the source resolution: the first frame's size is remembered
and a frame of another size is rejected with :class:`ResolutionChangedError` instead of being
silently resized forever; :meth:`FramePreprocessor.relock` accepts the new size on purpose.
"""

import dataclasses

import numpy as np


class FrameFormatError(ValueError):
    """A frame has a pixel type or shape that cannot be turned into a mono8 image."""


class ResolutionChangedError(ValueError):
    """The source resolution differs from the locked one."""

    def __init__(self, locked_size, new_size):
        """Remember both sizes as (width, height)."""
        self.locked_size = tuple(locked_size)
        self.new_size = tuple(new_size)
        super().__init__(
            f'source resolution changed from {locked_size[0]}x{locked_size[1]} to '
            f'{new_size[0]}x{new_size[1]}; frames are not published until the capture is '
            f'reconfigured (set a crop/output parameter or call the accept_source_resolution service)')


def to_mono8(image, color_order='bgr'):
    """Return ``image`` as a 2-D uint8 grayscale array.

    Args:
        image: H x W, H x W x 1, H x W x 3 or H x W x 4 uint8 array.
        color_order: 'bgr' (OpenCV), 'rgb' (DICOM, simulators) or 'mono'; the channel order of
            3/4-channel input.

    Raises:
        FrameFormatError: wrong dtype, dimensionality or channel count.
    """
    if not isinstance(image, np.ndarray):
        raise FrameFormatError(f'frame is a {type(image).__name__}, expected a numpy array')
    if image.dtype != np.uint8:
        raise FrameFormatError(
            f'frame dtype is {image.dtype}, expected uint8 (8-bit mono or 3-channel colour)')
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 1:
        gray = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        if color_order not in ('bgr', 'rgb'):
            raise FrameFormatError(
                f'frame has {image.shape[2]} channels but color order {color_order!r}; '
                f"expected 'bgr' or 'rgb'")
        import cv2
        code = {('bgr', 3): cv2.COLOR_BGR2GRAY, ('rgb', 3): cv2.COLOR_RGB2GRAY,
                ('bgr', 4): cv2.COLOR_BGRA2GRAY, ('rgb', 4): cv2.COLOR_RGBA2GRAY}
        gray = cv2.cvtColor(np.ascontiguousarray(image), code[(color_order, image.shape[2])])
    else:
        raise FrameFormatError(
            f'frame shape {image.shape} is not H x W or H x W x 1/3/4')
    if gray.shape[0] == 0 or gray.shape[1] == 0:
        raise FrameFormatError(f'frame is empty (shape {image.shape})')
    return np.ascontiguousarray(gray)


@dataclasses.dataclass(frozen=True)
class CropSpec:
    """A rectangle in source pixels; width or height 0 selects the whole frame."""

    x: int = 0
    y: int = 0
    width: int = 0
    height: int = 0

    def __post_init__(self):
        """Reject negative values."""
        for name in ('x', 'y', 'width', 'height'):
            value = getattr(self, name)
            if int(value) != value or value < 0:
                raise ValueError(f'crop {name} must be an integer >= 0, got {value!r}')

    @classmethod
    def from_sequence(cls, values):
        """Build from ``[x, y, width, height]``."""
        values = list(values)
        if len(values) != 4:
            raise ValueError(f'crop needs 4 values [x, y, width, height], got {values!r}')
        return cls(*(int(v) for v in values))

    @property
    def is_full_frame(self):
        """True when the crop selects the whole frame."""
        return self.width == 0 or self.height == 0

    def resolve(self, source_width, source_height):
        """Return the concrete ``(x, y, w, h)`` for a source size, checking that it fits."""
        if self.is_full_frame:
            return 0, 0, source_width, source_height
        if self.x + self.width > source_width or self.y + self.height > source_height:
            raise ValueError(
                f'crop x={self.x} y={self.y} w={self.width} h={self.height} does not fit in the '
                f'{source_width}x{source_height} source frame')
        return self.x, self.y, self.width, self.height


def crop_and_resize(gray, crop=CropSpec(), output_size=(0, 0)):
    """Crop a mono8 image and resize it to ``output_size`` = (width, height); (0, 0) keeps the crop."""
    import cv2
    if gray.ndim != 2:
        raise FrameFormatError(f'crop_and_resize needs a 2-D mono image, got shape {gray.shape}')
    x, y, w, h = crop.resolve(gray.shape[1], gray.shape[0])
    out = gray[y:y + h, x:x + w]
    out_w, out_h = (int(v) for v in output_size)
    if out_w < 0 or out_h < 0 or (out_w == 0) != (out_h == 0):
        raise ValueError(f'output size must be two positive values or 0x0, got {output_size!r}')
    if out_w and (out_w, out_h) != (w, h):
        shrinking = out_w * out_h < w * h
        out = cv2.resize(out, (out_w, out_h),
                         interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.ascontiguousarray(out)


class FramePreprocessor:
    """Turns source frames into published images, locking the source resolution.

    Args:
        crop: :class:`CropSpec` (or a 4-sequence).
        output_size: (width, height), or (0, 0) to keep the crop size.
        expected_source_size: (width, height) the source must deliver, or None to lock on the
            first frame.
    """

    def __init__(self, crop=CropSpec(), output_size=(0, 0), expected_source_size=None):
        """Validate the geometry; no frame is needed yet."""
        self.crop = crop if isinstance(crop, CropSpec) else CropSpec.from_sequence(crop)
        output_size = tuple(int(v) for v in output_size)
        if len(output_size) != 2 or min(output_size) < 0 or (output_size[0] == 0) != (output_size[1] == 0):
            raise ValueError(f'output size must be (width, height) > 0 or (0, 0), got {output_size!r}')
        self.output_size = output_size
        if expected_source_size is not None:
            expected_source_size = tuple(int(v) for v in expected_source_size)
            if len(expected_source_size) != 2 or min(expected_source_size) <= 0:
                raise ValueError(
                    f'expected source size must be (width, height) > 0, got {expected_source_size!r}')
            self.crop.resolve(*expected_source_size)
        self._fixed_size = expected_source_size
        self.locked_size = expected_source_size

    def relock(self):
        """Forget the locked resolution; the next frame's size becomes the new lock."""
        self.locked_size = self._fixed_size

    def process(self, frame_image, color_order='bgr'):
        """Return the published mono8 image for one source image.

        Raises:
            FrameFormatError: the pixels cannot be converted.
            ResolutionChangedError: the frame size differs from the locked size.
            ValueError: the crop does not fit the (first) frame.
        """
        gray = to_mono8(frame_image, color_order)
        size = (gray.shape[1], gray.shape[0])
        if self.locked_size is None:
            self.crop.resolve(*size)
            self.locked_size = size
        elif size != self.locked_size:
            raise ResolutionChangedError(self.locked_size, size)
        return crop_and_resize(gray, self.crop, self.output_size)

    def published_size(self, source_size):
        """Return the (width, height) published for a source of ``source_size``."""
        if self.output_size[0]:
            return self.output_size
        _, _, w, h = self.crop.resolve(*source_size)
        return w, h
