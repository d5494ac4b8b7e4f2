"""The sonographer's display: state, HTTP server and events, the page in headless Chromium, the ROS node.

The Chromium tests need Debian's ``chromium`` (``apt-get install chromium``); they are skipped, saying so,
only when no Chromium binary exists.
"""

import json
import re
import sys
import time
import urllib.request

import numpy as np
import pytest

from echo_guidance.display.demo import simulated_example
from echo_guidance.display.page import IMAGE_CANVAS_RECT
from echo_guidance.display.screenshot import dump_dom, find_chromium, screenshot
from echo_guidance.display.server import DisplayServer
from echo_guidance.display.state import DisplayState
from echo_guidance.guidance.presentation import ROTATION_COLOUR, TRANSLATION_COLOUR

needs_chromium = pytest.mark.skipif(
    find_chromium() is None, reason='no Chromium binary (apt-get install chromium): page not rendered'
)


def _guidance(action, stamp_ns=5_000_000_000, valid=True, status='', plane='PLAX'):
    return {
        'stamp_ns': stamp_ns,
        'frame_id': 'probe',
        'target_plane': plane,
        'valid': valid,
        'status': status,
        'action': list(map(float, action)),
        'axis_confidence': [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        'confidence': 0.63,
        'plane_reached': False,
        'model_id': 'test-model@00000000/onnxruntime-cpu',
    }


@pytest.fixture
def served():
    state = DisplayState(stale_after_s=float('inf'))
    server = DisplayServer(state, port=0).start()
    yield state, server
    server.stop()


def _get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.status, reply.headers.get('Content-Type'), reply.read()


# --- state and server --------------------------------------------------------------------------


def test_guidance_is_shown_on_the_frame_it_answers():
    state = DisplayState()
    for k in range(3):
        state.update_frame(1000 + k, np.full((40, 60), 50 * k, np.uint8))
    state.update_guidance(_guidance([5, 0, 0, 0, 0, 0], stamp_ns=1001))
    snap = state.snapshot()
    assert snap['image']['stamp_ns'] == 1001 and snap['image']['matched'] is True
    assert snap['image']['src'].startswith('data:image/jpeg;base64,')
    assert (snap['image']['width'], snap['image']['height']) == (60, 40)
    graphics = snap['guidance']['graphics']
    assert graphics['image'][0]['kind'] == 'line' and graphics['image'][0]['to'][0] > 0.5
    state.update_guidance(_guidance([5, 0, 0, 0, 0, 0], stamp_ns=1500))
    assert state.snapshot()['image']['stamp_ns'] == 1002 and state.snapshot()['image']['matched'] is False
    state.update_guidance(_guidance([0] * 6, valid=False, status='frame refused: x', stamp_ns=1002))
    assert state.snapshot()['guidance']['graphics'] is None
    with pytest.raises(ValueError, match='uint8'):
        state.update_frame(1, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match='lacks'):
        state.update_guidance({'stamp_ns': 1})


def test_old_guidance_is_marked_stale():
    state = DisplayState(stale_after_s=0.05)
    state.update_guidance(_guidance([5, 0, 0, 0, 0, 0]))
    assert state.snapshot()['guidance']['stale'] is False
    time.sleep(0.1)
    assert state.snapshot()['guidance']['stale'] is True


def test_server_serves_the_page_state_and_an_event_per_update(served):
    state, server = served
    assert server.host == '127.0.0.1'
    status, kind, body = _get(server.url)
    assert status == 200 and kind.startswith('text/html') and b'<canvas id="image"' in body
    state.update_frame(7, np.full((32, 32), 90, np.uint8))
    state.update_guidance(_guidance([-3, 0, 0, 0, 0, 0], stamp_ns=7))
    _, kind, body = _get(server.url + 'state.json')
    assert kind == 'application/json' and json.loads(body)['guidance']['action'][0] == -3
    with urllib.request.urlopen(server.url + 'events', timeout=10) as stream:
        assert stream.headers.get('Content-Type') == 'text/event-stream'
        first = json.loads(stream.readline().decode().removeprefix('data: '))
        assert stream.readline() == b'\n'
        state.update_guidance(_guidance([4, 0, 0, 0, 0, 0], stamp_ns=7))
        second = json.loads(stream.readline().decode().removeprefix('data: '))
        assert second['seq'] > first['seq'] and second['guidance']['action'][0] == 4
        assert json.loads(_get(server.url + 'health')[2])['clients'] == 1
    with pytest.raises(urllib.error.HTTPError, match='404'):
        _get(server.url + 'nothing')


# --- the page in Chromium ----------------------------------------------------------------------


def _pixels(png_path, colour, tolerance=40):
    """(x, y) of the screenshot pixels of ``colour`` inside the image canvas, in canvas pixels."""
    import cv2

    image = cv2.cvtColor(cv2.imread(str(png_path)), cv2.COLOR_BGR2RGB).astype(int)
    left, top, width, height = IMAGE_CANVAS_RECT
    canvas = image[top : top + height, left : left + width]
    mask = np.all(np.abs(canvas - np.array(colour)) < tolerance, axis=2)
    ys, xs = np.nonzero(mask)
    return xs, ys


def _show(state, server, offset, tmp_path, name, plane='PLAX'):
    frame, guidance = simulated_example(seed=1, plane=plane, offset=offset, size=128)
    state.update_frame(guidance['stamp_ns'], frame)
    state.update_guidance(guidance)
    return screenshot(server.url + '?once=1', tmp_path / f'{name}.png'), guidance


@needs_chromium
@pytest.mark.parametrize(
    'offset, where',
    [
        ([12, 0, 0, 0, 0, 0], 'right'),
        ([-12, 0, 0, 0, 0, 0], 'left'),
    ],
)
def test_translation_arrow_points_toward_the_plane(served, tmp_path, offset, where):
    state, server = served
    path, guidance = _show(state, server, offset, tmp_path, where)
    assert guidance['action'][0] == pytest.approx(offset[0], abs=1e-6)
    xs, ys = _pixels(path, TRANSLATION_COLOUR)
    centre = IMAGE_CANVAS_RECT[2] / 2
    assert xs.size > 200, 'no translation arrow drawn'
    if where == 'right':
        assert xs.mean() > centre + 40 and xs.min() > centre - 15
    else:
        assert xs.mean() < centre - 40 and xs.max() < centre + 15
    assert abs(ys.mean() - IMAGE_CANVAS_RECT[3] / 2) < 25  # horizontal: no depth component


@needs_chromium
def test_rocking_arc_and_dom_show_the_rotation(served, tmp_path):
    state, server = served
    path, guidance = _show(state, server, [0, 0, 0, 0, 15, 0], tmp_path, 'rock', plane='PSAX-AV')
    xs, _ = _pixels(path, ROTATION_COLOUR)
    assert xs.size > 100 and xs.mean() > IMAGE_CANVAS_RECT[2] / 2 + 10  # the beam swings toward image right
    dom = dump_dom(server.url + '?once=1')
    assert 'Target: PSAX-AV' in dom and '>GUIDING<' in dom
    pitch = re.search(r'id="v-pitch">([^<]*)<', dom).group(1)
    assert float(pitch) == pytest.approx(guidance['action'][4], abs=0.06)
    assert 'rock 15°: beam toward image right' in dom


@needs_chromium
def test_no_guidance_is_shown_as_such_without_arrows(served, tmp_path):
    state, server = served
    state.update_frame(9, np.full((128, 128), 80, np.uint8))
    state.update_guidance(
        _guidance(
            [0] * 6, stamp_ns=9, valid=False, status='model output is not finite (NaN or inf): [nan ...]'
        )
    )
    path = screenshot(server.url + '?once=1', tmp_path / 'none.png')
    assert _pixels(path, TRANSLATION_COLOUR)[0].size == 0
    dom = dump_dom(server.url + '?once=1')
    assert '>NO GUIDANCE<' in dom and 'No guidance: model output is not finite' in dom
    assert re.search(r'id="v-x">([^<]*)<', dom).group(1) == '–'


# --- honest states (issue 17, part 5) -----------------------------------------------------------


def test_instructions_are_the_two_largest_corrections_largest_first():
    from echo_guidance.guidance.presentation import guidance_graphics, instructions

    # 3 mm along x, rock 10 deg (pitch), 6 mm deeper, 2 mm out of the screen: rock, press, slide x.
    assert instructions([3, 2, 6, 0, 10, 0]) == ['rock 10°: beam toward image right', 'press 6 mm (+z)']
    assert instructions([3, 2, 6, 0, 10, 0], limit=6)[2:] == [
        'slide 3 mm toward image right (+x)',
        'slide 2 mm out of the screen (+y)',
    ]
    # Millimetres and degrees weigh one to one; a tie keeps the order x, y, z, rock, tilt, rotate.
    assert instructions([-5, 0, 0, 0, 0, 5]) == [
        'slide 5 mm toward image left (-x)',
        'rotate 5° clockwise (seen from the handle)',
    ]
    assert guidance_graphics([24, 3, -2, 0, 9, 4])['instructions'] == [
        'slide 24 mm toward image right (+x)',
        'rock 9°: beam toward image right',
    ]
    assert instructions([0.4, 0.2, 0, 0, 0.5, 0]) == []


def test_guidance_state_order_and_what_each_state_shows():
    from echo_guidance.guidance.presentation import guidance_state, guidance_view

    good = _guidance([24, 3, -2, 0, 9, 4])
    assert guidance_state(None) == 'waiting'
    assert guidance_state(good) == 'guiding'
    assert guidance_state({**good, 'plane_reached': True}) == 'plane_reached'
    assert guidance_state({**good, 'confidence': 0.01}) == 'low_confidence'
    assert guidance_state({**good, 'confidence': float('nan')}) == 'low_confidence'
    assert guidance_state({**good, 'confidence': 0.01, 'plane_reached': True}) == 'low_confidence'
    assert guidance_state({**good, 'valid': False}) == 'no_guidance'
    assert guidance_state({**good, 'valid': False}, stale=True) == 'stale'
    assert guidance_state(good, low_confidence_below=0.7) == 'low_confidence'
    view = guidance_view(good)
    assert view['numbers'] == 'shown' and view['arrows'] and len(view['instructions']) == 2
    assert view['instructions_omitted'] == 3  # z, tilt-free rotate and y are smaller
    low = guidance_view({**good, 'confidence': 0.01})
    assert low['badge'] == 'LOW CONFIDENCE' and low['numbers'] == 'greyed' and not low['arrows']
    assert low['instructions'] == [] and 'Confidence 1 % is below 50 %' in low['note']
    stale = guidance_view(good, stale=True, age_s=2.5)
    assert stale['numbers'] == 'cleared' and not stale['arrows'] and stale['instructions'] == []
    assert 'for 2.5 s' in stale['note']
    assert guidance_view({**good, 'action': [0.2, 0, 0, 0, 0, 0]})['instructions'] == ['hold still']


def _dom_field(dom, element_id):
    return re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom).group(1)


