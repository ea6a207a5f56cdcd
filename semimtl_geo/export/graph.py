"""Self-contained inference graphs for ONNX: normalisation in, probabilities or height out.

The QGIS Deepness plugin feeds a model ``uint8 pixels / 255`` (its
``preprocessing_utils.normalize_values_to_01``) in ``N x C x H x W`` order. Our networks
expect ``(pixels / 255 - mean) / std`` (:class:`semimtl_geo.checkpoint.ModelMeta`), so
:class:`TaskGraph` bakes that standardisation into the exported graph and adds the
task's output activation (softmax for segmentation), leaving nothing for the plugin to
configure.

ONNX has no adaptive average pooling whose output size does not divide the input size
(the PSP bins 3 and 6 on a 64 px feature map), so :func:`freeze_adaptive_pools`
replaces every ``nn.AdaptiveAvgPool2d`` by :class:`FixedAdaptiveAvgPool2d`, an exact
matrix form for the tile size being exported.
"""

from collections.abc import Sequence

import torch
from torch import nn

from semimtl_geo.models.multitask import MultiTaskNet


def adaptive_pool_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """Averaging matrix ``(out_size, in_size)`` of PyTorch's adaptive average pooling.

    Row ``i`` averages input cells ``floor(i * in / out)`` to ``ceil((i + 1) * in / out)``,
    the same bins as ``torch.nn.functional.adaptive_avg_pool1d``.
    """
    mat = torch.zeros(out_size, in_size, dtype=torch.float64)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        mat[i, start:end] = 1.0 / (end - start)
    return mat.float()


class FixedAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` for one known input size, as two matrix products.

    ``y = P_h @ x @ P_w^T`` with the averaging matrices of :func:`adaptive_pool_matrix`;
    exportable to ONNX for any input/output size pair.
    """

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
        super().__init__()
        self.in_hw = in_hw
        self.register_buffer("rows", adaptive_pool_matrix(in_hw[0], out_hw[0]))
        self.register_buffer("cols_t", adaptive_pool_matrix(in_hw[1], out_hw[1]).t().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool a ``B x C x H x W`` tensor whose ``H x W`` is the size given at construction."""
        return torch.matmul(torch.matmul(self.rows, x), self.cols_t)


def _pair(size: int | Sequence[int | None] | None, like: tuple[int, int]) -> tuple[int, int]:
    if size is None:
        return like
    if isinstance(size, int):
        return (size, size)
    return (size[0] or like[0], size[1] or like[1])


def freeze_adaptive_pools(module: nn.Module, example: torch.Tensor) -> int:
    """Replace every ``nn.AdaptiveAvgPool2d`` in ``module`` by its fixed-size matrix form.

    The input size of each pooling layer is recorded by running ``module`` once on
    ``example`` (the tile the graph will be exported for).

    Returns:
        The number of layers replaced.

    """
    seen: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, child in module.named_modules():
        if isinstance(child, nn.AdaptiveAvgPool2d):
            def record(_m, inputs, _out, name=name):
                seen[name] = (int(inputs[0].shape[-2]), int(inputs[0].shape[-1]))

            hooks.append(child.register_forward_hook(record))
    with torch.no_grad():
        module(example)
    for hook in hooks:
        hook.remove()
    for name, in_hw in seen.items():
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        pool = getattr(parent, attr)
        setattr(parent, attr, FixedAdaptiveAvgPool2d(in_hw, _pair(pool.output_size, in_hw)))
    return len(seen)


def _per_band(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.float32).view(1, -1, 1, 1)


class TaskGraph(nn.Module):
    """One task of a :class:`MultiTaskNet` as the graph Deepness runs.

    Input: ``N x C x H x W`` float pixels scaled to ``[0, 1]`` (``uint8 / 255``).
    Output: ``N x num_classes x H x W`` softmax probabilities for ``"seg"``, or
    ``N x 1 x H x W`` height in normalised nDSM units for ``"height"`` (metres =
    value x ``height_scale``, exported as Deepness's ``reg_output_scaling``), clamped
    at 0: an nDSM height is never negative, and Deepness <= 0.6.5 stores regression
    results as ``uint8``, where a negative height would wrap around to 250-255 m
    (``map_processor.py``, ``_get_array_or_mmapped_array``).

    Args:
        model: the generator (its weights are shared, not copied).
        task: ``"seg"`` or ``"height"``.
        mean: per-band mean on ``pixel / 255`` (checkpoint metadata).
        std: per-band standard deviation on ``pixel / 255``.

    """

    def __init__(
        self, model: MultiTaskNet, task: str, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        if task not in model.tasks:
            raise ValueError(f"The model has no '{task}' head (it has {', '.join(model.tasks)}).")
        if len(mean) != model.in_channels or len(std) != model.in_channels:
            raise ValueError(
                f"mean/std have {len(mean)}/{len(std)} values for a {model.in_channels}-band model."
            )
        self.model = model
        self.task = task
        self.register_buffer("mean", _per_band(mean))
        self.register_buffer("std", _per_band(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise, run the network, apply the task's output activation."""
        out = self.model((x - self.mean) / self.std)[self.task]
        if self.task == "seg":
            return torch.softmax(out, dim=1)
        return torch.clamp(out, min=0.0)
