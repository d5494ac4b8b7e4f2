"""Tests of the frame sources, crop/resize and frame-loss bookkeeping (no ROS)."""

import time

import numpy as np
import pytest

from echo_guidance.sources import (
    CropSpec,
    EndOfStream,
    FrameFormatError,
    FrameInfo,
    FrameLossTracker,
    FramePreprocessor,
    ResolutionChangedError,
    SourceSpecError,
    crop_and_resize,
    open_source,
    to_mono8,
)
from echo_guidance.sources.base import Pacer
from echo_guidance.sources.test_pattern import decode_pattern_index, render_pattern

pydicom = pytest.importorskip('pydicom')
cv2 = pytest.importorskip('cv2')


def _example_cine_path():
    from pydicom import examples
    return str(examples.get_path('ybr_color'))


# --- DICOM cine: a real 30-frame cardiac ultrasound loop shipped with pydicom -------------------

def test_dicom_cine_real_frames_count_size_and_timing():
    with open_source('dicom', _example_cine_path(), realtime=False) as source:
        assert source.frame_count == 30
        assert source.modality == 'US'
        assert source.photometric_interpretation == 'YBR_FULL_422'
        frames = list(source)
    assert len(frames) == 30
    assert all(f.image.shape == (240, 320) and f.image.dtype == np.uint8 for f in frames)
    assert [f.index for f in frames] == list(range(30))
    media = np.array([f.media_time_s for f in frames])
    # FrameTime is 33.333 ms in this file.
    np.testing.assert_allclose(np.diff(media), 0.033333, atol=1e-6)
    stamps = np.array([f.acquisition_time_s for f in frames])
    np.testing.assert_allclose(np.diff(stamps), 0.033333, atol=1e-6)
    assert source.nominal_rate_hz == pytest.approx(30.0, abs=0.01)
    # Real echo content: frames differ (the heart moves) and are neither blank nor saturated.
    assert np.abs(frames[0].image.astype(int) - frames[15].image.astype(int)).mean() > 0.5
    assert 2 < frames[0].image.mean() < 200


def test_dicom_gray_is_the_luma_of_the_rgb_decoding():
    from pydicom.pixels import pixel_array
    rgb = pixel_array(_example_cine_path(), index=3)  # pydicom converts YBR to RGB by default
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(int)
    with open_source('dicom', _example_cine_path(), realtime=False) as source:
        for _ in range(4):
            frame = source.read()
    # Y read directly vs. YBR->RGB->Y: equal up to rounding, and clipping where RGB saturates
    # (the coloured overlays).
    diff = np.abs(frame.image.astype(int) - luma)
    assert diff.mean() < 0.5 and np.percentile(diff, 99.9) <= 2 and diff.max() <= 8


def test_dicom_loop_keeps_index_and_rhythm():
    with open_source('dicom', _example_cine_path(), realtime=False, loop=True) as source:
        frames = [source.read() for _ in range(61)]
    assert [f.index for f in frames] == list(range(61))
    stamps = np.array([f.acquisition_time_s for f in frames])
    np.testing.assert_allclose(np.diff(stamps), 0.033333, atol=1e-5)
    np.testing.assert_array_equal(frames[30].image, frames[0].image)
    assert frames[30].media_time_s == 0.0


def test_dicom_realtime_paces_frames():
    with open_source('dicom', _example_cine_path(), realtime=True) as source:
        t0 = time.monotonic()
        for _ in range(7):
            source.read()
        elapsed = time.monotonic() - t0
    assert 0.17 < elapsed < 0.6  # 6 periods of 33 ms after the first frame


def test_dicom_rgb_single_frame_needs_rate():
    from pydicom import examples
    path = str(examples.get_path('rgb_color'))  # no FrameTime / CineRate
    with pytest.raises(SourceSpecError, match='FrameTime'):
        open_source('dicom', path)
    with open_source('dicom', path, rate_hz=10, realtime=False) as source:
        frame = source.read()
        assert frame.image.shape == (240, 320)
        with pytest.raises(EndOfStream):
            source.read()


