"""``predict`` on remote and virtual rasters: URLs, /vsicurl/, /vsis3/ and VRTs.

A Cloud-Optimized GeoTIFF is served by a small HTTP server with Range support, started
on 127.0.0.1 by the test and stopped after it. Remote results must equal those of the
same file predicted from the local disk, read with range requests (not downloaded
whole), and be named after the file name in the URL.
"""

import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from _predict_helpers import textured, tiny_checkpoint, write_raster

from semimtl_geo.cli.main import main
from semimtl_geo.inference.sources import is_gdal_path, source_stem, to_gdal_path

FAST = ["--device", "cpu", "--no-preview", "--batch-size", "8"]
OUTPUTS = ("_class.tif", "_height.tif")


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single-range ``Range: bytes=a-b`` support (206 responses)."""

    log: list[tuple[str, str, str | None, int]]

    def log_message(self, *args) -> None:  # quiet
        pass

    def send_head(self):  # noqa: ANN201 - http.server's contract
        path = Path(self.translate_path(self.path.split("?", 1)[0]))
        if not path.is_file():
            self.send_error(404)
            self.log.append((self.command, self.path, None, 404))
            return None
        data = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2) or len(data) - 1), len(data) - 1)
            if start >= len(data):
                self.send_error(416)
                return None
            body = data[start:end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.log.append((self.command, self.path, self.headers.get("Range"),
                         206 if match else 200))
        return BytesIO(body)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve ``tmp_path/www`` on 127.0.0.1 (a free port); yields (root folder, base URL, log)."""
    root = tmp_path / "www"
    root.mkdir()
    log: list = []
    handler = type("Handler", (RangeHandler,), {"log": log})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    for name in ("NO_PROXY", "no_proxy"):  # never send 127.0.0.1 through a proxy
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    try:
        yield root, f"http://127.0.0.1:{httpd.server_port}", log
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def _cog(local: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    rasterio.shutil.copy(local, dest, driver="COG", BLOCKSIZE=64, OVERVIEWS="NONE")
    return dest


def _same_outputs(a_dir: Path, a_stem: str, b_dir: Path, b_stem: str) -> None:
    for suffix in OUTPUTS:
        with rasterio.open(a_dir / f"{a_stem}{suffix}") as a, \
                rasterio.open(b_dir / f"{b_stem}{suffix}") as b:
            assert (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape)
            np.testing.assert_array_equal(a.read(), b.read())


def test_url_and_vsicurl_inputs_match_the_local_file(tmp_path, ckpt, server):
    root, base, log = server
    local = write_raster(tmp_path / "scene.tif", textured(150, 170))
    _cog(local, root / "data" / "scene_cog.tif")
    assert main(["predict", str(local), "-o", str(tmp_path / "local"), "--checkpoint",
                 str(ckpt), *FAST]) == 0

    out = tmp_path / "url"
    url = f"{base}/data/scene_cog.tif?token=abc&x=1"  # query strings are kept for GDAL
    assert main(["predict", url, "-o", str(out), "--checkpoint", str(ckpt), *FAST]) == 0
    _same_outputs(tmp_path / "local", "scene", out, "scene_cog")  # named after the URL's file
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tif") == [
        "scene_cog_class.tif", "scene_cog_height.tif"]
    gets = [entry for entry in log if entry[0] == "GET"]
    assert gets and all(status == 206 for *_, status in gets), gets  # range reads only
    assert all("token=abc" in path for _, path, _, _ in gets)

    out2 = tmp_path / "vsicurl"
    assert main(["predict", f"/vsicurl/{base}/data/scene_cog.tif", "-o", str(out2),
                 "--checkpoint", str(ckpt), *FAST]) == 0
    _same_outputs(tmp_path / "local", "scene", out2, "scene_cog")


