"""Per-method generator and discriminator objectives (paper section 3, Algorithm 1).

One engine trains every method; what differs is captured by a :class:`MethodPlan`
(which datasets take part, which tasks the generator has, which discriminators exist)
and by the two loss functions below, which follow Algorithm 1 for one dataset's
mini-batch:

* tasks **with** ground truth on dataset ``k``: ``w_t L_gt`` (eq. 1) plus
  ``lambda_intra L_intra`` (eq. 3); the discriminator D_t accumulates
  ``L_D(y_t, 0) + L_D(ŷ_t, k)`` (eq. 2, 6);
* tasks **without** ground truth on dataset ``k``: ``lambda_inter L_inter`` (eq. 4, 5 or 8
  by mode); D_t accumulates ``L_D(ŷ_t, k)``.

Baselines (REFERENCE.md section 1):

* ``stl_seg`` / ``stl_height``: one task, only the datasets labelled for it, no D.
* ``da_seg`` / ``da_height``: STL on the labelled (source) datasets plus AdaptSegNet
  output-space adaptation: a binary D tells source predictions (1) from target
  predictions (0); target predictions are pushed toward 1 with ``lambda_da``.
* ``jtl``: every dataset contributes the supervised losses of its labelled tasks; no D.
* ``semisd``: JTL plus one binary D per task, ground truth (1) vs predictions (0); all
  predictions are pushed toward 1 (``lambda_intra`` where labelled, ``lambda_inter``
  where not).
* ``semimtl``: the domain-aware (K+1)-way discriminators (class 0 = ground truth,
  class k = prediction of dataset k).

Discriminator inputs: segmentation predictions as softmax probabilities and ground truth
as one-hot maps (ignored pixels all-zero); height as the 1-channel map, where no-data
(NaN) ground-truth pixels are filled with ``loss.height_fill`` (0 = ground level).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from semimtl_geo.errors import UserError
from semimtl_geo.losses import (
    berhu_loss,
    binary_adversarial_loss,
    discriminator_loss,
    inter_loss,
    intra_loss,
    one_hot_target,
    seg_to_discriminator_input,
    segmentation_loss,
)
from semimtl_geo.models.multitask import TASKS
from semimtl_geo.training.backward import WeightedTerm

if TYPE_CHECKING:
    from semimtl_geo.training.config import LossConfig, TrainConfig

DiscriminatorKind = Literal["none", "binary", "domain"]
LABEL_KEY = {"seg": "mask", "height": "height"}
METHOD_LABELS = {
    "stl_seg": "STL Seg",
    "stl_height": "STL Depth",
    "da_seg": "DA Seg",
    "da_height": "DA Depth",
    "jtl": "JTL",
    "semisd": "SemiSD",
    "semimtl": "SemiMTL",
}


@dataclass(frozen=True)
class DatasetRole:
    """How one dataset takes part in a method.

    Attributes:
        name: dataset name from the config.
        index: position in ``config.data.datasets``.
        domain: discriminator class ``k`` of this dataset's predictions (1-based).
        labelled: tasks supervised on this dataset.
        unlabelled: generator tasks predicted here without labels (adversarial only).

    """

    name: str
    index: int
    domain: int
    labelled: tuple[str, ...]
    unlabelled: tuple[str, ...]

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task predicted on this dataset during training."""
        return tuple(t for t in TASKS if t in self.labelled or t in self.unlabelled)


@dataclass(frozen=True)
class MethodPlan:
    """What a method trains: generator tasks, datasets and their roles, discriminators."""

    method: str
    mode: str
    tasks: tuple[str, ...]
    datasets: tuple[DatasetRole, ...]
    discriminator: DiscriminatorKind
    labelled_domain: Mapping[str, int]

    @property
    def num_domains(self) -> int:
        """K, the number of datasets taking part."""
        return len(self.datasets)

    @property
    def d_outputs(self) -> int:
        """Logits per pixel of every D_t: K + 1 (domain-aware) or 1 (binary)."""
        return self.num_domains + 1 if self.discriminator == "domain" else 1

    @property
    def label(self) -> str:
        """Row name as in the paper's tables, e.g. ``SemiMTL (M2)``."""
        name = METHOD_LABELS[self.method]
        return f"{name} ({self.mode.upper()})" if self.method == "semimtl" else name


