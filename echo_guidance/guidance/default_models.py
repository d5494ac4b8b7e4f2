"""The default guidance models that ship with the repository (``models/guidance/``), and their checksums.

``models/guidance/`` holds the coarse and the fine model (ONNX), ``SHA256SUMS`` (their checksums,
``sha256sum`` format), the training configs and ``README.md`` (data recipe, the one command that
reproduces them, measured figures). The demo, ``up`` profiles and ``closed-loop --policy default`` use
them; :func:`default_model_paths` refuses files whose checksum disagrees with ``SHA256SUMS``.
"""

from pathlib import Path

from echo_guidance.resources import ResourceNotFoundError, file_sha256, share_dir

MODELS_DIR = 'models/guidance'
COARSE = 'coarse.onnx'
FINE = 'fine.onnx'
CHECKSUMS = 'SHA256SUMS'


class DefaultModelError(RuntimeError):
    """A default model is missing or does not match its recorded checksum."""


def models_dir():
    """The folder of the default guidance models (source tree or installed share directory)."""
    return share_dir() / MODELS_DIR


def recorded_checksums(folder=None):
    """{file name: sha256} from ``SHA256SUMS`` in ``folder`` (default: :func:`models_dir`)."""
    folder = Path(folder) if folder is not None else models_dir()
    path = folder / CHECKSUMS
    if not path.is_file():
        raise DefaultModelError(f'{path} is missing: the default models cannot be verified')
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DefaultModelError(f'{path}:{number}: expected "<sha256>  <file>", got {line!r}')
        out[parts[1].lstrip('*')] = parts[0]
    return out


def verify(folder=None, names=(COARSE, FINE)):
    """Check each named file against ``SHA256SUMS``; return their paths. Raises DefaultModelError."""
    folder = Path(folder) if folder is not None else models_dir()
    sums = recorded_checksums(folder)
    paths = []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DefaultModelError(
                f'default model {path} is missing '
                '(reproduce it with: echo-guidance guidance train-default --install)'
            )
        if name not in sums:
            raise DefaultModelError(f'{folder / CHECKSUMS} records no checksum for {name}')
        actual = file_sha256(path)
        if actual != sums[name]:
            raise DefaultModelError(
                f'default model {path} does not match its recorded checksum ({actual[:12]}… against '
                f'{sums[name][:12]}… in {CHECKSUMS}): the file was changed or damaged'
            )
        paths.append(path)
    return paths


def default_model_paths():
    """(coarse, fine) paths of the verified default models. Raises DefaultModelError."""
    try:
        coarse, fine = verify()
    except ResourceNotFoundError as error:
        raise DefaultModelError(str(error)) from None
    return coarse, fine


DEFAULT = 'default'
"""The model_path value that selects the default coarse and fine models."""


def resolve_model_paths(model_path, fine_model_path=''):
    """(model, fine model or None) for the guidance node's model_path / fine_model_path parameters.

    ``model_path: default`` selects the repository's default coarse model and, unless
    ``fine_model_path`` names another file, its default fine model (verified against SHA256SUMS);
    any other value is a file, with an optional fine model beside it.

    Raises:
        DefaultModelError: the default models are missing or damaged.
    """
    model_path, fine_model_path = str(model_path).strip(), str(fine_model_path).strip()
    if model_path == DEFAULT:
        coarse, fine = default_model_paths()
        return str(coarse), fine_model_path or str(fine)
    return model_path, fine_model_path or None
