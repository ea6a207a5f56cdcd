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
"""

import os

#: Variables set by :func:`set_process_defaults` unless already set.
DEFAULTS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_CACHEMAX": "512",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def set_process_defaults() -> None:
    """Set :data:`DEFAULTS` in ``os.environ`` where the user has not set them."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
