"""The display's HTTP server (standard library only), bound to 127.0.0.1 unless told otherwise.

Routes:

- ``GET /``: the page (:mod:`echo_guidance.display.page`);
- ``GET /state.json``: the current state (:meth:`DisplayState.snapshot`);
- ``GET /events``: Server-Sent Events, one ``data: <state JSON>`` per change of the state, and a
  comment line every ``heartbeat_s`` so closed connections are noticed;
- ``GET /health``: ``{"frames": n, "guidance": n, "seq": n, "clients": n}``.

The page shows ultrasound images: it is served on the loopback interface by default, and binding to
another address must be asked for explicitly (``host``).
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from echo_guidance.display.page import page_html

DEFAULT_HOST = '127.0.0.1'
DEFAULT_PORT = 8765


class _Handler(BaseHTTPRequestHandler):
    server_version = 'echo-guidance-display/1'

    def log_message(self, format, *args):  # noqa: A002 (the base class's signature)
        """Quiet: one line per request would flood the node's log at 30 Hz."""

    def _send(self, status, content_type, body):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        """Serve the routes of the module docstring."""
        display = self.server.display
        path = self.path.split('?', 1)[0]
        if path == '/':
            self._send(200, 'text/html; charset=utf-8', page_html().encode())
        elif path == '/state.json':
            self._send(200, 'application/json', json.dumps(display.state.snapshot()).encode())
        elif path == '/health':
            body = {
                'frames': display.state.frames_received,
                'guidance': display.state.guidance_received,
                'seq': display.state.seq,
                'clients': display.clients,
            }
            self._send(200, 'application/json', json.dumps(body).encode())
        elif path == '/events':
            self._stream()
        else:
            self._send(404, 'text/plain', f'no such page: {path}\n'.encode())

    def _stream(self):
        display = self.server.display
        self.send_response(200)
        self.send_header('Content-Type', 'text/event-stream')
        self.send_header('Cache-Control', 'no-store')
        self.send_header('Connection', 'keep-alive')
        self.end_headers()
        display.add_client(+1)
        try:
            seq = -1
            while not display.stopping.is_set():
                current = display.state.wait_for_change(seq, display.heartbeat_s)
                if current == seq:
                    self.wfile.write(b': heartbeat\n\n')
                else:
                    state = display.state.snapshot()
                    seq = state['seq']
                    self.wfile.write(b'data: ' + json.dumps(state).encode() + b'\n\n')
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the page was closed
        finally:
            display.add_client(-1)


class DisplayServer:
    """Serves a :class:`~echo_guidance.display.state.DisplayState` over HTTP in a background thread.

    Args:
        state: the DisplayState to show.
        host: address to bind (default 127.0.0.1: this machine only).
        port: TCP port; 0 picks a free one (see ``port`` after start).
        heartbeat_s: seconds between keep-alive comments on idle event streams.
    """

    def __init__(self, state, host=DEFAULT_HOST, port=DEFAULT_PORT, heartbeat_s=1.0):
        """Bind the socket (raises OSError with the address when it is taken)."""
        self.state = state
        self.heartbeat_s = float(heartbeat_s)
        self.stopping = threading.Event()
        self.clients = 0
        self._clients_lock = threading.Lock()
        try:
            self._httpd = ThreadingHTTPServer((host, int(port)), _Handler)
        except OSError as err:
            raise OSError(f'cannot serve the display on {host}:{port}: {err.strerror or err}') from None
        self._httpd.daemon_threads = True
        self._httpd.display = self
        self.host, self.port = self._httpd.server_address[:2]
        self._thread = None

    @property
    def url(self):
        """The page's URL."""
        return f'http://{self.host}:{self.port}/'

    def add_client(self, delta):
        """Count event-stream clients (for /health and diagnostics)."""
        with self._clients_lock:
            self.clients += delta

    def start(self):
        """Serve in a daemon thread; return self."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name='display-http', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving and close the socket."""
        self.stopping.set()
        self.state.wake_all()
        self._httpd.shutdown()
        self._httpd.server_close()
