"""``echo-guidance display serve | demo``: the sonographer's page, live from ROS or on a simulated pose."""

import sys


def _offset(text):
    import argparse

    try:
        values = [float(v) for v in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected 6 numbers x,y,z,roll,pitch,yaw, got {text!r}') from None
    if len(values) != 6:
        raise argparse.ArgumentTypeError(f'expected 6 numbers x,y,z,roll,pitch,yaw, got {len(values)}')
    return values


def register(subparsers):
    """Add ``display serve`` and ``display demo``."""
    parser = subparsers.add_parser('display', help="the sonographer's guidance page on localhost")
    sub = parser.add_subparsers(dest='display_command', metavar='COMMAND')
    s = sub.add_parser('serve', help='run the display node: page fed by /guidance and /us/image')
    s.add_argument(
        '--host', default='127.0.0.1', help='address to serve on (default 127.0.0.1, this machine)'
    )
    s.add_argument('--port', type=int, default=8765, help='TCP port of the page (default 8765; 0 = any free)')
    s.add_argument('--guidance-topic', default='/guidance', help='guidance topic shown (default /guidance)')
    s.add_argument('--image-topic', default='/us/image', help='frames shown (default /us/image)')
    s.set_defaults(handler=_serve)
    d = sub.add_parser(
        'demo', help='show guidance for a known offset from a standard plane of a virtual patient'
    )
    d.add_argument('--seed', type=int, default=0, help='virtual patient seed')
    d.add_argument('--plane', default='PLAX', help='target plane: PLAX, PSAX-AV or PSAX-MV (default PLAX)')
    d.add_argument(
        '--offset',
        type=_offset,
        default=[8.0, -4.0, -2.0, 6.0, 10.0, -12.0],
        help='action from the probe to the plane: x,y,z mm, roll,pitch,yaw deg',
    )
    d.add_argument('--size', type=int, default=256, help='frame size in pixels')
    d.add_argument('--model', default=None, help='run this model on the frames instead of showing the truth')
    d.add_argument('--port', type=int, default=8765, help='TCP port of the page (default 8765; 0 = any free)')
    d.add_argument(
        '--screenshot',
        default=None,
        metavar='PNG',
        help='write a headless-Chromium screenshot of the page and exit',
    )
    d.set_defaults(handler=_demo)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def _serve(args):
    from echo_guidance.display.node import main

    return main(
        [
            'display',
            '--ros-args',
            '-p',
            f'host:={args.host}',
            '-p',
            f'port:={args.port}',
            '-p',
            f'guidance_topic:={args.guidance_topic}',
            '-p',
            f'image_topic:={args.image_topic}',
        ]
    )


def _demo(args):
    import time

    from echo_guidance.display.demo import simulated_example
    from echo_guidance.display.screenshot import ScreenshotError, screenshot
    from echo_guidance.display.server import DisplayServer
    from echo_guidance.display.state import DisplayState
    from echo_guidance.planes import UnknownPlaneError, check_plane

    try:
        check_plane(args.plane)
        frame, guidance = simulated_example(args.seed, args.plane, args.offset, args.size, model=args.model)
    except (UnknownPlaneError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    state = DisplayState(stale_after_s=float('inf'))
    state.update_frame(guidance['stamp_ns'], frame)
    state.update_guidance(guidance)
    try:
        server = DisplayServer(state, port=0 if args.screenshot else args.port).start()
    except OSError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    try:
        if args.screenshot:
            path = screenshot(server.url + '?once=1', args.screenshot)
            print(
                f'screenshot: {path} (guidance {[round(v, 2) for v in guidance["action"]]}, '
                f'{guidance["model_id"]})'
            )
            return 0
        print(f'display demo on {server.url} (Ctrl-C to stop)', flush=True)
        while True:
            time.sleep(1.0)
    except ScreenshotError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
