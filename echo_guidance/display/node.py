"""Display node: serves the sonographer's page on localhost, fed by ``/guidance`` and ``/us/image``.

Run it with ``python -m echo_guidance.display.node --ros-args -p port:=8765`` (or ``echo-guidance
display serve``) and open http://127.0.0.1:8765/. Parameters: ``host`` (default 127.0.0.1: this
machine only), ``port``, ``guidance_topic``, ``image_topic``, ``stale_after_s``,
``low_confidence_below`` (below it the page withholds arrows and instructions). Each guidance is
shown on the frame with the same stamp (the frame it answers). Diagnostics on ``/diagnostics``.
"""

from rclpy.node import Node

from echo_guidance.guidance.presentation import LOW_CONFIDENCE_BELOW
from echo_guidance.nodes._common import (
    DiagnosticsPublisher,
    ParameterValidationError,
    ParamSpec,
    declare_parameters,
    run_node,
)

PARAMETERS = [
    ParamSpec(
        'host', '127.0.0.1', 'Address the page is served on (127.0.0.1 = this machine only).', read_only=True
    ),
    ParamSpec(
        'port',
        8765,
        'TCP port of the page; 0 = any free port (logged).',
        min_value=0,
        max_value=65535,
        read_only=True,
    ),
    ParamSpec('guidance_topic', '/guidance', 'Guidance messages to show.', read_only=True),
    ParamSpec('image_topic', '/us/image', 'Frames (mono8) the guidance answers.', read_only=True),
    ParamSpec(
        'stale_after_s',
        1.0,
        'Guidance older than this is shown as stale.',
        min_value=0.05,
        max_value=3600.0,
        read_only=True,
    ),
    ParamSpec(
        'low_confidence_below',
        LOW_CONFIDENCE_BELOW,
        'Overall confidence below which the page shows LOW CONFIDENCE and withholds arrows and instructions.',
        min_value=0.0,
        max_value=1.0,
        read_only=True,
    ),
    ParamSpec(
        'diagnostics_period_s', 1.0, 'Diagnostics period.', min_value=0.1, max_value=60.0, read_only=True
    ),
]


class DisplayNode(Node):
    """Subscribes to guidance and frames and serves them to the page; see the module docstring."""

    def __init__(self, **node_kwargs):
        """Declare parameters, start the HTTP server, subscribe."""
        super().__init__('display', **node_kwargs)
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from echo_guidance.display.server import DisplayServer
        from echo_guidance.display.state import DisplayState
        from echo_guidance.msg import Guidance
        from echo_guidance.nodes.guidance import GUIDANCE_QOS

        p = self.params = declare_parameters(self, PARAMETERS)
        self.state = DisplayState(p['stale_after_s'], p['low_confidence_below'])
        try:
            self.server = DisplayServer(self.state, p['host'], p['port']).start()
        except OSError as err:
            raise ParameterValidationError(str(err)) from None
        self.frames_refused = 0
        self._last_error = ''
        self.create_subscription(Guidance, p['guidance_topic'], self._on_guidance, GUIDANCE_QOS)
        self.create_subscription(Image, p['image_topic'], self._on_image, qos_profile_sensor_data)
        self._diagnostics = DiagnosticsPublisher(
            self, 'display', self.server.url, self._diagnostic_status, period_s=p['diagnostics_period_s']
        )
        self.get_logger().info(
            f'display serving {self.server.url} (guidance {p["guidance_topic"]}, frames {p["image_topic"]})'
        )

    def _on_guidance(self, msg):
        from echo_guidance.guidance.ros_messages import guidance_to_dict

        self.state.update_guidance(guidance_to_dict(msg))

    def _on_image(self, msg):
        from echo_guidance.guidance.preprocess import FrameFormatError, frame_from_image_fields

        try:
            frame = frame_from_image_fields(msg.encoding, msg.height, msg.width, msg.step, msg.data)
        except FrameFormatError as err:
            self.frames_refused += 1
            self._last_error = str(err)
            return
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.state.update_frame(stamp_ns, frame.copy())

    def _diagnostic_status(self):
        values = {
            'url': self.server.url,
            'clients': self.server.clients,
            'frames': self.state.frames_received,
            'guidance': self.state.guidance_received,
            'frames_refused': self.frames_refused,
            'last_error': self._last_error,
        }
        if self._last_error:
            return 'WARN', f'frames refused: {self._last_error}', values
        return 'OK', f'serving {self.server.url} to {self.server.clients} page(s)', values

    def close(self):
        """Stop the HTTP server."""
        self.server.stop()


def main(args=None):
    """Run the display node."""
    return run_node(DisplayNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
