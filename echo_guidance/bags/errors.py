"""Errors of the bag tools and the exit status each one gives on the command line.

Every bag command (``echo-guidance bag info|check|repair``) ends with one verdict and one exit status:

====  ==========================================================================================
0     the bag is intact (``info``: complete or repaired, checksums verified; ``check``: no problem;
      ``repair``: the bag is complete now, or already was)
1     the bag is intact but its content has problems (``check``), or it holds no messages
2     usage error (wrong arguments)
3     the bag is damaged or unfinished; the message names the byte offset and says to run
      ``echo-guidance bag repair BAG``
4     not a demonstration bag, or one this software cannot read (unknown schema version), or nothing
      in it can be recovered; repair cannot help
====  ==========================================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_DAMAGED = 3
EXIT_NOT_A_BAG = 4


def repair_hint(path):
    """The next step for a damaged bag, as the messages give it."""
    return f'run `echo-guidance bag repair {path}` to recover every intact message'


class BagError(Exception):
    """Base class of the errors raised when a demonstration bag cannot be read.

    Attributes:
        offset: byte offset in the MCAP file the problem concerns, or None.
        exit_code: the command-line exit status for this error (see the module docstring).
    """

    exit_code = EXIT_DAMAGED

    def __init__(self, message, offset=None, exit_code=None):
        super().__init__(message)
        self.offset = offset
        if exit_code is not None:
            self.exit_code = exit_code


class NotABagError(BagError, ValueError):
    """The path is not a demonstration bag (not a directory, no metadata.yaml, foreign bag)."""

    exit_code = EXIT_NOT_A_BAG


class CorruptBagError(BagError):
    """The bag's files are damaged or unfinished (e.g. the recorder was killed)."""


class EmptyBagError(BagError):
    """The bag holds no messages (or no session info)."""

    exit_code = EXIT_PROBLEMS


class MissingTopicsError(BagError):
    """The bag lacks topics a demonstration bag must have."""


class UnknownSchemaVersionError(BagError):
    """The bag was written with a schema version this software does not know."""

    exit_code = EXIT_NOT_A_BAG
