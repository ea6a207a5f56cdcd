"""Domain-adaptation baselines ``da_seg`` / ``da_height`` (AdaptSegNet [56], REFERENCE.md 1).

STL on the labelled (source) datasets plus output-space adaptation: a binary D tells
source predictions (real, 1) from target predictions (fake, 0) and never sees ground
truth; target predictions are pushed toward 1 with ``lambda_da``.
"""

import torch

from semimtl_geo.losses import binary_adversarial_loss
from semimtl_geo.training.backward import WeightedTerm
from semimtl_geo.training.methods.base import (
    DatasetRole,
    LossWeights,
    MethodPlan,
    register_method,
)
from semimtl_geo.training.methods.stl import SingleTaskMethod


class DomainAdaptation(SingleTaskMethod):
    """AdaptSegNet single-level adversarial adaptation of one task to unlabelled targets."""

    with_targets = True
    discriminator = "binary"
    d_sees_ground_truth = False

    def adversarial_terms(
        self,
        plan: MethodPlan,
        role: DatasetRole,
        task: str,
        logits: torch.Tensor,
        loss_cfg: LossWeights,
    ) -> list[WeightedTerm]:
        """Only target predictions are pushed toward the source (real) label."""
        if task in role.labelled:
            return []
        value = binary_adversarial_loss(logits, is_real=True)
        return [WeightedTerm(f"{task}/adv", loss_cfg.lambda_da, value, True)]

    def discriminator_terms(
        self,
        plan: MethodPlan,
        role: DatasetRole,
        task: str,
        pred_logits: torch.Tensor,
        gt_logits: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Source predictions real, target predictions fake."""
        return {"pred": binary_adversarial_loss(pred_logits, is_real=task in role.labelled)}

    def accuracies(
        self,
        plan: MethodPlan,
        role: DatasetRole,
        task: str,
        pred_logits: torch.Tensor,
        gt_logits: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """``acc_pred``: source predictions judged real, target ones judged fake."""
        real_pred = pred_logits > 0
        return {"acc_pred": (real_pred if task in role.labelled else ~real_pred).float().mean()}


@register_method
class DASeg(DomainAdaptation):
    """Segmentation adapted from the labelled to the unlabelled datasets."""

    name = "da_seg"
    label = "DA Seg"
    task = "seg"


@register_method
class DAHeight(DomainAdaptation):
    """Height adapted from the labelled to the unlabelled datasets."""

    name = "da_height"
    label = "DA Depth"
    task = "height"