def plan_method(cfg: "TrainConfig") -> MethodPlan:
    """Derive the :class:`MethodPlan` of ``cfg.method`` from the datasets' labelled tasks.

    Raises:
        UserError: the datasets cannot support the method (e.g. ``stl_height`` with no
            height-labelled dataset, ``da_seg`` with no unlabelled target dataset).

    """
    method = cfg.method
    specs = cfg.data.datasets
    labelled_any = [t for t in TASKS if any(t in d.tasks for d in specs)]
    if not labelled_any:
        raise UserError(
            "No dataset in 'data.datasets' declares labelled tasks; "
            "set 'tasks: [seg]' or '[height]'."
        )
    if method in ("stl_seg", "stl_height", "da_seg", "da_height"):
        task = method.split("_", 1)[1]
        sources = [i for i, d in enumerate(specs) if task in d.tasks]
        if not sources:
            raise UserError(
                f"Method '{method}' needs a dataset with '{task}' labels; none of "
                f"{[d.name for d in specs]} lists '{task}' in its tasks."
            )
        if method.startswith("stl"):
            chosen = sources
        else:
            chosen = list(range(len(specs)))
            if len(sources) == len(specs):
                raise UserError(
                    f"Method '{method}' adapts to a dataset without '{task}' labels, but every "
                    "dataset has them; use an STL or JTL method instead."
                )
        roles = tuple(
            DatasetRole(
                name=specs[i].name,
                index=i,
                domain=k + 1,
                labelled=(task,) if task in specs[i].tasks else (),
                unlabelled=() if task in specs[i].tasks else (task,),
            )
            for k, i in enumerate(chosen)
        )
        disc: DiscriminatorKind = "binary" if method.startswith("da") else "none"
        tasks: tuple[str, ...] = (task,)
    else:
        tasks = tuple(labelled_any)
        roles = tuple(
            DatasetRole(
                name=d.name,
                index=i,
                domain=i + 1,
                labelled=tuple(t for t in tasks if t in d.tasks),
                unlabelled=tuple(t for t in tasks if t not in d.tasks),
            )
            for i, d in enumerate(specs)
        )
        disc = {"jtl": "none", "semisd": "binary", "semimtl": "domain"}[method]
    labelled_domain = {t: next(r.domain for r in roles if t in r.labelled) for t in tasks}
    return MethodPlan(method, cfg.mode, tasks, roles, disc, labelled_domain)


# ------------------------------------------------------------------- D inputs


def prediction_to_d(task: str, pred: torch.Tensor) -> torch.Tensor:
    """Return a prediction as D sees it: softmax probabilities (seg) or the height map."""
    return seg_to_discriminator_input(pred) if task == "seg" else pred.float()


def discriminate(disc: nn.Module, d_input: torch.Tensor) -> torch.Tensor:
    """Run a discriminator in fp32, outside any autocast region.

    The adversarial path is the small one (eqs. 3-8 weigh 1e-3/1e-4): computing D and its
    gradient w.r.t. the prediction in fp32 keeps bf16/fp16 rounding out of the signal
    the generator receives, for the cost of the (small) discriminator alone.
    """
    with torch.autocast(d_input.device.type, enabled=False):
        return disc(d_input.float())


def target_to_d(
    task: str, target: torch.Tensor, num_classes: int, height_fill: float
) -> torch.Tensor:
    """Ground truth as D sees it: one-hot (seg) or the 1-channel height with NaN filled."""
    if task == "seg":
        return one_hot_target(target, num_classes)
    height = target.float()
    if height.ndim == 3:
        height = height.unsqueeze(1)
    return torch.nan_to_num(height, nan=height_fill, posinf=height_fill, neginf=height_fill)


