"""Process-wide defaults set once by the command-line entry point, before torch or GDAL load.

Both libraries read these variables only when they are first loaded, so they are set
(``os.environ.setdefault``: a value the user exported wins) before anything imports
``torch`` or ``rasterio``; this module imports neither.

* ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``: no directory listing per remote open
  (cloud-optimised reads).
* ``GDAL_CACHEMAX=512`` (MiB): bounds GDAL's block cache, so peak memory does not grow
  with the raster (``predict`` streams rows through it).
* ``OMP_WAIT_POLICY=PASSIVE``: PyTorch's OpenMP threads sleep at the end of a parallel
  region instead of spinning for the next one. With the default policy, every CPU thread
  not running a torch operation busy-waits while the process does single-threaded work
  (blending on one thread, GDAL compression, Python), taking a core from that work and
  from other jobs. Measured on the 2-core build machine under load (``predict`` of a
  6000 x 6000 raster, stand-in network, 2 torch threads, load average 7-11): half of the
  process's CPU samples were ``libgomp`` spinning; with ``PASSIVE`` the run took 10.9
  CPU s instead of 29.8 with byte-identical outputs (waking a sleeping thread costs
  microseconds per torch operation, which the multi-millisecond operations of
  inference and training do not notice).
* glibc's allocator (Linux): blocks up to 32 MiB come from the heap instead of fresh
  ``mmap`` pages, and up to 256 MiB of freed heap is kept for reuse. A CPU forward pass
  allocates tens of MiB per batch (network outputs, the softmax input); with glibc's
  defaults each batch's blocks were new pages, every 4 KiB a page fault and a zeroing
  in the kernel. Same 6000 x 6000 run: 8.7-9.3 CPU s instead of 10.6-11.8, outputs
  byte-identical. Set with ``mallopt`` for this process and as glibc's
  ``MALLOC_*_`` variables for the worker processes it starts (glibc reads those at
  start-up); nothing happens on other C libraries.
"""

import ctypes
import ctypes.util
import os
import sys

from semimtl_geo.errors import UserError

#: Largest block (bytes) glibc serves from the heap rather than a private mapping
#: (glibc's upper limit on 64-bit systems).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Freed heap (bytes) glibc keeps for reuse instead of returning it to the system.
TRIM_THRESHOLD = 256 * 1024 * 1024

#: Variables set by :func:`set_process_defaults` unless already set.
DEFAULTS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_CACHEMAX": "512",
    "OMP_WAIT_POLICY": "PASSIVE",
    "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
    "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
}

#: glibc's ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def set_process_defaults() -> None:
    """Set :data:`DEFAULTS` in ``os.environ`` where the user has not set them; tune malloc.

    Raises :class:`~semimtl_geo.errors.UserError` when a ``MALLOC_*_`` threshold the user
    exported is not a whole number of bytes.
    """
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    tune_allocator(_threshold("MALLOC_MMAP_THRESHOLD_"), _threshold("MALLOC_TRIM_THRESHOLD_"))


def _threshold(key: str) -> int:
    """Return the byte count in environment variable ``key`` (a non-negative integer)."""
    text = os.environ[key].strip()
    if not text.isdecimal() or int(text) > 2**31 - 1:
        raise UserError(f"The environment variable {key}={os.environ[key]!r} is not a whole "
                        f"number of bytes below 2^31; unset it to use the default "
                        f"({DEFAULTS[key]}) or set such a number.")
    return int(text)


def tune_allocator(mmap_threshold: int, trim_threshold: int) -> bool:
    """Apply the thresholds to this process's glibc allocator; ``False`` elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                and mallopt(_M_TRIM_THRESHOLD, trim_threshold))
