"""Batched model runner: raw pixel windows in, class probabilities and metres out.

The runner applies the checkpoint's normalisation (``(pixel / 255 - mean) / std``,
:class:`semimtl_geo.checkpoint.ModelMeta`, computed as ``pixel * a + b`` on the
device), maps windows to the model size (padding or resizing, see
:mod:`semimtl_geo.inference.windows`), runs the network with the chosen numeric engine
(:mod:`semimtl_geo.inference.engines`: bf16 autocast and channels-last on CUDA and on
CPUs with native bf16, ONNX Runtime on other CPUs, or forced with ``engine=``), and maps
the outputs back to the window. Everything stays on the predictor's device:
:meth:`WindowPredictor.forward_windows` takes and returns tensors there.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from semimtl_geo.checkpoint import LoadedModel
from semimtl_geo.errors import UserError
from semimtl_geo.inference.engines import Engine, resolve_engine
from semimtl_geo.inference.windows import WindowGrid


def resolve_tasks(loaded: LoadedModel, tasks: str | Sequence[str] | None) -> tuple[str, ...]:
    """Return the requested tasks, checked against the heads the checkpoint has.

    Raises:
        UserError: a task the model has no head for, or an unknown task name.

    """
    available = tuple(loaded.model.tasks)
    if tasks is None:
        return available
    if isinstance(tasks, str):
        tasks = ["seg", "height"] if tasks == "both" else [t.strip() for t in tasks.split(",")]
    wanted = [t for t in tasks if t]
    missing = [t for t in wanted if t not in available]
    if missing or not wanted:
        raise UserError(
            f"The checkpoint predicts {', '.join(available)} but {', '.join(missing) or 'no task'} "
            f"was requested; pass --tasks with a subset of {','.join(available)}."
        )
    return tuple(t for t in available if t in wanted)


#: Device types inference runs on.
DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``"auto"``/``"cpu"``/``"cuda:0"`` into a usable device.

    Raises:
        UserError: an unknown device name, or a device this machine does not have.

    """
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    unknown = UserError(
        f"Device '{device}' is not one semimtl-geo runs on; use auto, cpu, cuda, cuda:N or mps."
    )
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise unknown from None
    if dev.type not in DEVICE_TYPES:
        raise unknown
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"Device '{device}' was requested but CUDA is not available; use --device cpu."
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UserError(
                f"Device '{device}' does not exist: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}."
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(
            f"Device '{device}' was requested but Apple's MPS is not available; use --device cpu."
        )
    return dev


@contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """Run the enclosed torch operations on one CPU thread (nothing changes off the CPU).

    For many small memory-bound operations in a row (blending, finishing rows): each
    multi-threaded operation ends waiting for its slowest thread, and on cores other jobs
    share that thread is often descheduled. Measured with 2 threads at load average
    6-8 (3000 x 3000 stand-in): 5.0-6.5 CPU s / 13-14 s wall with the blending on one
    thread, 8.5-9.3 CPU s / 18-20 s wall on two. The values are the same either way.
    """
    with _cpu_threads(device, 1):
        yield


@contextmanager
def _cpu_threads(device: torch.device, inside: int) -> Iterator[None]:
    """Run the enclosed block on ``inside`` (at least 1) CPU threads, then restore the count.

    Nothing changes off the CPU or when the count would not drop.
    """
    threads = torch.get_num_threads()
    inside = max(1, inside)
    if device.type != "cpu" or inside >= threads:
        yield
        return
    torch.set_num_threads(inside)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


#: Multiply-accumulates per input pixel (convolutions and linear layers) below which a
#: network counts as light (:attr:`WindowPredictor.light`). The benchmark's 3-convolution
#: stand-in has 53; the demo's ResNet18 generator tens of thousands. Per window pixel the
#: softmax, blending and row finishing cost about as much CPU time as the stand-in
#: (20 ns, one thread), a few hundred MACs.
LIGHT_MACS_PER_PIXEL = 1000


def macs_per_pixel(model: torch.nn.Module, in_channels: int, device: torch.device,
                   size: int = 64) -> float:
    """Multiply-accumulates per input pixel of ``model``'s convolutions and linear layers.

    Counted with forward hooks on one zero ``1 x C x size x size`` input (output elements
    times the inputs each one sums); resampling and element-wise layers are not counted.
    A network without such layers is not called.
    """
    conv_types = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)
    macs = 0

    def count(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        # weight[0] (out x in / groups x kernel for a linear layer or a convolution, in x
        # out / groups x kernel transposed) holds the inputs each output element sums, or
        # the outputs each input element of a transposed convolution feeds
        nonlocal macs
        fed = (inputs[0] if isinstance(module, torch.nn.modules.conv._ConvTransposeNd)
               else output)
        macs += fed.numel() * module.weight.shape[1:].numel()

    layers = [m for m in model.modules() if isinstance(m, conv_types)]
    if not layers:  # nothing to count: no probe call
        return 0.0
    handles = [m.register_forward_hook(count) for m in layers]
    try:
        with torch.inference_mode():
            # float32 like every batch the pipeline feeds, whatever torch.get_default_dtype()
            model(torch.zeros(1, in_channels, size, size, dtype=torch.float32, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return macs / float(size * size)


@contextmanager
def model_threads(device: torch.device, light: bool = True) -> Iterator[None]:
    """Run a light network (``light``) on one CPU thread fewer in the enclosed block.

    The sliding-window engine runs the network in the calling thread and the softmax,
    blending and row finishing in a background thread on one CPU thread
    (:func:`one_thread`). With a light network the two are about equal work, and sharing
    a core made each of the network's parallel operations wait for its thread that the
    blending thread had descheduled; so a light network gets the other ``threads - 1``
    (at least one) and the blending a core of its own. A heavier network keeps every
    thread (the blending thread is then mostly idle). The network's outputs are those of
    a ``threads - 1`` run: oneDNN sums convolutions in an order that depends on the
    thread count (heights can differ in the last float bits from a ``threads`` run;
    identical to the previous version run with ``--threads 1`` on two threads, measured).
    Nothing changes off the CPU, with one thread, or for a heavy network.
    """
    threads = torch.get_num_threads()
    with _cpu_threads(device, threads - 1 if light else threads):
        yield


class WindowPredictor:
    """Run a :class:`LoadedModel` on batches of raw pixel windows.

    Args:
        loaded: model and metadata from :func:`semimtl_geo.checkpoint.load_model_checkpoint`.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        tasks: subset of the model's tasks to return (default: all of them).
        engine: numeric engine (:data:`semimtl_geo.inference.engines.ENGINES`); ``"auto"``
            picks the fastest one measured to agree with float32 on this kind of device.

    """

    def __init__(
        self,
        loaded: LoadedModel,
        device: str | torch.device = "cpu",
        tasks: str | Sequence[str] | None = None,
        engine: str = "auto",
    ) -> None:
        self.meta = loaded.meta
        self.tasks = resolve_tasks(loaded, tasks)
        self.device = resolve_device(device)
        self.model = loaded.model.to(self.device).eval()
        self.cuda = self.device.type == "cuda"
        self.engine_name = resolve_engine(engine, self.device)
        self.engine = Engine(self.model, self.device, self.engine_name)
        self.in_channels = int(loaded.model.in_channels)
        self.num_classes = int(loaded.model.num_classes)
        mean = np.asarray(self.meta.mean, dtype=np.float32)
        std = np.asarray(self.meta.std, dtype=np.float32)
        if mean.size != self.in_channels or std.size != self.in_channels:
            raise UserError(
                f"Checkpoint meta has {mean.size} mean / {std.size} std values for a "
                f"{self.in_channels}-band model; re-save the checkpoint with one value per band."
            )
        # (p / 255 - mean) / std == p * scale + shift
        scale = 1.0 / (255.0 * std.astype(np.float64))
        shift = -mean.astype(np.float64) / std.astype(np.float64)
        self._scale = torch.as_tensor(scale, dtype=torch.float32, device=self.device).view(
            1, -1, 1, 1)
        self._shift = torch.as_tensor(shift, dtype=torch.float32, device=self.device).view(
            1, -1, 1, 1)
        #: Raw pixel value that normalises to 0 (used to fill nodata pixels).
        self.fill_values = (mean * 255.0).astype(np.float32)
        self.height_scale = float(self.meta.height_scale)
        self._light: bool | None = None

    @property
    def light(self) -> bool:
        """Whether the network is light (:data:`LIGHT_MACS_PER_PIXEL`; counted once).

        Only the CPU's thread split uses it, so off the CPU it is ``False`` without a probe.
        """
        if self.device.type != "cpu":
            return False
        if self._light is None:
            macs = macs_per_pixel(self.model, self.in_channels, self.device)
            self._light = macs < LIGHT_MACS_PER_PIXEL
        return self._light

    @torch.inference_mode()
    def __call__(self, windows: np.ndarray, grid: WindowGrid) -> dict[str, np.ndarray]:
        """Predict a batch of windows given as a NumPy array (see :meth:`forward_windows`).

        Args:
            windows: ``N x C x win_h x win_w`` raw pixel values (uint8 or float).
            grid: the grid the windows come from (model size and mapping mode).

        Returns:
            ``"probs"``: ``N x K x win_h x win_w`` softmax probabilities (if seg requested),
            ``"height"``: ``N x win_h x win_w`` heights in metres (if height requested).

        """
        x = torch.from_numpy(np.ascontiguousarray(windows)).to(self.device)
        return {k: v.cpu().numpy() for k, v in self.forward_windows(x, grid).items()}

    @torch.inference_mode()
    def forward_windows(
        self, windows: torch.Tensor | Sequence[torch.Tensor], grid: WindowGrid,
        workspace: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predict a batch of raw pixel windows already on the predictor's device.

        :meth:`run_model` then :meth:`finish_outputs` (the sliding-window engine runs the
        two halves in different threads).

        Args:
            windows: ``N x C x win_h x win_w`` raw pixel values (uint8 or float) on
                :attr:`device`, or a sequence of ``N`` such ``C x win_h x win_w`` views
                (e.g. slices of a strip: they are normalised straight into the batch,
                with no intermediate copy).
            grid: the grid the windows come from (model size and mapping mode).
            workspace: a dict the caller keeps between calls: the normalised batch and
                the returned tensors are written into tensors kept there (allocated once
                per shape), so the returned tensors are only valid until the next call
                with the same dict. A fresh multi-megabyte tensor per call costs a page
                fault per 4 KiB on the CPU (more than the softmax itself, measured); the
                values are the same either way.

        Returns:
            ``"probs"``: ``N x K x win_h x win_w`` float32 softmax probabilities (if seg
            requested), ``"height"``: ``N x win_h x win_w`` float32 metres (if height
            requested), on :attr:`device`.

        """
        raw = self.run_model(windows, grid, workspace)
        return self.finish_outputs(raw, grid, workspace, size=tuple(windows[0].shape[-2:]))

    @torch.inference_mode()
    def run_model(
        self, windows: torch.Tensor | Sequence[torch.Tensor], grid: WindowGrid,
        workspace: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Normalise raw windows, map them to the model size, run the network.

        Returns the requested tasks' raw float32 outputs on :attr:`device`, cut back to
        the window where the grid pads (``N x K x h x w`` logits, ``N x 1 x h x w``
        heights in model units; ``h x w`` is the model size where the grid resizes).
        Arguments as :meth:`forward_windows` (``workspace`` holds the input batch).
        """
        win_h, win_w = windows[0].shape[-2:]
        space = workspace if workspace is not None else {}
        x = _buffer(space, "input", (len(windows), self.in_channels, win_h, win_w),
                    self.device)
        for i, window in enumerate(windows):  # raw -> float (a vectorised conversion copy)
            x[i].copy_(window)
        x.mul_(self._scale).add_(self._shift)  # 4x faster than a mixed-dtype addcmul
        if grid.mode == "pad":
            pad = (0, grid.model_w - win_w, 0, grid.model_h - win_h)
            # "replicate" works for any pad width ("reflect" needs pad < size).
            x = F.pad(x, pad, mode="replicate")
        elif grid.mode == "resize":
            x = F.interpolate(x, size=(grid.model_h, grid.model_w), mode="bilinear",
                              align_corners=False)
        out = self.engine(x)
        raw: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            y = out[task]  # on the device: ONNX Runtime (CPU tensors) runs on the CPU only
            if grid.mode == "pad":
                y = y[..., :win_h, :win_w]
            raw[task] = y
        return raw

    @torch.inference_mode()
    def finish_outputs(
        self, raw: dict[str, torch.Tensor], grid: WindowGrid,
        workspace: dict[str, torch.Tensor] | None = None, size: Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Softmax, map back to the window size and scale heights.

        Turns :meth:`run_model`'s outputs into what :meth:`forward_windows` returns
        (``workspace`` holds the results); ``size`` is the windows' ``(h, w)``, by default
        the grid's window size.
        """
        win_h, win_w = size if size is not None else (grid.win_h, grid.win_w)
        space = workspace if workspace is not None else {}
        result: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            y = raw[task]
            if task == "seg":  # probabilities are what is resized and blended
                y = _softmax_windows(y, _buffer(space, "softmax", y.shape, y.device))
            if grid.mode == "resize":
                y = F.interpolate(y, size=(win_h, win_w), mode="bilinear", align_corners=False)
            if task == "seg":
                result["probs"] = y
            else:
                height = _buffer(space, "height", (y.shape[0], *y.shape[2:]), y.device)
                result["height"] = torch.mul(y[:, 0], self.height_scale, out=height)
        return result


def _softmax_windows(logits: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Softmax over the classes of ``N x K x H x W`` logits into ``out``, window by window.

    A network's outputs are often channel slices of one tensor (``y[:, :K]`` of a
    ``K + 1``-channel head: not contiguous as a batch, but each window's ``K x H x W``
    block is). A batched softmax first copies such an input into a contiguous temporary;
    window by window it reads the slices in place: 4 x 6 x 512 x 512 on one CPU thread,
    39 -> 21 ms, the same values (each pixel's softmax is computed alone either way).
    """
    for i in range(logits.shape[0]):
        torch.softmax(logits[i], dim=0, out=out[i])
    return out


def _buffer(space: dict[str, torch.Tensor], key: str, shape: Sequence[int],
            device: torch.device) -> torch.Tensor:
    """Return the float32 tensor ``space[key]`` of ``shape`` (allocated when missing)."""
    shape = tuple(int(n) for n in shape)
    tensor = space.get(key)
    if tensor is None or tuple(tensor.shape) != shape or tensor.device != device:
        tensor = space[key] = torch.empty(shape, dtype=torch.float32, device=device)
    return tensor
