"""Find the package's data files (``config/``, ``launch/``) in a source tree or an installed copy.

The same three layouts hold ``package.xml`` next to ``config/`` and ``launch/``; that directory is what
:func:`share_dir` returns:

- a source tree (a clone, tests run from it): the repository root, next to this package;
- a pip install: ``<prefix>/share/echo_guidance`` (setup.py's data files), found relative to this module
  (``<prefix>/lib/python3.X/site-packages/echo_guidance``) or under ``sys.prefix``;
- a colcon install: ``<install>/share/echo_guidance``, the same layout, or any prefix on
  ``AMENT_PREFIX_PATH``.

``ECHO_GUIDANCE_SHARE_DIR`` overrides the search (e.g. a site's own copy of the config files).
"""

import os
import sys
from pathlib import Path, PurePosixPath

PACKAGE = 'echo_guidance'
SHARE_DIR_VARIABLE = 'ECHO_GUIDANCE_SHARE_DIR'


class ResourceNotFoundError(FileNotFoundError):
    """A data file or the package's share directory could not be found."""


def _candidate_share_dirs():
    """Yield the directories that may be the share directory, most specific first."""
    override = os.environ.get(SHARE_DIR_VARIABLE)
    if override:
        yield Path(override)
        return
    package_dir = Path(__file__).resolve().parent
    if (package_dir.parent / 'CMakeLists.txt').is_file():
        yield package_dir.parent
    for prefix in package_dir.parents:
        yield prefix / 'share' / PACKAGE
    yield Path(sys.prefix) / 'share' / PACKAGE
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix:
            yield Path(prefix) / 'share' / PACKAGE


def share_dir():
    """Return the directory that holds ``package.xml``, ``config/`` and ``launch/``.

    Raises:
        ResourceNotFoundError: no candidate directory holds this package's ``package.xml``.
    """
    searched = []
    for candidate in _candidate_share_dirs():
        if (candidate / 'package.xml').is_file():
            return candidate
        searched.append(str(candidate))
    raise ResourceNotFoundError(
        f'cannot find the {PACKAGE} share directory (a folder with package.xml, config/ and launch/); '
        f'looked in: {", ".join(searched)}. Install the package (scripts/bootstrap.sh) or set '
        f'{SHARE_DIR_VARIABLE}.')


def data_path(kind, name):
    """Return the path of the existing file ``name`` (relative, may contain ``/``) in ``<share>/<kind>``.

    Raises:
        ValueError: ``name`` is absolute or climbs out of ``kind`` with ``..``.
        ResourceNotFoundError: the file does not exist; the message lists the files that do.
    """
    relative = PurePosixPath(name)
    if not name or relative.is_absolute() or '..' in relative.parts:
        raise ValueError(f'{kind} file name must be a relative path inside {kind}/, got {name!r}')
    base = share_dir() / kind
    path = base / relative
    if not path.is_file():
        available = sorted(p.relative_to(base).as_posix() for p in base.rglob('*') if p.is_file())
        raise ResourceNotFoundError(
            f'no {kind} file {name!r} in {base}; available: {", ".join(available) or "none"}')
    return path


def config_path(name):
    """Return the path of a file in ``config/``, e.g. ``config_path('capture.yaml')``."""
    return data_path('config', name)


def launch_path(name):
    """Return the path of a file in ``launch/``, e.g. ``launch_path('record.launch.py')``."""
    return data_path('launch', name)


def file_sha256(path):
    """Hex SHA-256 of a file's bytes (checkpoints, exported and default models)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()
