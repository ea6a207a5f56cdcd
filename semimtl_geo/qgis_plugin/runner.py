"""Run the ``semimtl-geo`` command line as a subprocess for the QGIS plugin.

Pure standard library, importable without QGIS and without torch: QGIS's own Python
(3.11 on Debian bookworm) has neither semimtl-geo nor torch, so the plugin drives the
CLI of the environment where semimtl-geo is installed. This module finds that CLI,
streams its tqdm progress and log lines to callbacks, kills it on cancel, and turns a
failure into the CLI's one-sentence ``Error: ...`` message.
"""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Environment variable holding the path of the ``semimtl-geo`` executable (or the folder
#: of the environment it is installed in).
CLI_ENV_VAR = "SEMIMTL_GEO_EXECUTABLE"
#: Its former name, still read (with a deprecation note) when the new one is not set.
LEGACY_CLI_ENV_VAR = "SEMIMTL_GEO_CLI"
#: File written beside the plugin by ``semimtl-geo qgis-plugin install``.
INSTALL_CONFIG = "semimtl_cli.json"
#: Executable name looked up on PATH.
CLI_NAME = "semimtl-geo"

#: Variables QGIS sets for its own Python/GDAL/PROJ that would break another environment's
#: Python or make rasterio read a PROJ database of another version.
_FOREIGN_ENV = (
    "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PROJ_LIB", "PROJ_DATA",
    "GDAL_DATA", "GDAL_DRIVER_PATH", "GDAL_PLUGINS", "QGIS_PREFIX_PATH",
)

# "desc:  45%|####5     | 9/20 [00:01<00:02, 4.5it/s]" -> desc, 45
_TQDM = re.compile(r"^(?:(?P<desc>.*?):\s*)?(?P<pct>\d{1,3})%\|")
# A bar without a total: "desc: 3win [00:01, 2.9win/s]" (no percentage to report).
_TQDM_NO_TOTAL = re.compile(
    r"^(?:(?P<desc>.*?):\s*)?\S+ \[(?:\d+:)?\d+:\d+(?:<[^,\]]*)?, [^\]]*\]$"
)
_ERROR_PREFIX = "Error: "


class CliNotFoundError(RuntimeError):
    """No usable ``semimtl-geo`` executable was found."""


def _executable(path: str | os.PathLike | None) -> str | None:
    if not path:
        return None
    text = os.path.expanduser(str(path))
    if os.path.isdir(text):
        for name in (CLI_NAME, f"{CLI_NAME}.exe", os.path.join("bin", CLI_NAME),
                     os.path.join("Scripts", f"{CLI_NAME}.exe")):
            candidate = os.path.join(text, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        return None
    if os.path.isfile(text) and os.access(text, os.X_OK):
        return text
    return shutil.which(text)


def installed_cli(plugin_dir: str | os.PathLike | None = None) -> str | None:
    """CLI path recorded by ``semimtl-geo qgis-plugin install`` next to the plugin, if any."""
    folder = Path(plugin_dir) if plugin_dir else Path(__file__).resolve().parent
    config = folder / INSTALL_CONFIG
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("cli")
    except (OSError, ValueError, AttributeError):
        return None


def find_cli(
    explicit: str | None = None,
    setting: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> str:
    """Locate the ``semimtl-geo`` executable.

    Order: the algorithm's advanced parameter, the plugin setting, ``$SEMIMTL_GEO_EXECUTABLE``
    (or its deprecated name ``$SEMIMTL_GEO_CLI``, reported through ``warn``; default: a
    ``FutureWarning``), the path recorded at ``semimtl-geo qgis-plugin install``, then
    ``PATH``.

    Raises:
        CliNotFoundError: with one sentence saying how to point the plugin at the CLI.

    """
    env_name = CLI_ENV_VAR if os.environ.get(CLI_ENV_VAR) else LEGACY_CLI_ENV_VAR
    tried = []
    for source, value in (
        ("the algorithm parameter", explicit),
        ("the plugin setting", setting),
        (f"${env_name}", os.environ.get(env_name)),
        ("the install record", installed_cli()),
        ("PATH", CLI_NAME),
    ):
        if not value:
            continue
        found = _executable(value)
        if found and source == f"${LEGACY_CLI_ENV_VAR}":
            note = (f"${LEGACY_CLI_ENV_VAR} is deprecated and will stop being read; set "
                    f"${CLI_ENV_VAR} to the same path instead.")
            if warn is None:
                warnings.warn(note, FutureWarning, stacklevel=2)
            else:
                warn(note)
        if found:
            return found
        if source != "PATH":
            tried.append(f"{source} ({value})")
    where = f" (tried {', '.join(tried)})" if tried else ""
    raise CliNotFoundError(
        f"The semimtl-geo command was not found{where}; install semimtl-geo in a Python "
        "environment and set the path of its 'semimtl-geo' executable in Processing > "
        "Options > Providers > semimtl-geo or the algorithm's advanced parameter."
    )


def clean_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the CLI: QGIS's Python/GDAL/PROJ variables removed, output unbuffered."""
    env = dict(os.environ if base is None else base)
    for key in _FOREIGN_ENV:
        env.pop(key, None)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TQDM_MININTERVAL", "0.5")
    return env


@dataclass
class RunResult:
    """What a CLI run left behind."""

    returncode: int
    canceled: bool = False
    error: str | None = None
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the command exited 0 and was not canceled."""
        return self.returncode == 0 and not self.canceled


def error_message(stderr_lines: Sequence[str], returncode: int) -> str:
    """Return the CLI's one-sentence error, or the tail of its output for a crash."""
    for line in reversed(stderr_lines):
        if line.startswith(_ERROR_PREFIX):
            return line[len(_ERROR_PREFIX):].strip()
    tail = [line for line in stderr_lines if line.strip()][-5:]
    detail = " | ".join(tail) if tail else "no output"
    return f"semimtl-geo exited with status {returncode}: {detail}"


def parse_progress(segment: str) -> tuple[str | None, float | None] | None:
    """Return ``(description, percent)`` of a tqdm status segment, or None for a plain line.

    The percent is None for a bar without a known total.
    """
    text = segment.strip()
    match = _TQDM.match(text)
    if match:
        desc = match.group("desc")
        return (desc.strip() if desc else None), min(100.0, float(match.group("pct")))
    match = _TQDM_NO_TOTAL.match(text)
    if match:
        desc = match.group("desc")
        return (desc.strip() if desc else None), None
    return None


_GLUED = re.compile(r"^(?P<bar>.*?\[[^\]]*\])(?P<rest>\S.*)$")


def split_glued(segment: str) -> list[str]:
    """Split a tqdm status and the text that ``tqdm.write`` glued to it without a newline.

    Clearing a bar on a non-terminal stream leaves e.g. ``"x.tif: 0win [00:00, ?win/s]Error:
    ..."`` in one segment.
    """
    match = _GLUED.match(segment)
    if match and parse_progress(match.group("bar")) is not None:
        return [match.group("bar"), *split_glued(match.group("rest"))]
    return [segment]


def _pump(stream, name: str, out: "queue.Queue[tuple[str, str | None]]") -> None:
    """Read a pipe in chunks; split on CR and LF so tqdm redraws arrive as segments."""
    buffer = ""
    fd = stream.fileno()
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buffer += chunk.decode("utf-8", errors="replace")
        parts = re.split(r"[\r\n]", buffer)
        buffer = parts.pop()
        for part in parts:
            for piece in split_glued(part):
                out.put((name, piece))
    if buffer:
        for piece in split_glued(buffer):
            out.put((name, piece))
    out.put((name, None))


def _terminate(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Stop the CLI and anything it started (its own process group on POSIX)."""
    if proc.poll() is not None:
        return
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired, PermissionError):
        try:
            if os.name == "posix":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except ProcessLookupError:
            pass
        proc.wait()


def run_cli(
    argv: Sequence[str],
    *,
    on_progress: Callable[[float], None] = lambda _pct: None,
    on_log: Callable[[str], None] = lambda _line: None,
    is_canceled: Callable[[], bool] = lambda: False,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    poll_s: float = 0.1,
) -> RunResult:
    """Run ``argv`` (the CLI and its arguments), streaming progress and log lines.

    Callbacks run in the calling thread. tqdm status segments go to ``on_progress``
    (percent of the current bar; its description is logged once when it changes); every
    other non-empty line of stdout and stderr goes to ``on_log``. When ``is_canceled``
    turns true the process group is terminated; the CLI writes outputs to temporary names
    and renames them at the end, so nothing half-written is left.
    """
    kwargs: dict = {}
    if os.name == "posix":
        kwargs["start_new_session"] = True
    elif sys.platform == "win32":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=clean_env() if env is None else env, cwd=cwd, **kwargs,
    )
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, "stdout", lines), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "stderr", lines), daemon=True),
    ]
    for reader in readers:
        reader.start()
    result = RunResult(returncode=-1)
    open_streams = 2
    last_desc: str | None = None
    while open_streams:
        if not result.canceled and is_canceled():
            result.canceled = True
            _terminate(proc)
        try:
            name, segment = lines.get(timeout=poll_s)
        except queue.Empty:
            continue
        if segment is None:
            open_streams -= 1
            continue
        progress = parse_progress(segment)
        if progress is not None:
            desc, pct = progress
            if desc and desc != last_desc:
                on_log(desc)
                last_desc = desc
            if pct is not None:
                on_progress(pct)
            continue
        if not segment.strip():
            continue
        (result.stderr if name == "stderr" else result.stdout).append(segment)
        on_log(segment)
    for reader in readers:
        reader.join(timeout=1.0)
    result.returncode = proc.wait()
    for stream in (proc.stdout, proc.stderr):
        stream.close()
    if not result.ok and not result.canceled:
        result.error = error_message(result.stderr, result.returncode)
    return result
