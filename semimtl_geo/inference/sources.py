"""Remote rasters as ``predict`` inputs: GDAL virtual file system paths and URLs.

GDAL reads rasters it does not hold on a local disk through its virtual file systems
(https://gdal.org/user/virtual_file_systems.html): ``/vsicurl/`` fetches byte ranges of
a file over HTTP(S), ``/vsis3/``, ``/vsigs/``, ``/vsiaz/`` read cloud object stores with
their credentials from the usual environment variables, and ``/vsizip/`` etc. read into
archives. A Cloud-Optimized GeoTIFF is read window by window with HTTP range requests,
never downloaded whole.

``predict`` takes such inputs as they are (they are not files, so they are not checked
on the local disk, expanded as folders or globbed) and also plain URLs, turned into
GDAL paths:

* ``https://host/a/scene.tif?sig=...`` and ``http://...`` -> ``/vsicurl/https://...``;
* ``s3://bucket/key`` -> ``/vsis3/bucket/key``; ``gs://`` -> ``/vsigs/``;
  ``az://container/key`` -> ``/vsiaz/container/key``.

Outputs are named after the file name in the URL or path (``scene`` above, without the
query string). VRTs need nothing special: a ``.vrt`` file is a GDAL raster whose bands
are read from the files it names (local or remote).
"""

import re
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

#: URL schemes and the GDAL virtual file system that reads them.
URL_FILESYSTEMS = {
    "http": "/vsicurl/", "https": "/vsicurl/", "ftp": "/vsicurl/",
    "s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/",
}


def _scheme(item: str) -> str | None:
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", item)
    return match.group(1).lower() if match else None


def is_gdal_path(item: object) -> bool:
    """Tell whether ``item`` names a GDAL virtual file (``/vsi...``) or a URL."""
    if not isinstance(item, str):
        return False
    return item.startswith("/vsi") or _scheme(item) in URL_FILESYSTEMS


def to_gdal_path(item: str) -> str:
    """Return the GDAL path for a URL (``/vsi...`` paths are returned as they are)."""
    scheme = _scheme(item)
    if scheme is None or item.startswith("/vsi"):
        return item
    if URL_FILESYSTEMS[scheme] == "/vsicurl/":
        return "/vsicurl/" + item
    return URL_FILESYSTEMS[scheme] + item.split("://", 1)[1]


def source_name(item: object) -> str:
    """Return the file name of an input: the last part of its path or URL, no query."""
    text = str(item)
    if not is_gdal_path(text):
        return PurePosixPath(text.replace("\\", "/")).name or text
    # The innermost URL or path: /vsizip//vsicurl/https://h/a.zip/x.tif -> .../a.zip/x.tif
    rest = text
    while rest.startswith("/vsi"):
        prefix, _, tail = rest[1:].partition("/")
        rest = tail if prefix.startswith("vsi") else rest
        if not tail:
            break
    path = urlsplit(rest).path if _scheme(rest) else rest
    name = PurePosixPath(unquote(path)).name
    return name or text.rstrip("/").rsplit("/", 1)[-1]


def source_stem(item: object) -> str:
    """Return the output stem of an input: its file name without the last extension."""
    name = source_name(item)
    return PurePosixPath(name).stem if "." in name.strip(".") else name