def test_vsis3_input(tmp_path, ckpt, server, monkeypatch):
    """/vsis3/ against the same server acting as an S3 endpoint (path-style, unsigned)."""
    root, base, log = server
    local = write_raster(tmp_path / "tile.tif", textured(80, 96))
    _cog(local, root / "bucket" / "ortho" / "tile_9cm.tif")
    for key, value in {"AWS_S3_ENDPOINT": base.removeprefix("http://"), "AWS_HTTPS": "NO",
                       "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_NO_SIGN_REQUEST": "YES",
                       "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    assert main(["predict", str(local), "-o", str(tmp_path / "local"), "--checkpoint",
                 str(ckpt), *FAST]) == 0
    for i, source in enumerate(("/vsis3/bucket/ortho/tile_9cm.tif",
                                "s3://bucket/ortho/tile_9cm.tif")):
        out = tmp_path / f"s3_{i}"
        assert main(["predict", source, "-o", str(out), "--checkpoint", str(ckpt), *FAST]) == 0
        _same_outputs(tmp_path / "local", "tile", out, "tile_9cm")
    assert any(path.startswith("/bucket/ortho/tile_9cm.tif") for _, path, _, _ in log)


def _vrt(path: Path, source: str, width: int, height: int, transform, relative: bool) -> Path:
    gt = ", ".join(repr(v) for v in transform.to_gdal())
    bands = "".join(f"""
  <VRTRasterBand dataType="Byte" band="{b}">
    <SimpleSource>
      <SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename>
      <SourceBand>{b}</SourceBand>
      <SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>
      <DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>
    </SimpleSource>
  </VRTRasterBand>""" for b in (1, 2, 3))
    path.write_text(f"""<VRTDataset rasterXSize="{width}" rasterYSize="{height}">
  <SRS>EPSG:32633</SRS>
  <GeoTransform>{gt}</GeoTransform>{bands}
</VRTDataset>
""")
    return path


def test_vrt_inputs_local_and_remote(tmp_path, ckpt, server):
    root, base, _ = server
    (tmp_path / "src").mkdir()
    local = write_raster(tmp_path / "src" / "part.tif", textured(90, 110))
    with rasterio.open(local) as src:
        transform, width, height = src.transform, src.width, src.height
    _cog(local, root / "cogs" / "part.tif")
    assert main(["predict", str(local), "-o", str(tmp_path / "local"), "--checkpoint",
                 str(ckpt), *FAST]) == 0
    vrts = tmp_path / "vrts"
    vrts.mkdir()
    near = _vrt(vrts / "mosaic.vrt", "../src/part.tif", width, height, transform, True)
    far = _vrt(vrts / "remote.vrt", f"/vsicurl/{base}/cogs/part.tif", width, height,
               transform, False)
    for vrt in (near, far):
        out = tmp_path / vrt.stem
        assert main(["predict", str(vrt), "-o", str(out), "--checkpoint", str(ckpt),
                     *FAST]) == 0
        _same_outputs(tmp_path / "local", "part", out, vrt.stem)


def test_unreachable_url_is_one_sentence(tmp_path, ckpt, server, capsys):
    _, base, _ = server
    out = tmp_path / "out"
    assert main(["predict", f"{base}/missing/nothing.tif", "-o", str(out), "--checkpoint",
                 str(ckpt), *FAST]) == 1
    err = capsys.readouterr().err
    assert "could not be read by GDAL" in err and "range requests" in err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.glob("*.tif"))


@pytest.mark.parametrize(("item", "gdal", "stem"), [
    ("https://h.example/a/b/scene.tif?sig=1&x=2", "/vsicurl/https://h.example/a/b/scene.tif"
     "?sig=1&x=2", "scene"),
    ("/vsicurl/https://h.example/cog.tif", "/vsicurl/https://h.example/cog.tif", "cog"),
    ("s3://bucket/dir/tile.tif", "/vsis3/bucket/dir/tile.tif", "tile"),
    ("gs://bucket/x/ortho.jp2", "/vsigs/bucket/x/ortho.jp2", "ortho"),
    ("/vsis3/bucket/dir/t.v2.tif", "/vsis3/bucket/dir/t.v2.tif", "t.v2"),
    ("/vsizip//vsicurl/https://h.example/a.zip/inner/x.tif",
     "/vsizip//vsicurl/https://h.example/a.zip/inner/x.tif", "x"),
    ("http://h.example/dir/my%20scene.tif", "/vsicurl/http://h.example/dir/my%20scene.tif",
     "my scene"),
])
def test_gdal_path_mapping_and_stems(item, gdal, stem):
    assert is_gdal_path(item)
    assert to_gdal_path(item) == gdal
    assert source_stem(item) == source_stem(gdal) == stem


def test_local_paths_are_not_gdal_paths():
    for item in ("tiles/a.tif", "/data/b.vrt", "C:/x.tif", "vsicurl.tif"):
        assert not is_gdal_path(item)