def height_target(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Return the batch's height labels as ``B x H x W``."""
    h = batch["height"]
    return h[:, 0] if h.ndim == 4 else h


# ------------------------------------------------------------------- objectives


def generator_terms(
    plan: MethodPlan,
    role: DatasetRole,
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    discriminators: Mapping[str, nn.Module],
    loss_cfg: "LossConfig",
) -> list[WeightedTerm]:
    """Return the unweighted generator terms of one mini-batch (``L_G^t`` of Algorithm 1).

    Each :class:`~semimtl_geo.training.backward.WeightedTerm` carries its weight
    (``w_t`` of eq. 1 or a ``lambda`` of eq. 7) separately, so that the engine can
    backpropagate the small adversarial terms without losing them to mixed precision.
    ``sum(t.weight * t.value)`` is this dataset's contribution to eq. 9. Discriminators
    must be frozen by the caller (they only pass gradients back).
    """
    terms: list[WeightedTerm] = []
    for task in role.labelled:
        if task == "seg":
            value = segmentation_loss(outputs["seg"], batch["mask"])
            terms.append(WeightedTerm(f"{task}/sup", loss_cfg.w_seg, value))
        else:
            value = berhu_loss(
                outputs["height"][:, 0], height_target(batch), threshold_ratio=loss_cfg.berhu_ratio
            )
            terms.append(WeightedTerm(f"{task}/sup", loss_cfg.w_height, value))
    if plan.discriminator == "none":
        return terms
    for task in role.tasks:
        labelled = task in role.labelled
        logits = discriminate(discriminators[task], prediction_to_d(task, outputs[task]))
        if plan.discriminator == "domain":
            if labelled:
                terms.append(
                    WeightedTerm(f"{task}/intra", loss_cfg.lambda_intra, intra_loss(logits), True)
                )
            else:
                value = inter_loss(
                    logits,
                    plan.mode,
                    own_domain=role.domain,
                    labelled_domain=plan.labelled_domain[task],
                )
                terms.append(WeightedTerm(f"{task}/inter", loss_cfg.lambda_inter, value, True))
        elif plan.method == "semisd":
            weight = loss_cfg.lambda_intra if labelled else loss_cfg.lambda_inter
            name = "intra" if labelled else "inter"
            value = binary_adversarial_loss(logits, is_real=True)
            terms.append(WeightedTerm(f"{task}/{name}", weight, value, True))
        elif not labelled:  # DA: only target predictions are pushed toward the source
            value = binary_adversarial_loss(logits, is_real=True)
            terms.append(WeightedTerm(f"{task}/adv", loss_cfg.lambda_da, value, True))
    return terms


def generator_losses(
    plan: MethodPlan,
    role: DatasetRole,
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    discriminators: Mapping[str, nn.Module],
    loss_cfg: "LossConfig",
) -> dict[str, torch.Tensor]:
    """Compute the generator terms of one mini-batch, already weighted, by name.

    The sum of the values is this dataset's contribution to eq. 9 (see
    :func:`generator_terms` for the unweighted terms the engine backpropagates).
    """
    return {
        t.name: t.weighted
        for t in generator_terms(plan, role, outputs, batch, discriminators, loss_cfg)
    }


def discriminator_losses(
    plan: MethodPlan,
    role: DatasetRole,
    predictions: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    discriminators: Mapping[str, nn.Module],
    num_classes: int,
    loss_cfg: "LossConfig",
    accuracies: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Discriminator terms ``L_D^{t,k}`` of one dataset's mini-batch (eq. 6).

    ``predictions`` are the detached generator outputs of this iteration (the generator
    is frozen during the D step). When ``accuracies`` is given it receives, per task, the
    discriminator's pixel accuracies on this batch (:func:`discriminator_accuracies`).
    """
    terms: dict[str, torch.Tensor] = {}
    if plan.discriminator == "none":
        return terms
    for task in role.tasks:
        disc = discriminators[task]
        labelled = task in role.labelled
        pred_logits = discriminate(disc, prediction_to_d(task, predictions[task].detach()))
        gt_logits = None
        if labelled and not plan.method.startswith("da"):  # DA's D never sees ground truth
            gt = target_to_d(task, batch[LABEL_KEY[task]], num_classes, loss_cfg.height_fill)
            gt_logits = discriminate(disc, gt)
        if plan.discriminator == "domain":
            terms[f"{task}/pred"] = discriminator_loss(pred_logits, role.domain)
            if gt_logits is not None:
                terms[f"{task}/gt"] = discriminator_loss(gt_logits, 0)
        elif plan.method == "semisd":
            terms[f"{task}/pred"] = binary_adversarial_loss(pred_logits, is_real=False)
            if gt_logits is not None:
                terms[f"{task}/gt"] = binary_adversarial_loss(gt_logits, is_real=True)
        else:  # DA: source predictions real, target predictions fake
            terms[f"{task}/pred"] = binary_adversarial_loss(pred_logits, is_real=labelled)
        if accuracies is not None:
            for key, value in discriminator_accuracies(
                plan, role, task, pred_logits.detach(),
                None if gt_logits is None else gt_logits.detach(),
            ).items():
                accuracies[f"{task}/{key}"] = value
    return terms


def discriminator_accuracies(
    plan: MethodPlan,
    role: DatasetRole,
    task: str,
    pred_logits: torch.Tensor,
    gt_logits: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """Return D_t's pixel accuracies on one dataset's batch (is adversarial learning alive?).

    Domain-aware D (SemiMTL, eq. 2):

    * ``acc_gt``: ground-truth pixels classified as class 0 (ground truth);
    * ``acc_pred``: this dataset's prediction pixels classified as *not* ground truth;
    * ``acc_domain``: prediction pixels whose most likely domain among 1..K is this
      dataset's own ``k`` (domain k vs the others; chance = 1/K).

    Binary D: ``acc_gt`` (ground truth judged real, SemiSD) and ``acc_pred`` (predictions
    judged fake for SemiSD; for DA, source predictions judged real and target ones fake).
    Values are fractions in [0, 1].
    """
    out: dict[str, torch.Tensor] = {}
    if plan.discriminator == "domain":
        pred_class = pred_logits.argmax(dim=1)
        out["acc_pred"] = (pred_class != 0).float().mean()
        domain = pred_logits[:, 1:].argmax(dim=1) + 1
        out["acc_domain"] = (domain == role.domain).float().mean()
        if gt_logits is not None:
            out["acc_gt"] = (gt_logits.argmax(dim=1) == 0).float().mean()
        return out
    real_pred = pred_logits > 0
    if plan.method == "semisd":
        out["acc_pred"] = (~real_pred).float().mean()
        if gt_logits is not None:
            out["acc_gt"] = (gt_logits > 0).float().mean()
    else:
        labelled = task in role.labelled
        out["acc_pred"] = (real_pred if labelled else ~real_pred).float().mean()
    return out


def check_batch(role: DatasetRole, batch: Mapping[str, torch.Tensor]) -> None:
    """Fail clearly when a dataset's loader lacks the labels its config declares."""
    for task in role.labelled:
        if LABEL_KEY[task] not in batch:
            raise UserError(
                f"Dataset '{role.name}' declares '{task}' labels but its batches have no "
                f"'{LABEL_KEY[task]}'; remove '{task}' from its tasks or fix the data."
            )