def _dom_class(dom, element_id):
    return re.search(rf'id="{element_id}" class="([^"]*)"', dom).group(1)


def _instructions(dom):
    listed = re.search(r'<ul id="instructions">(.*?)</ul>', dom, re.S).group(1)
    return re.findall(r'<li>([^<]*)</li>', listed)


def _page(state, server, tmp_path, name, query=''):
    """Screenshot and DOM of the page in headless Chromium."""
    url = server.url + '?once=1' + query
    return screenshot(url, tmp_path / f'{name}.png'), dump_dom(url)


@needs_chromium
def test_page_waiting_for_guidance(served, tmp_path):
    state, server = served
    state.update_frame(3, np.full((128, 128), 80, np.uint8))
    path, dom = _page(state, server, tmp_path, 'waiting')
    assert _dom_field(dom, 'badge') == 'WAITING' and 'data-state="waiting"' in dom
    assert _dom_field(dom, 'v-x') == '–' and _dom_field(dom, 'overall') == 'Confidence: –'
    assert _instructions(dom) == [] and _pixels(path, TRANSLATION_COLOUR)[0].size == 0


@needs_chromium
def test_page_guiding_lists_the_two_largest_corrections_in_order(served, tmp_path):
    state, server = served
    state.update_frame(4, np.full((128, 128), 80, np.uint8))
    state.update_guidance({**_guidance([24, 3, -2, 0, 9, 4], stamp_ns=4), 'confidence': 0.93})
    path, dom = _page(state, server, tmp_path, 'guiding')
    assert _dom_field(dom, 'badge') == 'GUIDING' and 'data-state="guiding"' in dom
    assert _instructions(dom) == ['slide 24 mm toward image right (+x)', 'rock 9°: beam toward image right']
    assert '3 smaller corrections not listed (see the arrows)' in dom
    assert _dom_field(dom, 'v-x') == '+24.0' and _dom_class(dom, 'numbers') == 'shown'
    assert _dom_field(dom, 'overall') == 'Confidence: 93 %'
    xs, _ = _pixels(path, TRANSLATION_COLOUR)
    assert xs.size > 200 and xs.mean() > IMAGE_CANVAS_RECT[2] / 2 + 40


