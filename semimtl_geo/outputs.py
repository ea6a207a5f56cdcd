"""Output locations: checked before long work, write failures reported in one sentence.

Every command that writes calls :func:`check_output_dir` or :func:`check_output_file` on
its output path before it loads data or models, so a path that is a file, a read-only
folder or a misspelt mount point fails in one sentence before minutes of work rather
than with a traceback after them. The check writes nothing that stays: it creates and
removes one hidden probe file in the deepest folder of the path that already exists
(folders still to be made are not created by the check).

A full disk cannot be seen in advance; :func:`write_error` turns the ``OSError`` of a
failed write (disk full, read-only, permission denied, a file in the way) into a
:class:`~semimtl_geo.errors.UserError` naming the path, and the command-line entry point
does the same for any such error that reaches it.
"""

import errno
import os
import tempfile
from pathlib import Path

from semimtl_geo import __version__
from semimtl_geo.errors import UserError

#: Written as the "software" metadata of every raster and PNG semimtl-geo produces
#: (``TIFFTAG_SOFTWARE``, PNG ``Software``), so folder inputs can recognise them.
SOFTWARE = f"semimtl-geo {__version__}"

#: ``errno`` values of writes that fail because of the output location, not a bug.
WRITE_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
    errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG,
})

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_DENIED = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def is_own_software(value: str) -> bool:
    """Tell whether a file's software metadata names semimtl-geo (any version)."""
    return value.strip().lower().startswith("semimtl-geo")


def is_write_error(exc: BaseException) -> bool:
    """Tell whether ``exc`` is an ``OSError`` caused by the output location."""
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS


def write_error(path: str | Path, exc: OSError) -> UserError:
    """One-sentence error for a failed write of ``path``."""
    where = exc.filename if exc.filename else path
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in _FULL:
        advice = "free disk space or choose an output location on another disk"
    elif exc.errno in _DENIED:
        advice = "choose a folder you can write to"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        advice = "a file or folder of that name is in the way; choose another output path"
    else:
        advice = "choose another output path"
    return UserError(f"Could not write '{where}' ({reason}); {advice}.")


def _nearest_existing(path: Path) -> Path:
    """Deepest existing ancestor of ``path`` (``path`` itself when it exists)."""
    current = path
    while not os.path.lexists(current):
        parent = current.parent
        if parent == current:
            break
        current = parent
    return current


def _probe(existing: Path, what: str, path: Path) -> None:
    """Create and remove a hidden file in ``existing`` (the write test)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".semimtl-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(
            f"{what} '{path}' is not writable ('{existing}': {reason}); "
            "choose a location you can write to."
        ) from None


def check_output_dir(path: str | Path, what: str = "Output folder") -> Path:
    """Check that ``path`` is, or can become, a folder this process can write into.

    Args:
        path: the output folder (it need not exist yet).
        what: how the message names it (``"Run folder"``, ``"Output folder"``...).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        UserError: ``path`` or one of its parents is a file, or the deepest existing
            folder cannot be written (read-only, permission denied).

    """
    path = Path(path)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        if existing == path:
            raise UserError(
                f"{what} '{path}' is a file, not a folder; choose another output folder."
            )
        raise UserError(
            f"{what} '{path}' cannot be created because '{existing}' is a file; "
            "choose another output folder."
        )
    _probe(existing, what, path)
    return path


def check_output_file(path: str | Path, what: str = "Output file") -> Path:
    """Check that file ``path`` can be written (its folder need not exist yet).

    Raises:
        UserError: ``path`` is a folder, a parent is a file, or the deepest existing
            folder cannot be written.

    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} '{path}' is a folder; give a file name.")
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise UserError(
            f"{what} '{path}' cannot be written because '{existing}' is a file, not a "
            "folder; choose another output path."
        )
    _probe(existing, what, path)
    return path
