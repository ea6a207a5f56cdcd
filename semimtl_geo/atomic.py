"""Write files under a temporary name in the target folder, then rename (never half-written).

``tempfile.mkstemp`` creates private 0600 files; outputs get the permissions a plainly
created file would have (``0666 & ~umask``) before they are renamed into place.
"""

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from semimtl_geo.outputs import is_write_error, write_error


def umask_mode() -> int:
    """Return the permissions a plainly created file gets under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_output(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On any exception (Ctrl-C included) the temporary file is removed and ``path`` is left
    as it was. A write that fails because of the location (disk full, read-only...)
    raises a one-sentence :class:`~semimtl_geo.errors.UserError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        if is_write_error(exc):
            raise write_error(path, exc) from None
        raise
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except OSError as exc:
        if is_write_error(exc):
            raise write_error(path, exc) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)