def test_dicom_bad_paths(tmp_path):
    with pytest.raises(SourceSpecError, match='does not exist'):
        open_source('dicom', str(tmp_path / 'missing.dcm'))
    junk = tmp_path / 'junk.dcm'
    junk.write_bytes(b'not a dicom file at all')
    with pytest.raises(SourceSpecError, match='not a readable DICOM'):
        open_source('dicom', str(junk))


# --- Video files -------------------------------------------------------------------------------

def _write_video(path, n_frames=12, fps=20.0, size=(160, 120)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), fps, size)
    assert writer.isOpened()
    for i in range(n_frames):
        image = np.zeros((size[1], size[0], 3), np.uint8)
        image[:, :, 2] = 20 + 15 * i  # red ramp over time (BGR order)
        writer.write(image)
    writer.release()


def test_video_file_nominal_timing_and_gray(tmp_path):
    path = tmp_path / 'clip.avi'
    _write_video(path)
    with open_source('video', str(path), realtime=False) as source:
        assert source.nominal_rate_hz == pytest.approx(20.0)
        frames = list(source)
    assert len(frames) == 12
    assert frames[0].color_order == 'bgr' and frames[0].image.shape == (120, 160, 3)
    np.testing.assert_allclose([f.media_time_s for f in frames], np.arange(12) / 20.0)
    np.testing.assert_allclose(np.diff([f.acquisition_time_s for f in frames]), 0.05, atol=1e-6)
    gray = [to_mono8(f.image, f.color_order).mean() for f in frames]
    # Pure red has luma 0.299 * R: the ramp must come through as BGR, not RGB (0.114 * R).
    assert gray[-1] == pytest.approx(0.299 * (20 + 15 * 11), abs=4)
    assert np.all(np.diff(gray) > 0)


def test_video_file_loop(tmp_path):
    path = tmp_path / 'clip.avi'
    _write_video(path, n_frames=5)
    with open_source('video', str(path), realtime=False, loop=True) as source:
        frames = [source.read() for _ in range(12)]
    assert [f.index for f in frames] == list(range(12))
    assert [f.media_time_s for f in frames][5] == 0.0


def test_video_bad_file(tmp_path):
    with pytest.raises(SourceSpecError, match='does not exist'):
        open_source('video', str(tmp_path / 'none.mp4'))
    bogus = tmp_path / 'bogus.mp4'
    bogus.write_bytes(b'\x00' * 100)
    with pytest.raises(SourceSpecError, match='bogus.mp4'):
        open_source('video', str(bogus))


def test_opencv_device_errors():
    with pytest.raises(SourceSpecError, match='does not exist'):
        open_source('opencv', '/dev/video_not_here')
    with pytest.raises(SourceSpecError, match='needs a device'):
        open_source('opencv', '  ')


def test_unknown_kind_and_bad_specs():
    with pytest.raises(SourceSpecError, match='unknown source kind'):
        open_source('webcam', '0')
    with pytest.raises(SourceSpecError, match='640x480'):
        open_source('test_pattern', 'big')
    with pytest.raises(SourceSpecError, match='not understood'):
        open_source('test_pattern', '640x480,explode@3')
    with pytest.raises(SourceSpecError, match='pose_provider'):
        open_source('sim', '')
    with pytest.raises(SourceSpecError, match='rate_hz'):
        open_source('test_pattern', '', rate_hz=-1)


# --- Test pattern --------------------------------------------------------------------------------

@pytest.mark.parametrize('index', [0, 1, 2, 12345, 2 ** 31 + 7, 2 ** 32 - 1])
@pytest.mark.parametrize('out_size', [None, (256, 256), (320, 240), (1280, 960)])
def test_pattern_index_survives_resize(index, out_size):
    image = render_pattern(index, 640, 480)
    if out_size:
        image = crop_and_resize(image, CropSpec(), out_size)
    assert decode_pattern_index(image) == index


