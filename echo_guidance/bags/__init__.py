"""Demonstration bags: crash-safe rosbag2/MCAP recording of ultrasound frames, probe poses and events.

The format is documented in docs/bag-format.md; topic names and types are in
:mod:`echo_guidance.bags.schema`.
"""

from echo_guidance.bags.errors import (
    BagError,
    CorruptBagError,
    EmptyBagError,
    MissingTopicsError,
    NotABagError,
    UnknownSchemaVersionError,
)
from echo_guidance.bags.reader import DemonstrationBagReader
from echo_guidance.bags.repair import RepairReport, repair_bag
from echo_guidance.bags.writer import (
    BagWriteError,
    DemonstrationBagWriter,
    DiskSpaceLow,
    InvalidFrameError,
    InvalidSessionError,
)

__all__ = [
    'BagError',
    'BagWriteError',
    'CorruptBagError',
    'DemonstrationBagReader',
    'DemonstrationBagWriter',
    'DiskSpaceLow',
    'EmptyBagError',
    'InvalidFrameError',
    'InvalidSessionError',
    'MissingTopicsError',
    'NotABagError',
    'RepairReport',
    'UnknownSchemaVersionError',
    'repair_bag',
]
