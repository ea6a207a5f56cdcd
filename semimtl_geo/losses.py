"""Losses of SemiMTL and its baselines (paper section 3.2, eqs. 1-9).

Conventions:
* Discriminator logits are ``B x C x H x W``. For the domain-aware (K+1)-way
  discriminator, class 0 is ground truth and class ``k`` (1..K) is the prediction of
  dataset ``k`` (eq. 2). Binary discriminators (SemiSD, DA) output one logit.
* The paper writes the adversarial losses as sums over pixels; we average over pixels
  (as AdaptSegNet's released code does) so that lambda values do not depend on crop size.
"""

import functools
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from semimtl_geo.classes import IGNORE_INDEX

InterMode = Literal["m1", "m2", "m3"]
INTER_MODES: tuple[str, ...] = ("m1", "m2", "m3")


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    class_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Pixel-wise cross-entropy with an ignore index (L_gt for segmentation, eq. 1).

    ``class_weights`` (one per class, ``None`` = the paper's unweighted loss) weight each
    pixel by its reference class; the mean is then taken over those weights, as in
    :func:`torch.nn.functional.cross_entropy`. Returns 0 (with a gradient path) when
    every pixel is ignored.
    """
    target = target.long()
    if not (target != ignore_index).any():
        return logits.sum() * 0.0
    weight = None if class_weights is None else _weights_on(tuple(class_weights), logits.device)
    return F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index)


def lovasz_softmax_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Lovasz-softmax loss: a convex surrogate of 1 - IoU, averaged over the present classes.

    Berman, Rannen Triki & Blaschko, "The Lovasz-Softmax loss: a tractable surrogate for
    the optimization of the intersection-over-union measure in neural networks", CVPR 2018
    (eq. 12, the batch-wide variant of their released ``lovasz_softmax_flat``). For every
    class present in the batch's valid pixels, the pixels' errors ``|1[y=c] - p_c|`` are
    sorted in decreasing order and dotted with the gradient of the Lovasz extension of
    the Jaccard loss. Not part of the paper's recipe (``loss.seg_lovasz_weight`` = 0);
    an option for short CPU trainings whose mIoU is held down by small classes.

    All classes are sorted at once, without a host synchronisation: ignored pixels get
    error 0, so they sort behind every pixel that contributes and change no term. Returns
    0 (with a gradient path) when every pixel is ignored.
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1).permute(0, 2, 3, 1).reshape(-1, num_classes)
    labels = target.long().reshape(-1)
    valid = (labels != ignore_index).unsqueeze(1).to(probs.dtype)
    fg = F.one_hot(torch.where(valid[:, 0] > 0, labels, 0), num_classes).to(probs.dtype) * valid
    errors_sorted, order = ((fg - probs).abs() * valid).sort(dim=0, descending=True)
    per_class = (errors_sorted * _lovasz_grad(fg.gather(0, order))).sum(dim=0)
    present = (fg.sum(dim=0) > 0).to(probs.dtype)
    return (per_class * present).sum() / present.sum().clamp(min=1.0)


def _lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss at errors sorted along dim 0.

    Berman 2018, alg. 1, for every column (class) of ``fg_sorted`` at once.
    """
    total = fg_sorted.sum(dim=0)
    intersection = total - fg_sorted.cumsum(dim=0)
    union = total + (1.0 - fg_sorted).cumsum(dim=0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


@functools.lru_cache(maxsize=8)
def _weights_on(weights: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """Return the class weights as a float32 tensor on ``device`` (built once, then reused).

    Built outside inference mode, so that a first call under it cannot hand a later
    training step a tensor that autograd refuses to save.
    """
    with torch.inference_mode(False):
        return torch.tensor(weights, dtype=torch.float32, device=device)


def berhu_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    threshold_ratio: float = 0.2,
) -> torch.Tensor:
    """Reverse Huber (BerHu) loss of Laina et al. 2016 (L_gt for height, eq. 1).

    ``L(e) = |e|`` if ``|e| <= c`` else ``(e^2 + c^2) / (2c)``, with
    ``c = threshold_ratio * max |e|`` over the valid pixels of the batch (0.2 in the paper).
    The mean is over valid pixels; ``valid`` defaults to finite targets.

    Args:
        pred: predicted height, any shape.
        target: reference height, same shape; NaN marks missing pixels.
        valid: optional boolean mask of pixels that enter the loss.
        threshold_ratio: ratio of the maximal absolute error that defines ``c``.

    """
    pred = pred.float()
    target = target.float()
    mask = torch.isfinite(target)
    if valid is not None:
        mask = mask & valid.bool()
    if not mask.any():
        return pred.sum() * 0.0
    err = (pred - torch.where(mask, target, torch.zeros_like(target)))[mask]
    abs_err = err.abs()
    c = (threshold_ratio * abs_err.max()).detach()
    if c <= 0:
        return abs_err.mean()
    quadratic = (err**2 + c**2) / (2 * c)
    return torch.where(abs_err <= c, abs_err, quadratic).mean()


def _domain_ce(logits: torch.Tensor, label: int) -> torch.Tensor:
    target = torch.full(
        (logits.shape[0], *logits.shape[2:]), label, dtype=torch.long, device=logits.device
    )
    return F.cross_entropy(logits.float(), target)


def discriminator_loss(logits: torch.Tensor, domain: int) -> torch.Tensor:
    """Eq. 2: per-pixel (K+1)-way cross-entropy toward domain label ``domain``.

    ``domain = 0`` for ground truth, ``k`` for predictions of dataset ``k``.
    """
    if not 0 <= domain < logits.shape[1]:
        raise ValueError(f"domain label {domain} outside 0..{logits.shape[1] - 1}")
    return _domain_ce(logits, domain)


def intra_loss(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 3: push a labelled dataset's prediction toward the ground-truth class 0."""
    return _domain_ce(logits, 0)


def inter_loss(
    logits: torch.Tensor,
    mode: InterMode,
    own_domain: int,
    labelled_domain: int = 1,
) -> torch.Tensor:
    """Inter-domain loss for an unlabelled dataset's prediction.

    Args:
        logits: discriminator logits on the unlabelled dataset's prediction.
        mode: ``m1`` (eq. 4) toward the labelled dataset's prediction class,
            ``m2`` (eq. 5, default) toward ground truth (class 0),
            ``m3`` (eq. 8) away from its own class: ``-log(1 - D[own_domain])``.
        own_domain: the unlabelled dataset's domain label k (2 for B in the paper).
        labelled_domain: domain label of the dataset that has this task's labels (M1).

    """
    if mode == "m1":
        return _domain_ce(logits, labelled_domain)
    if mode == "m2":
        return _domain_ce(logits, 0)
    if mode == "m3":
        # log(1 - p_own) = logsumexp(others) - logsumexp(all), computed stably.
        logits = logits.float()
        others = torch.cat([logits[:, :own_domain], logits[:, own_domain + 1 :]], dim=1)
        log_not_own = torch.logsumexp(others, dim=1) - torch.logsumexp(logits, dim=1)
        return -log_not_own.mean()
    raise ValueError(f"Unknown inter-domain mode '{mode}'; use one of {INTER_MODES}.")


def binary_adversarial_loss(logits: torch.Tensor, is_real: bool) -> torch.Tensor:
    """Binary cross-entropy on a 1-logit discriminator map.

    SemiSD: ground truth is real (1), predictions are fake (0); G pushes predictions to 1.
    DA (AdaptSegNet): source-domain predictions are real (1), target ones fake (0); G
    pushes target predictions to 1.
    """
    target = torch.full_like(logits, 1.0 if is_real else 0.0, dtype=torch.float32)
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def seg_to_discriminator_input(logits: torch.Tensor) -> torch.Tensor:
    """Segmentation predictions reach D as softmax probabilities (section 3.2)."""
    return torch.softmax(logits.float(), dim=1)


def one_hot_target(
    target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Ground-truth class map as a one-hot ``B x C x H x W`` float map for D.

    Ignored pixels become all-zero vectors.
    """
    target = target.long()
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    onehot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).float()
    return onehot * valid.unsqueeze(1).float()