def test_pattern_decode_rejects_non_pattern():
    with pytest.raises(ValueError, match='not a test pattern'):
        decode_pattern_index(np.full((100, 200), 128, np.uint8))


def test_pattern_source_counts_and_paces():
    with open_source('test_pattern', '320x240', rate_hz=50) as source:
        t0 = time.monotonic()
        frames = [source.read() for _ in range(11)]
        elapsed = time.monotonic() - t0
    assert [decode_pattern_index(f.image) for f in frames] == list(range(11))
    assert 0.15 < elapsed < 0.5


def test_pattern_fault_injection():
    with open_source('test_pattern', '320x240,resize@2=160x120,uint16@3', realtime=False) as source:
        shapes = [source.read().image for _ in range(4)]
    assert shapes[1].shape == (240, 320) and shapes[2].shape == (120, 160)
    assert shapes[3].dtype == np.uint16


# --- Crop / resize / preprocessing -----------------------------------------------------------------

def test_crop_then_resize_uses_source_pixels():
    image = np.zeros((480, 640), np.uint8)
    image[100:300, 200:400] = 200  # the "sector"
    out = crop_and_resize(image, CropSpec(200, 100, 200, 200), (100, 100))
    assert out.shape == (100, 100)
    assert out.min() == 200
    same = crop_and_resize(image, CropSpec(200, 100, 200, 200), (0, 0))
    assert same.shape == (200, 200)


def test_crop_errors():
    image = np.zeros((100, 100), np.uint8)
    with pytest.raises(ValueError, match='does not fit'):
        crop_and_resize(image, CropSpec(50, 0, 60, 10))
    with pytest.raises(ValueError, match='crop x'):
        CropSpec(-1, 0, 10, 10)
    with pytest.raises(ValueError, match='4 values'):
        CropSpec.from_sequence([1, 2, 3])
    with pytest.raises(ValueError, match='output size'):
        crop_and_resize(image, CropSpec(), (10, 0))


def test_to_mono8_formats():
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    assert to_mono8(bgr, 'bgr').max() == pytest.approx(29, abs=1)  # 0.114 * 255
    assert to_mono8(bgr, 'rgb').max() == pytest.approx(76, abs=1)  # 0.299 * 255
    assert to_mono8(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5)
    with pytest.raises(FrameFormatError, match='dtype is uint16'):
        to_mono8(np.zeros((4, 5), np.uint16))
    with pytest.raises(FrameFormatError, match='shape'):
        to_mono8(np.zeros((4, 5, 2), np.uint8))
    with pytest.raises(FrameFormatError, match='numpy array'):
        to_mono8([[1, 2]])


def test_preprocessor_locks_resolution_until_relocked():
    pre = FramePreprocessor(CropSpec(10, 10, 100, 80), (64, 48))
    assert pre.process(np.zeros((240, 320), np.uint8)).shape == (48, 64)
    assert pre.locked_size == (320, 240)
    with pytest.raises(ResolutionChangedError, match='320x240 to 640x480'):
        pre.process(np.zeros((480, 640), np.uint8))
    # Still rejected: no silent resizing while the change stands.
    with pytest.raises(ResolutionChangedError):
        pre.process(np.zeros((480, 640), np.uint8))
    assert pre.process(np.zeros((240, 320), np.uint8)).shape == (48, 64)
    pre.relock()
    assert pre.process(np.zeros((480, 640), np.uint8)).shape == (48, 64)


def test_preprocessor_expected_size_checked_up_front():
    with pytest.raises(ValueError, match='does not fit'):
        FramePreprocessor(CropSpec(0, 0, 700, 10), (0, 0), expected_source_size=(640, 480))
    pre = FramePreprocessor(CropSpec(), (0, 0), expected_source_size=(64, 48))
    with pytest.raises(ResolutionChangedError):
        pre.process(np.zeros((48, 65), np.uint8))


# --- Pacing and frame-loss bookkeeping ---------------------------------------------------------

