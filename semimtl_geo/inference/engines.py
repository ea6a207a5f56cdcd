"""Numeric engines that run the network on normalised windows: eager, bf16, ONNX Runtime...

Every engine takes a ``B x C x H x W`` float32 batch on the predictor's device (already
normalised) and returns the model's raw outputs as float32 tensors on that device
(``"seg"`` logits ``B x K x H x W``, ``"height"`` ``B x 1 x H x W``). They differ only in
how the same weights are executed:

* ``eager``: PyTorch eager mode, float32, NCHW — the reference every other engine is
  checked against;
* ``channels-last``: eager float32 with channels-last (NHWC) memory format;
* ``bf16``: channels-last with bfloat16 autocast (on CPU only worth it where the CPU has
  AVX512-BF16 or AMX-BF16 instructions, read from ``/proc/cpuinfo``);
* ``onnxruntime``: the network exported to ONNX (static window size, dynamic batch) and
  run by ONNX Runtime's CPU provider in float32; one session per window size;
* ``compile``: ``torch.compile`` (inductor, frozen weights) of the channels-last model,
  with bf16 autocast where the device supports bf16; the first call compiles for minutes
  on a small CPU, so it only pays off for long runs.

``auto`` picks, by measurement on this project's build machine (see README
"Performance"), ``bf16`` on CUDA GPUs with bf16 support and on CPUs with AVX512-BF16/AMX,
``onnxruntime`` on other CPUs, and ``channels-last`` on older GPUs.
The engines agree with ``eager`` to >= 99.5 % of class labels and <= 0.05 m mean
absolute height difference (``tests/test_predict_engines.py``).
"""

import copy
import functools
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from semimtl_geo.errors import UserError

#: Engine names a user can force with ``--engine`` (``auto`` chooses one).
ENGINES: tuple[str, ...] = ("auto", "eager", "channels-last", "bf16", "onnxruntime", "compile")