@needs_chromium
def test_page_low_confidence_withholds_the_guidance(served, tmp_path):
    """Issue 17: at 'Confidence: 1 %' over an almost empty image the page said GUIDING, 'slide 24 mm'."""
    state, server = served
    frame = np.zeros((128, 128), np.uint8)
    frame[5:9, 60:68] = 40  # almost empty
    state.update_frame(6, frame)
    state.update_guidance({**_guidance([24, 0, 0, 0, 0, 0], stamp_ns=6), 'confidence': 0.01})
    path, dom = _page(state, server, tmp_path, 'low')
    assert _dom_field(dom, 'badge') == 'LOW CONFIDENCE' and 'GUIDING' not in dom
    assert _dom_class(dom, 'badge') == 'low_confidence' and 'data-state="low_confidence"' in dom
    assert _instructions(dom) == [] and 'slide 24 mm' not in dom
    assert 'Confidence 1 % is below 50 %: no instructions' in _dom_field(dom, 'status')
    assert _dom_class(dom, 'numbers') == 'greyed' and _dom_class(dom, 'overall') == 'greyed'
    assert _dom_field(dom, 'v-x') == '+24.0'  # still there to see, greyed
    assert _pixels(path, TRANSLATION_COLOUR)[0].size == 0, 'an arrow drawn at 1 % confidence'


