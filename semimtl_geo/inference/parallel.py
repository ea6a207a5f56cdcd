"""Many inputs over many devices: one worker process per GPU or per share of the CPU.

``predict --devices N`` starts N worker processes (``spawn``, so CUDA and threads are
safe). Worker ``i`` loads the checkpoint once and owns ``cuda:i`` (or, on the CPU,
``cores / N`` torch threads). Inputs sit in one shared queue; each worker takes the next
one as soon as it is free, so every input is predicted exactly once and a large raster
does not hold up the small ones. Workers send events back to the parent, which is the
only process that prints: one progress bar over the windows of all inputs (its total
grows as workers open their inputs), warnings, the per-input summary line, and the
one-sentence error of an input that fails (a :class:`~semimtl_geo.errors.UserError`);
the other inputs still run and the command exits 1, as with one device.

Ctrl-C (or any exception in the parent) terminates the workers; they turn SIGTERM into
``KeyboardInterrupt``, so their writers delete temporary files as in a one-device run.
"""

import os
import queue
import signal
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from semimtl_geo.errors import UserError

#: Seconds between checks that the workers are still alive.
POLL_SECONDS = 1.0
#: Seconds a worker that has finished gets to exit before it is terminated.
JOIN_SECONDS = 30.0


@dataclass(frozen=True)
class PredictJob:
    """Everything a worker needs besides the input paths (picklable)."""

    checkpoint: Path
    out_dir: Path
    tasks: str | None = None
    engine: str = "auto"
    batch_size: int = 4
    patch_size: int | None = None
    overlap: float | None = None
    bands: str | None = None
    aoi: Path | None = None
    overwrite: bool = False
    vectorize: bool = False
    resample: bool = True
    preview: bool = True
    confidence: bool = False
    rescale: str | None = None
    value_scale: float | None = None
    domain: str | None = None


def worker_devices(device: str, count: int) -> list[str]:
    """Device of each of ``count`` workers: ``cuda:0..count-1`` on GPUs, else ``cpu``.

    Raises:
        UserError: more GPUs requested than present, or CUDA requested but absent.

    """
    from semimtl_geo.inference.predictor import resolve_device

    dev = resolve_device(device)
    if dev.type != "cuda":
        return ["cpu"] * count
    if count == 1:
        return [str(dev)]
    if dev.index is not None:
        raise UserError(
            f"--device {device} names one GPU but --devices {count} asks for {count}; pass "
            "--device cuda to spread the inputs over the first GPUs."
        )
    available = torch.cuda.device_count()
    if count > available:
        raise UserError(
            f"--devices {count} needs {count} GPUs but {available} are visible; pass "
            f"--devices {available} or --device cpu for CPU worker processes."
        )
    return [f"cuda:{i}" for i in range(count)]


def summary_line(path: Path | str, result, out_dir: Path) -> str:  # noqa: ANN001 - RasterOutputs
    """Return the line printed when an input is done (the same with one or many devices)."""
    from semimtl_geo.inference.sources import source_name

    names = ", ".join(p.name for p in result.paths())
    return f"{source_name(path)}: {result.windows} windows -> {out_dir}/ ({names})"


def _worker(rank: int, device: str, threads: int, job: PredictJob, inputs, events) -> None:  # noqa: ANN001
    """Worker process: predict inputs from ``inputs`` until a ``None`` arrives."""

    def terminate(_signum, _frame):  # noqa: ANN001, ANN202
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sends SIGTERM
    torch.set_num_threads(threads)

    def show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        events.put(("warning", rank, str(message)))

    warnings.simplefilter("always", UserWarning)
    warnings.showwarning = show_warning
    from semimtl_geo.checkpoint import load_model_checkpoint
    from semimtl_geo.inference.predictor import WindowPredictor
    from semimtl_geo.inference.raster import predict_raster

    try:
        loaded = load_model_checkpoint(job.checkpoint, domain=job.domain)
        predictor = WindowPredictor(loaded, device=device, tasks=job.tasks, engine=job.engine)
    except UserError as exc:
        events.put(("fatal", rank, str(exc)))
        return
    while True:
        item = inputs.get()
        if item is None:
            break
        index, path = item
        try:
            result = predict_raster(
                predictor, path, job.out_dir, patch_size=job.patch_size, overlap=job.overlap,
                batch_size=job.batch_size, bands=job.bands, aoi=job.aoi,
                overwrite=job.overwrite, vectorize=job.vectorize, resample=job.resample,
                preview=job.preview, confidence=job.confidence, rescale=job.rescale,
                value_scale=job.value_scale,
                on_windows=lambda n: events.put(("windows", rank, n)),
                on_grid=lambda n: events.put(("grid", rank, n)),
            )
        except UserError as exc:
            events.put(("error", index, f"{path}: {exc}"))
            continue
        except KeyboardInterrupt:
            return
        except Exception:
            events.put(("error", index, f"{path}: unexpected failure\n{traceback.format_exc()}"))
            continue
        events.put(("done", index, summary_line(path, result, job.out_dir)))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # nothing left to clean up
    events.put(("exit", rank, None))


def predict_parallel(
    files: list[Path | str],
    job: PredictJob,
    devices: list[str],
    *,
    echo: Callable[[str], None],
    echo_err: Callable[[str], None],
    bar=None,  # noqa: ANN001 - a tqdm bar (total grows with each input's windows)
) -> int:
    """Predict ``files`` on one worker per entry of ``devices``; return the failures.

    Args:
        files: inputs, each predicted exactly once.
        job: options shared by every input.
        devices: one device per worker (:func:`worker_devices`).
        echo: prints a summary line (stdout).
        echo_err: prints an error or warning sentence (stderr).
        bar: optional progress bar over windows.

    Raises:
        UserError: a worker could not load the checkpoint or build its predictor.

    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    inputs, events = ctx.Queue(), ctx.Queue()
    for index, path in enumerate(files):
        inputs.put((index, str(path)))
    workers = min(len(devices), len(files))
    for _ in range(workers):
        inputs.put(None)
    cpu_workers = sum(d == "cpu" for d in devices[:workers])
    threads = max(1, torch.get_num_threads() // max(1, cpu_workers))
    procs = [ctx.Process(target=_worker, args=(r, devices[r], threads, job, inputs, events),
                         name=f"semimtl-predict-{r}", daemon=True) for r in range(workers)]
    failures, running = 0, workers
    fatal: str | None = None
    finished = False
    try:
        for proc in procs:
            proc.start()
        while running:
            try:
                kind, who, payload = events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(
                        f"prediction worker {dead[0].name} died (exit code {dead[0].exitcode})"
                    ) from None
                continue
            if kind == "windows" and bar is not None:
                bar.update(payload)
            elif kind == "grid" and bar is not None:
                bar.total = (bar.total or 0) + payload
                bar.refresh()
            elif kind == "warning":
                echo_err(f"Warning: {payload}")
            elif kind == "done":
                echo(payload)
            elif kind == "error":
                echo_err(f"Error: {payload}")
                failures += 1
            elif kind == "fatal":
                fatal = payload
                running -= 1
            elif kind == "exit":
                running -= 1
        finished = True
        if fatal is not None:
            raise UserError(fatal)
    finally:
        if finished:  # every worker said goodbye: let them exit on their own
            for proc in procs:
                proc.join(timeout=JOIN_SECONDS)
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            if proc.pid is not None:
                proc.join()
    return failures
