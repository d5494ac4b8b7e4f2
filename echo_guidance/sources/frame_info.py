"""Per-frame bookkeeping published beside each image so receivers can detect lost frames.

The capture node publishes, for every image on ``/us/image``, one ``std_msgs/UInt64MultiArray``
on ``/us/frame_info`` whose ``data`` is ``FRAME_INFO_FIELDS``:

- ``stamp_ns``: the image's ``header.stamp`` in nanoseconds (the key that pairs the two messages);
- ``sequence``: the capture node's publish counter, 0, 1, 2, ... without gaps;
- ``source_index``: the source's own frame index;
- ``source_dropped_total``: frames the source lost so far (gaps in ``source_index``) plus frames
  the node rejected (wrong size/format), cumulative.

A receiver that sees sequence numbers jump, or frame infos without their image, knows it lost
frames in transport; ``source_dropped_total`` tells it about losses upstream of the node.
:class:`FrameLossTracker` implements that bookkeeping without ROS.
"""

import dataclasses

FRAME_INFO_FIELDS = ('stamp_ns', 'sequence', 'source_index', 'source_dropped_total')


@dataclasses.dataclass(frozen=True)
class FrameInfo:
    """The decoded companion record of one published image."""

    stamp_ns: int
    sequence: int
    source_index: int
    source_dropped_total: int

    def to_list(self):
        """Return the values in ``FRAME_INFO_FIELDS`` order (the message's ``data``)."""
        return [int(self.stamp_ns), int(self.sequence), int(self.source_index),
                int(self.source_dropped_total)]

    @classmethod
    def from_sequence(cls, data):
        """Decode a message's ``data``; raise ValueError when it has the wrong length."""
        data = list(data)
        if len(data) != len(FRAME_INFO_FIELDS):
            raise ValueError(
                f'frame info needs {len(FRAME_INFO_FIELDS)} values {FRAME_INFO_FIELDS}, got {len(data)}')
        return cls(*(int(v) for v in data))


class FrameLossTracker:
    """Counts frames lost between the source and a receiver from the frame-info sequence.

    Call :meth:`on_info` for every frame info received and :meth:`on_image` for every image;
    :attr:`lost_in_transport` counts published sequence numbers never seen (either message),
    :attr:`lost_at_source` the source's own losses since the first info seen.
    """

    def __init__(self):
        """Start with nothing seen."""
        self._last_sequence = None
        self._first_source_dropped = None
        self._last_source_dropped = 0
        self.infos_received = 0
        self.images_received = 0
        self.lost_in_transport = 0
        self.sequence_restarts = 0

    def on_info(self, info):
        """Account for one :class:`FrameInfo`; return how many frames were skipped before it."""
        self.infos_received += 1
        skipped = 0
        if self._last_sequence is not None:
            if info.sequence <= self._last_sequence:
                # The capture node restarted; its counters start again at 0.
                self.sequence_restarts += 1
                self._first_source_dropped = info.source_dropped_total - self.lost_at_source
            else:
                skipped = info.sequence - self._last_sequence - 1
                self.lost_in_transport += skipped
        if self._first_source_dropped is None:
            self._first_source_dropped = info.source_dropped_total
        self._last_sequence = info.sequence
        self._last_source_dropped = info.source_dropped_total
        return skipped

    def on_image(self):
        """Count one image received."""
        self.images_received += 1

    @property
    def lost_at_source(self):
        """Frames the source (or the capture node's checks) dropped since tracking started."""
        if self._first_source_dropped is None:
            return 0
        return self._last_source_dropped - self._first_source_dropped

    @property
    def images_missing(self):
        """Frame infos received without their image (an image lost while its info arrived)."""
        return max(self.infos_received - self.images_received, 0)
