"""Precise BatchNorm: re-estimate the running statistics with the final weights.

During training a BatchNorm layer keeps an exponential moving average (momentum 0.1) of
the mini-batch statistics, and every batch in that average was computed with the
weights of *its* iteration. After a short run from a random initialisation the weights
move a lot from one iteration to the next, so the average describes features of earlier
networks, not of the final one, and eval-mode predictions suffer. Wu & Johnson,
"Rethinking 'Batch' in BatchNorm" (arXiv:2105.07576, 2021, section 3 "Population
statistics: precise BN") recommend estimating the population statistics after training
instead: forward a few dozen training batches through the frozen final network and
average their statistics with equal weights. That is what :func:`recalibrate_bn` does.

The mean is the average of the batch means; the variance is the population variance of
the pooled batches, ``E[var_b + mean_b^2] - E[mean_b]^2`` over batches ``b`` (the
average of per-batch variances alone would leave out how the batch means spread, and
underestimate it for small batches: Wu & Johnson section 3.1). Each batch is forwarded
in training mode, so every layer sees the inputs it saw in training (each normalised by
its batch's own statistics), and without gradients; no weight changes.

With ``model.norm=domain`` (:class:`~semimtl_geo.models.norm.DomainBatchNorm2d`) each
dataset's statistics are re-estimated from that dataset's batches only, with the
dataset selected as in training (Algorithm 1 forwards each dataset's mini-batch on its
own). With the paper's single-set BatchNorm one set is estimated from every dataset's
batches, each forwarded on its own as in training.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from semimtl_geo.models.norm import DomainBatchNorm2d


def _norm_layers(model: nn.Module) -> list[nn.Module]:
    """BatchNorm layers that keep running statistics (``BatchNorm2d`` and domain BN)."""
    return [
        m for m in model.modules()
        if (isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats)
        or isinstance(m, DomainBatchNorm2d)
    ]


@dataclass
class _Sums:
    """Per-channel sums over batches: batch means and batch second moments."""

    mean: torch.Tensor
    square: torch.Tensor
    batches: int = 0


@dataclass
class _Pass:
    """Forward hooks that record, per layer, the statistics of every batch it normalises."""

    sums: dict[tuple[int, int], _Sums] = field(default_factory=dict)

    def hook(self, index: int) -> Callable[..., None]:
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().float()
            dims = [d for d in range(x.ndim) if d != 1]
            mean = x.mean(dims)
            square = (x * x).mean(dims)
            key = (index, getattr(module, "domain", 0))
            slot = self.sums.get(key)
            if slot is None:
                self.sums[key] = _Sums(mean, square, 1)
            else:
                slot.mean += mean
                slot.square += square
                slot.batches += 1

        return record


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    batches: Mapping[str | None, Iterable[torch.Tensor]],
    select: Callable[[str | None], object] | None = None,
) -> int:
    """Replace the running statistics of ``model``'s BatchNorm layers by precise ones.

    Args:
        model: the trained network (its weights are not changed; its train/eval mode is
            restored afterwards).
        batches: per domain name (``None`` for a model without domains), an iterable of
            input batches ``B x C x H x W`` on the model's device, as the network saw
            them in training.
        select: called with each domain name before its batches are forwarded
            (``MultiTaskNet.select_domain``); ``None`` when the model has no domains.

    Returns:
        the number of batches forwarded.

    """
    layers = _norm_layers(model)
    if not layers:
        return 0
    recorder = _Pass()
    handles = [layer.register_forward_pre_hook(recorder.hook(i)) for i, layer in enumerate(layers)]
    was_training = model.training
    model.train()
    forwarded = 0
    try:
        for name, domain_batches in batches.items():
            if select is not None:
                select(name)
            for x in domain_batches:
                model(x)
                forwarded += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    # Pooled statistics per (layer, domain); one set without domains pools every batch.
    for (index, domain), slot in recorder.sums.items():
        layer = layers[index]
        mean = slot.mean / slot.batches
        var = (slot.square / slot.batches - mean * mean).clamp_min(0)
        running_mean, running_var = layer.running_mean, layer.running_var
        if isinstance(layer, DomainBatchNorm2d):  # the (domains, C) buffers: this row
            running_mean, running_var = running_mean[domain], running_var[domain]
        running_mean.copy_(mean)
        running_var.copy_(var)
    return forwarded