def test_pacer_no_drift_and_reanchor():
    now = [0.0]
    slept = []

    def sleep(d):
        slept.append(d)
        now[0] += d

    pacer = Pacer(10, clock=lambda: now[0], sleep=sleep)
    due = [pacer.wait() for _ in range(5)]
    assert due == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    now[0] += 1.0  # the caller stalled for a second
    assert pacer.wait() == pytest.approx(now[0])  # re-anchored: no burst of late frames
    with pytest.raises(SourceSpecError):
        Pacer(0)


def test_frame_loss_tracker():
    tracker = FrameLossTracker()
    for seq, dropped in [(0, 2), (1, 2), (4, 3), (5, 5)]:
        tracker.on_info(FrameInfo(1000 + seq, seq, seq + 10, dropped))
        tracker.on_image()
    assert tracker.lost_in_transport == 2
    assert tracker.lost_at_source == 3
    tracker.on_info(FrameInfo(5000, 0, 0, 0))  # capture node restarted
    assert tracker.sequence_restarts == 1
    assert tracker.images_missing == 1
    with pytest.raises(ValueError, match='4 values'):
        FrameInfo.from_sequence([1, 2])
    assert FrameInfo.from_sequence(FrameInfo(1, 2, 3, 4).to_list()) == FrameInfo(1, 2, 3, 4)


# --- Simulator source ----------------------------------------------------------------------------

class _PoseEchoRenderer:
    """A minimal renderer: brightness follows the probe's x translation, so the pose is visible."""

    def __init__(self):
        self.calls = []

    def render(self, T_mm, time_s):
        self.calls.append((np.array(T_mm), time_s))
        return np.full((60, 80), int(np.clip(T_mm[0, 3], 0, 255)), np.uint8)


def test_sim_source_renders_at_the_latest_pose():
    from echo_guidance.sources.base import FrameReadError
    from echo_guidance.sources.simulated import SimulatedProbeSource
    pose = [None]
    renderer = _PoseEchoRenderer()
    with SimulatedProbeSource(lambda: pose[0], renderer=renderer, rate_hz=100) as source:
        with pytest.raises(FrameReadError, match='no probe pose'):
            source.read()
        T = np.eye(4)
        T[0, 3] = 42.0
        pose[0] = T
        frame = source.read()
        assert frame.image.shape == (60, 80) and frame.image[0, 0] == 42
        T2 = T.copy()
        T2[0, 3] = 99.0
        pose[0] = T2
        frame = source.read()
        assert frame.image[0, 0] == 99 and frame.index == 1
        pose[0] = np.full((4, 4), np.nan)
        with pytest.raises(FrameReadError, match='finite 4x4'):
            source.read()
    times = [t for _, t in renderer.calls]
    assert times == sorted(times) and times[0] >= 0


def test_sim_source_with_the_real_simulator():
    import echo_guidance.sim as sim
    patient = sim.Patient.from_seed(3)
    pose = patient.standard_plane_pose('PLAX')
    with open_source('sim', '', pose_provider=lambda: pose, sim_seed=3, rate_hz=30) as source:
        frame = source.read()
    assert frame.image.dtype == np.uint8 and frame.image.ndim == 2
    assert frame.image.std() > 1  # an actual rendering, not a blank frame


def test_sim_source_takes_the_probe_config_as_a_mapping():
    import echo_guidance.sim as sim
    pose = sim.Patient.from_seed(3).standard_plane_pose('PLAX')
    config = {'width': 96, 'height': 64, 'depth_mm': 150.0}
    with open_source('sim', '', pose_provider=lambda: pose, sim_seed=3,
                     sim_renderer_config=config) as source:
        assert source.read().image.shape == (64, 96)
    with pytest.raises(SourceSpecError, match='depth_mm'):
        open_source('sim', '', pose_provider=lambda: pose, sim_renderer_config={'depth_mm': -1.0})
    with pytest.raises(SourceSpecError, match='colour'):
        open_source('sim', '', pose_provider=lambda: pose, sim_renderer_config={'colour': 1})