@needs_chromium
def test_page_stale_clears_the_old_numbers(tmp_path):
    """Issue 17: a STALE banner came with the old numbers and 'Confidence: 100 %' still shown."""
    state = DisplayState(stale_after_s=0.05)
    server = DisplayServer(state, port=0).start()
    try:
        state.update_frame(7, np.full((128, 128), 80, np.uint8))
        state.update_guidance({**_guidance([24, 0, 0, 0, 9, 0], stamp_ns=7), 'confidence': 1.0})
        time.sleep(0.1)
        path, dom = _page(state, server, tmp_path, 'stale')
    finally:
        server.stop()
    assert _dom_field(dom, 'badge') == 'STALE' and 'data-state="stale"' in dom
    assert _dom_field(dom, 'overall') == 'Confidence: –' and '100 %' not in dom
    assert all(_dom_field(dom, f'v-{axis}') == '–' for axis in ('x', 'y', 'z', 'roll', 'pitch', 'yaw'))
    assert _instructions(dom) == [] and 'no longer valid' in _dom_field(dom, 'status')
    assert _pixels(path, TRANSLATION_COLOUR)[0].size == 0


@needs_chromium
def test_page_goes_stale_by_itself_when_updates_stop(served, tmp_path):
    """The page's own timer (no event for stale_after_ms) switches to the stale view the server sent."""
    state, server = served
    state.update_frame(8, np.full((128, 128), 80, np.uint8))
    state.update_guidance({**_guidance([24, 0, 0, 0, 9, 0], stamp_ns=8), 'confidence': 1.0})
    assert state.snapshot()['view']['state'] == 'guiding'  # the server still calls it fresh
    path, dom = _page(state, server, tmp_path, 'quiet', query='&stale_after_ms=400')
    assert _dom_field(dom, 'badge') == 'STALE' and _dom_field(dom, 'overall') == 'Confidence: –'
    assert _dom_field(dom, 'v-x') == '–' and _instructions(dom) == []
    assert _pixels(path, TRANSLATION_COLOUR)[0].size == 0
    _, fresh = _page(state, server, tmp_path, 'fresh')  # without the timer: still guiding
    assert _dom_field(fresh, 'badge') == 'GUIDING'


@needs_chromium
def test_page_plane_reached(served, tmp_path):
    state, server = served
    state.update_frame(9, np.full((128, 128), 80, np.uint8))
    state.update_guidance({**_guidance([0.4, 0, 0, 0, 0.3, 0], stamp_ns=9), 'plane_reached': True})
    _, dom = _page(state, server, tmp_path, 'reached')
    assert _dom_field(dom, 'badge') == 'PLANE REACHED' and _instructions(dom) == ['hold still']
    assert _dom_class(dom, 'numbers') == 'shown'