Outputs = dict[str, torch.Tensor]


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from ``/proc/cpuinfo`` (empty where the file does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether the CPU executes bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def device_has_bf16(device: torch.device) -> bool:
    """Whether bf16 runs natively on ``device`` (CUDA compute capability >= 8 or CPU flags)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return cpu_has_bf16()


def _onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401  (torch's exporter writes through it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def default_engine(device: torch.device) -> str:
    """Return the engine ``auto`` resolves to on ``device`` (see module docstring)."""
    if device.type == "cuda":
        return "bf16" if device_has_bf16(device) else "channels-last"
    if cpu_has_bf16():
        return "bf16"
    return "onnxruntime" if _onnxruntime_available() else "channels-last"


def resolve_engine(name: str, device: torch.device) -> str:
    """Check an engine name against ``device`` and resolve ``auto``.

    Raises:
        UserError: unknown engine, ONNX Runtime on a GPU or not installed.

    """
    name = name.lower().replace("_", "-")
    if name not in ENGINES:
        raise UserError(f"Unknown engine '{name}'; use one of {', '.join(ENGINES)}.")
    if name == "auto":
        return default_engine(device)
    if name == "onnxruntime":
        if device.type != "cpu":
            raise UserError(
                "The onnxruntime engine runs on the CPU only; use --device cpu or another "
                "--engine (bf16, channels-last) on the GPU."
            )
        if not _onnxruntime_available():
            raise UserError(
                "The onnxruntime engine needs the 'onnx' and 'onnxruntime' packages; install "
                "them with pip install 'semimtl-geo[onnx]', or pick another --engine."
            )
    if name == "bf16" and not device_has_bf16(device):
        warnings.warn(
            f"--engine bf16 on a {device.type.upper()} without native bfloat16 is emulated "
            "and slow; 'auto' would pick a faster engine.",
            stacklevel=2,
        )
    return name


class Engine:
    """Run a network on normalised float32 batches (see module docstring).

    Args:
        model: the network (``forward(x) -> {"seg": ..., "height": ...}``), on ``device``,
            in eval mode; channels-last engines convert its memory format in place.
        device: where batches and outputs live.
        name: a resolved engine name (not ``auto``).

    """

    def __init__(self, model: nn.Module, device: torch.device, name: str) -> None:
        self.name = name
        self.device = device
        self.channels_last = name in {"channels-last", "bf16", "compile"}
        self.autocast = name == "bf16" or (name == "compile" and device_has_bf16(device))
        self._sessions: dict[tuple[int, int], object] = {}
        self._batch = 0
        self.model = model
        if self.channels_last:
            # in place, like the move to the device (ONNX export works on its own copy)
            self.model = model.to(memory_format=torch.channels_last)
        if self.autocast:
            self.model = float32_outputs(self.model)
        self._run: Callable[[torch.Tensor], Outputs] = self.model
        if name == "compile":
            self._run = _compiled(self.model, device)

    def __call__(self, x: torch.Tensor) -> Outputs:
        """Raw outputs (float32, on the device) for a normalised ``B x C x H x W`` batch."""
        if self.name == "onnxruntime":
            return self._onnx(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        count = x.shape[0]
        if self.name == "compile" and count < self._batch:
            # a static-shape graph per batch size: pad short batches instead of recompiling
            x = torch.cat([x, x.new_zeros((self._batch - count, *x.shape[1:]))])
        self._batch = max(self._batch, count)
        if self.autocast:
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                out = self._run(x)
        else:
            out = self._run(x)
        # one pass to float32 NCHW: softmax, blending and arg-max over classes cost less
        # CPU time class-major than channels-last (measured, 1 thread)
        return {k: v[:count].to(torch.float32, memory_format=torch.contiguous_format)
                for k, v in out.items()}

    def _onnx(self, x: torch.Tensor) -> Outputs:
        key = (int(x.shape[-2]), int(x.shape[-1]))
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = _onnx_session(self.model, x[:1])
        names = [o.name for o in session.get_outputs()]
        values = session.run(None, {"input": np.ascontiguousarray(x.cpu().numpy())})
        return {k: torch.from_numpy(v) for k, v in zip(names, values)}


class _Float32(nn.Module):
    """Run ``module`` in float32 with autocast off (the output layers of bf16 engines)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.module(x.float())


def float32_outputs(model: nn.Module) -> nn.Module:
    """Return a view of ``model`` whose last convolution of each task head runs in float32.

    Under bf16 autocast the heads' final layers would round logits and heights to bf16's
    8-bit mantissa (0.4 %: steps of about 0.1 m at 30 m). Running just those layers in
    float32 keeps full output resolution for a negligible cost. The copy shares every
    parameter and buffer with ``model``; models without a ``heads`` dict are returned as
    they are.
    """
    heads = getattr(model, "heads", None)
    if not isinstance(heads, nn.ModuleDict):
        return model
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    view = copy.deepcopy(model, shared)
    for task, head in list(view.heads.items()):
        convs = [n for n, m in head.named_modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            continue
        if not convs[-1]:  # the head is a single convolution
            view.heads[task] = _Float32(head)
            continue
        parent_name, _, attr = convs[-1].rpartition(".")
        parent = head.get_submodule(parent_name) if parent_name else head
        setattr(parent, attr, _Float32(getattr(parent, attr)))
    return view


def _compiled(model: nn.Module, device: torch.device) -> Callable[[torch.Tensor], Outputs]:
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # fold batch norms and pre-pack weights (inference only)
    return torch.compile(model, dynamic=False)


class _TupleOutputs(nn.Module):
    """The model with its dict outputs as a tuple in a fixed task order (for tracing)."""

    def __init__(self, model: nn.Module, tasks: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.tasks = tasks

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[t] for t in self.tasks)


def _onnx_session(model: nn.Module, example: torch.Tensor) -> object:
    """Export ``model`` for the window size of ``example`` and open an ORT CPU session."""
    import onnxruntime as ort

    from semimtl_geo.export.graph import freeze_adaptive_pools

    graph = copy.deepcopy(model).float().cpu().eval()
    example = example.float().cpu().contiguous()
    # Adaptive pools whose output does not divide the input have no ONNX form: replace
    # them by their exact matrix form for this window size (as the Deepness export does).
    freeze_adaptive_pools(graph, example)
    with torch.no_grad():
        tasks = tuple(graph(example))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation notices
        torch.onnx.export(
            _TupleOutputs(graph, tasks), (example,), buffer, input_names=["input"],
            output_names=list(tasks), opset_version=17, do_constant_folding=True,
            dynamic_axes={"input": {0: "batch"}, **{t: {0: "batch"} for t in tasks}},
            dynamo=False,
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
