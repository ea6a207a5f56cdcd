"""Benchmark `prepare-isprs` on full-size synthetic tiles.

Synthesizes full-size archives (Potsdam 6000x6000 px at 5 cm, Vaihingen about 2000x2500 px
at 9 cm) and prepares them with one worker, in a child process so its peak RSS is the
preparation's alone. Prints seconds per tile, throughput in MB/s of uncompressed source
data (image + label + nDSM members) and the peak resident memory.

    .venv/bin/python benchmarks/prepare_isprs.py --tiles-potsdam 2 --tiles-vaihingen 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MB.

    Linux keeps ``ru_maxrss`` across fork+exec, so a child started by the (large)
    synthesizing parent would report the parent's peak; ``VmHWM`` is reset by exec.
    """
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return max(int(line.split()[1]) / 1024.0, children)
    except OSError:
        pass
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, children)


def _prepare_child(src: Path, out: Path, workers: int) -> None:
    from semimtl_geo.data.isprs.prepare import PrepareOptions, prepare_isprs

    t0 = time.perf_counter()
    potsdam = src / "potsdam" if (src / "potsdam").exists() else None
    vaihingen = src / "vaihingen" if (src / "vaihingen").exists() else None
    report = prepare_isprs(potsdam, vaihingen, out, PrepareOptions(workers=workers, progress=False))
    wall = time.perf_counter() - t0
    print(json.dumps({
        "wall_s": wall,
        "peak_rss_mb": _peak_rss_mb(),
        "tiles": [
            {"dataset": r.dataset, "tile": r.tile, "ok": r.ok, "seconds": r.seconds,
             "source_mb": r.source_bytes / 1e6,
             "shape": [r.record.get("height"), r.record.get("width")] if r.ok else None,
             "source_shape": r.record.get("source_shape")}
            for r in report.results
        ],
    }))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles-potsdam", type=int, default=1)
    ap.add_argument("--tiles-vaihingen", type=int, default=1)
    ap.add_argument("--size-potsdam", type=int, default=6000)
    ap.add_argument("--size-vaihingen", type=int, default=2000,
                    help="nominal side; areas come out about 2000x2500 px")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--src", type=Path, default=None,
                    help="keep the synthesized archives here and reuse them on later runs")
    ap.add_argument("--_child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        _prepare_child(args._child[0], args._child[1], args.workers)
        return 0

    from semimtl_geo.data.isprs.synthesize import synthesize_isprs

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        src, out = args.src or Path(tmp) / "src", Path(tmp) / "out"
        if not src.exists():
            t0 = time.perf_counter()
            synthesize_isprs(src, size_potsdam=args.size_potsdam,
                             size_vaihingen=args.size_vaihingen,
                             tiles_potsdam=args.tiles_potsdam,
                             tiles_vaihingen=args.tiles_vaihingen, orthos=("IRRG",),
                             progress=True)
            synth_s = time.perf_counter() - t0
            print(f"synthesized {args.tiles_potsdam} Potsdam + {args.tiles_vaihingen} Vaihingen "
                  f"tiles in {synth_s:.1f} s")
        archive_mb = sum(f.stat().st_size for f in src.rglob("*") if f.is_file()) / 1e6
        print(f"source archives: {archive_mb:.0f} MB of zips in {src}")
        cmd = [sys.executable, __file__, "--workers", str(args.workers), "--_child", str(src),
               str(out)]
        res = subprocess.run(cmd, check=True, capture_output=True, text=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
        stats = json.loads(res.stdout.strip().splitlines()[-1])

    print(f"{'dataset':<10} {'tile':<6} {'in px':>11} {'out px':>11} {'s/tile':>7} {'MB/s':>6}")
    for t in stats["tiles"]:
        if not t["ok"]:
            print(f"{t['dataset']:<10} {t['tile']:<6} FAILED")
            continue
        mbs = t["source_mb"] / t["seconds"]
        src_px = f"{t['source_shape'][1]}x{t['source_shape'][0]}"
        out_px = f"{t['shape'][1]}x{t['shape'][0]}"
        print(f"{t['dataset']:<10} {t['tile']:<6} {src_px:>11} {out_px:>11} "
              f"{t['seconds']:7.2f} {mbs:6.1f}")
    for ds in ("potsdam", "vaihingen"):
        tiles = [t for t in stats["tiles"] if t["dataset"] == ds and t["ok"]]
        if tiles:
            sec = sum(t["seconds"] for t in tiles) / len(tiles)
            mb = sum(t["source_mb"] for t in tiles) / sum(t["seconds"] for t in tiles)
            print(f"{ds}: {sec:.2f} s/tile, {mb:.1f} MB/s (uncompressed source)")
    print(f"prepare wall time {stats['wall_s']:.1f} s, peak RSS {stats['peak_rss_mb']:.0f} MB "
          f"(workers={args.workers})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