# --- the ROS node ------------------------------------------------------------------------------


def test_display_node_pairs_guidance_with_its_frame_over_dds(processes, ros_peer, wait_until):
    import socket

    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    node = processes.start(
        [sys.executable, '-m', 'echo_guidance.display.node', '--ros-args', '-p', f'port:={port}'],
        name='display',
    )
    node.wait_for_output('display serving http://127.0.0.1:', 60)
    stamp = {'sec': 1_700_000_000, 'nanosec': 5}
    image = {
        'header': {'stamp': stamp, 'frame_id': 'probe'},
        'height': 4,
        'width': 4,
        'encoding': 'mono8',
        'step': 4,
        'data': [100] * 16,
    }
    guidance = {
        'header': {'stamp': stamp, 'frame_id': 'probe'},
        'target_plane': 'PSAX-MV',
        'valid': True,
        'action': [0.0, 0.0, 9.0, 0.0, 0.0, 0.0],
        'axis_confidence': [0.5] * 6,
        'confidence': 0.5,
        'model_id': 'peer',
    }
    pub_image = processes.start(
        [
            ros_peer,
            'pub',
            'sensor_msgs/msg/Image',
            '/us/image',
            json.dumps(image),
            '--best-effort',
            '--subscribers',
            '1',
            '--timeout',
            '60',
        ],
        name='pub_image',
    )
    assert pub_image.wait(90) == 0, pub_image.output()
    pub_guidance = processes.start(
        [
            ros_peer,
            'pub',
            'echo_guidance/msg/Guidance',
            '/guidance',
            json.dumps(guidance),
            '--subscribers',
            '1',
            '--timeout',
            '60',
        ],
        name='pub_guidance',
    )
    assert pub_guidance.wait(90) == 0, pub_guidance.output()
    url = f'http://127.0.0.1:{port}/state.json'

    def shown():
        snap = json.loads(_get(url)[2])
        return snap if snap['guidance'] and snap['image'] else None

    snap = wait_until(shown, 30, message='the display state with guidance and frame')
    assert snap['guidance']['target_plane'] == 'PSAX-MV' and snap['guidance']['action'][2] == 9.0
    assert snap['image']['matched'] is True and snap['image']['width'] == 4
    assert snap['guidance']['graphics']['instructions'] == ['press 9 mm (+z)']


@needs_chromium
def test_live_chain_capture_guidance_display_draws_the_arrow(processes, tmp_path, wait_until):
    """Capture → guidance node (a model that always says +12 mm along x) → display node → page in Chromium."""
    import socket

    from guidance_helpers import write_graph_model

    model = write_graph_model(tmp_path / 'x12.onnx', action=[12, 0, 0, 0, 0, 0], size=64)
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    display = processes.start(
        [
            sys.executable,
            '-m',
            'echo_guidance.display.node',
            '--ros-args',
            '-p',
            f'port:={port}',
            '-p',
            'stale_after_s:=30.0',
        ],
        name='display',
    )
    processes.start(
        [
            sys.executable,
            '-m',
            'echo_guidance.nodes.guidance',
            '--ros-args',
            '-p',
            f'model_path:={model}',
            '-p',
            'overlay.enabled:=false',
        ],
        name='guidance',
    )
    processes.start(
        [
            sys.executable,
            '-m',
            'echo_guidance.nodes.capture',
            '--ros-args',
            '-p',
            'source_spec:=128x128',
            '-p',
            'rate_hz:=15.0',
        ],
        name='capture',
    )
    display.wait_for_output('display serving', 60)
    url = f'http://127.0.0.1:{port}/'

    def live():
        snap = json.loads(_get(url + 'state.json')[2])
        return snap['guidance'] and snap['image'] and snap['image']['matched']

    wait_until(live, 60, message='guidance paired with its frame on the display')
    path = screenshot(url + '?once=1', tmp_path / 'live.png')
    xs, _ = _pixels(path, TRANSLATION_COLOUR)
    assert xs.size > 200 and xs.mean() > IMAGE_CANVAS_RECT[2] / 2 + 40
    dom = dump_dom(url + '?once=1')
    assert re.search(r'id="v-x">([^<]*)<', dom).group(1) == '+12.0'
    assert 'x12@feedc0de/onnxruntime-cpu' in dom
