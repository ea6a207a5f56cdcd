"""Backpropagation of weighted loss terms that keeps small terms alive in mixed precision.

SemiMTL's adversarial terms (eqs. 3-8) enter the generator objective (eq. 9) with
``lambda_intra = 1e-3`` and ``lambda_inter = 1e-4``, i.e. three to four orders of
magnitude below the supervised loss (eq. 1). One backward pass of the summed objective
under autocast adds their gradients to the supervised gradient *in the activations'
precision*: bf16 keeps 8 mantissa bits (float16 11), so a contribution 1e-3 below the
rest is rounded away before it reaches the fp32 parameter gradients. The generator then
silently trains as JTL/STL.

:func:`backward_terms` therefore backpropagates the terms in *groups of similar weight*:
each group's loss is divided by its largest weight (so it is O(1) and neither rounds away
nor underflows, even in float16 with its narrow exponent range), backpropagated on its own,
and its parameter gradients are multiplied by that weight and added in fp32, the
parameters' precision. Terms whose weights differ by at most ``max_ratio`` (16 = 4 bits
of bf16's 8) share a group. In fp32 the whole objective is one group: one backward pass,
bit-identical to ``sum(terms).backward()``.

Groups never mix supervised and adversarial terms, nor terms of different forward passes
(datasets), which share no activations. Cost: each dataset's graph is traversed once per
group instead of once; with the paper's weights a SemiMTL iteration has two groups per
dataset (supervised; intra + inter), i.e. twice the backward work (README, precision).

The same mechanism measures, when asked (``per_term=True``), the gradient norm that each
term sends to a set of parameters (the encoder): the training engine logs it to show that
adversarial learning is alive.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

#: Terms whose weights differ by at most this factor are backpropagated together.
DEFAULT_MAX_RATIO = 16.0


@dataclass(frozen=True)
class WeightedTerm:
    """One term ``weight * value`` of a generator objective.

    Attributes:
        name: logging name, e.g. ``potsdam/seg/intra``.
        weight: its weight in the objective (``w_t`` of eq. 1, ``lambda`` of eq. 7).
        value: the unweighted loss (a scalar tensor with a graph).
        adversarial: whether the term comes from a discriminator (eqs. 3-8).
        graph: terms computed from the same forward pass (one dataset's mini-batch) share
            activations; terms of different graphs never meet below the parameters.

    """

    name: str
    weight: float
    value: torch.Tensor
    adversarial: bool = False
    graph: str = ""

    @property
    def weighted(self) -> torch.Tensor:
        """``weight * value``, the term as it enters the objective."""
        return self.weight * self.value


def group_terms(
    terms: Sequence[WeightedTerm], max_ratio: float = DEFAULT_MAX_RATIO
) -> list[list[WeightedTerm]]:
    """Split ``terms`` into the groups that :func:`backward_terms` backpropagates separately.

    Terms are first separated by forward graph and by kind (supervised / adversarial), so
    an adversarial term never shares a pass with the supervised loss; within those, terms
    whose weights lie within ``max_ratio`` of the group's largest share a group. Terms
    with a zero weight are dropped (they contribute nothing). Within a group the original
    order is kept.
    """
    live = [t for t in terms if t.weight != 0]
    rank = {id(t): i for i, t in enumerate(live)}
    groups: list[list[WeightedTerm]] = []
    keys = list(dict.fromkeys((t.graph, t.adversarial) for t in live))
    for key in keys:
        members = sorted(
            (t for t in live if (t.graph, t.adversarial) == key), key=lambda t: -abs(t.weight)
        )
        start = len(groups)
        for term in members:
            if len(groups) > start and abs(term.weight) * max_ratio >= abs(groups[-1][0].weight):
                groups[-1].append(term)
            else:
                groups.append([term])
    return [sorted(g, key=lambda t: rank[id(t)]) for g in groups]


def backward_terms(
    terms: Sequence[WeightedTerm],
    params: Sequence[nn.Parameter],
    backward: Callable[..., None] | None = None,
    *,
    split: bool,
    per_term: bool = False,
    max_ratio: float = DEFAULT_MAX_RATIO,
    measure: Sequence[nn.Parameter] = (),
    grad_scale: float = 1.0,
) -> dict[str, float]:
    """Accumulate ``d(sum_i w_i L_i)/d params`` into ``params``' ``.grad``.

    Args:
        terms: the weighted terms of the objective.
        params: every parameter that receives gradients (their ``.grad`` is accumulated
            into, as ``loss.backward()`` would).
        backward: ``backward(loss, retain_graph=...)``; defaults to ``loss.backward``
            (Lightning's ``manual_backward`` for loss scaling and DDP).
        split: backpropagate groups of similar weight separately and scale in fp32 (for
            mixed precision). ``False`` with ``per_term=False`` is one plain backward pass.
        per_term: one group per term (implies splitting); needed for ``measure``.
        max_ratio: largest weight ratio inside a group.
        measure: parameters at which to measure each term's gradient norm (``per_term``).
        grad_scale: loss scale already applied by ``backward`` (float16 ``GradScaler``);
            measured norms are divided by it.

    Returns:
        ``{term name: gradient norm at measure}`` when ``per_term`` and ``measure`` are
        given, else ``{}``.

    """
    backward = backward or (lambda loss, **kw: loss.backward(**kw))
    live = [t for t in terms if t.weight != 0]
    if not live:
        return {}
    if not split and not per_term:
        total = live[0].weighted
        for t in live[1:]:
            total = total + t.weighted
        backward(total)
        return {}
    groups = [[t] for t in live] if per_term else group_terms(live, max_ratio)
    params = list(params)
    measured = {id(p) for p in measure}
    norms: dict[str, float] = {}
    for i, group in enumerate(groups):
        scale = max(abs(t.weight) for t in group)
        loss = group[0].value * (group[0].weight / scale)
        for t in group[1:]:
            loss = loss + t.value * (t.weight / scale)
        stash = [p.grad for p in params]
        for p in params:
            p.grad = None
        backward(loss, retain_graph=i < len(groups) - 1)
        sq = 0.0
        for p, before in zip(params, stash):
            g = p.grad
            if g is not None:
                g.mul_(scale)
                if per_term and id(p) in measured:
                    sq += float(g.detach().double().pow(2).sum())
                if before is not None:
                    g.add_(before)
            else:
                g = before
            p.grad = g
        if per_term and measured:
            norm = math.sqrt(sq) if math.isfinite(sq) else float("nan")
            norms[group[0].name] = norm / grad_scale
    return norms
