"""Display node entry point (``display_node``): the sonographer's page, served on localhost.

The node itself lives in :mod:`echo_guidance.display.node` beside the page it serves; this module
gives it the ``<name>_node`` console script and the profile name ``display`` like every other node.
"""

from echo_guidance.display.node import PARAMETERS, DisplayNode, main

__all__ = ['PARAMETERS', 'DisplayNode', 'main']

if __name__ == '__main__':
    raise SystemExit(main())
