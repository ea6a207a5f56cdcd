"""Publish the outputs of one input together: staged in a hidden folder, then moved in.

``predict`` writes several files per input (``<stem>_class.tif``, ``<stem>_height.tif``,
their ``.qml`` styles, ``<stem>_preview.png``, ``<stem>_classes.gpkg``,
``<stem>_confidence.tif``): the input's
*output set*. :class:`OutputSet` builds the whole set in a hidden staging folder inside
the output folder (same file system, so moving is a rename) and publishes it only once
every file is complete (:func:`semimtl_geo.atomic.replace_files`):

1. every file of the stem's previous set gets a hard link in a hidden backup folder
   (moved there instead where the file system has no hard links);
2. each new file is renamed over its final name (``os.replace``: a final name always
   holds a complete file, old or new);
3. files of the previous set that the new set does not have are removed, so old and new
   outputs are never mixed (an old ``_classes.gpkg`` beside a new ``_class.tif``);
4. the backup and staging folders are deleted.

If a step fails, the previous set is restored from the backup and the new files are
removed; a failure while building (a corrupt input, a full disk) never touches the
previous set and leaves no file behind, the staging folder included.

A run killed with SIGKILL can leave its hidden staging folder
(``.<stem>.partial-<host>-<pid>-*``) behind; :func:`remove_leftovers` deletes those of
processes of this host that no longer run, and the hidden ``*.partial.tif``/``.cog.tif``
temporaries earlier versions wrote beside the outputs, once untouched for
:data:`LEGACY_STALE_SECONDS`.
"""

import os
import re
import shutil
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from semimtl_geo.atomic import hidden_dir, replace_files
from semimtl_geo.outputs import is_write_error, write_error

#: Suffixes of the files ``predict`` writes for one input stem.
OUTPUT_SUFFIXES = (
    "_class.tif", "_height.tif", "_class.qml", "_height.qml", "_preview.png", "_classes.gpkg",
    "_confidence.tif", "_confidence.qml",
)
#: Legacy temporaries (``.<stem>_class.<random>.partial.tif`` ...) older than this are stale.
LEGACY_STALE_SECONDS = 600.0

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def family(out_dir: Path, stem: str) -> list[Path]:
    """Every final file name an output set of ``stem`` can have in ``out_dir``."""
    return [out_dir / f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_leftovers(out_dir: Path, stem: str) -> list[Path]:
    """Delete what interrupted runs for ``stem`` left in ``out_dir``; returns what went.

    Staging and backup folders are removed when their process (same host) is gone;
    legacy hidden temporaries when untouched for :data:`LEGACY_STALE_SECONDS`. Folders of
    processes that still run, and of other hosts, are left alone.
    """
    if not out_dir.is_dir():
        return []
    ours = re.compile(
        rf"^\.{re.escape(stem)}\.(?:partial|replaced)-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-"
    )
    legacy = re.compile(
        rf"^\.{re.escape(stem)}(?:_class|_height|_classes|_preview|_confidence|_class\.qml"
        r"|_height\.qml|_confidence\.qml)"
        r"\.[A-Za-z0-9_]+\.(?:partial\.tif|cog\.tif|partial\.gpkg|tmp)(?:\.aux\.xml)?$"
    )
    removed: list[Path] = []
    now = time.time()
    for entry in out_dir.iterdir():
        name = entry.name
        if not name.startswith("."):
            continue
        match = ours.match(name)
        if match:
            if match["host"] == _HOST and not _alive(int(match["pid"])):
                _remove(entry)
                removed.append(entry)
            continue
        if legacy.match(name):
            try:
                stale = now - entry.lstat().st_mtime > LEGACY_STALE_SECONDS
            except FileNotFoundError:
                continue
            if stale:
                _remove(entry)
                removed.append(entry)
    return removed


class OutputSet:
    """The output files of one input, built in a staging folder and published together.

    Use as a context manager: leaving the block with an exception discards the staged
    files (the previous set, if any, is untouched).

    Args:
        out_dir: the output folder (created if needed).
        stem: the input's stem; final names are ``<stem><suffix>``.

    """

    def __init__(self, out_dir: str | Path, stem: str) -> None:
        self.out_dir = Path(out_dir)
        self.stem = stem
        self.created_out_dir = not self.out_dir.exists()
        self.stage = hidden_dir(self.out_dir, f".{stem}.partial-{_HOST}-{os.getpid()}-")

    def staged(self, final: Path) -> Path:
        """Where the file that will become ``final`` is written meanwhile."""
        return self.stage / Path(final).name

    def publish(self, files: Iterable[Path]) -> list[Path]:
        """Move the staged versions of ``files`` (final paths) into place, all together.

        Files of the stem's previous set that are not in ``files`` are removed.

        Returns:
            The published final paths.

        Raises:
            UserError: the move failed because of the location (the previous set is
                restored).

        """
        files = [Path(f) for f in files]
        missing = [f for f in files if not self.staged(f).is_file()]
        if missing:
            raise FileNotFoundError(f"staged output {self.staged(missing[0])} was not written")
        try:
            replace_files(
                [(self.staged(f), f) for f in files],
                remove=family(self.out_dir, self.stem),
                backup_prefix=f".{self.stem}.replaced-{_HOST}-{os.getpid()}-",
            )
        except OSError as exc:
            if is_write_error(exc):
                raise write_error(self.out_dir, exc) from None
            raise
        shutil.rmtree(self.stage, ignore_errors=True)
        return files

    def discard(self) -> None:
        """Delete the staged files; remove the output folder too if this set created it empty."""
        shutil.rmtree(self.stage, ignore_errors=True)
        if self.created_out_dir:
            try:
                self.out_dir.rmdir()  # only when empty
            except OSError:
                pass

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.discard()
