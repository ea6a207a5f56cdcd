"""Semi-supervised baseline ``semisd`` (REFERENCE.md section 1).

JTL plus one binary D per task that tells ground truth (real, 1) from predictions
(fake, 0); every prediction is pushed toward 1, weighted by ``lambda_intra`` where the
dataset is labelled for the task and ``lambda_inter`` where it is not.
"""

import torch

from semimtl_geo.losses import binary_adversarial_loss
from semimtl_geo.training.backward import WeightedTerm
from semimtl_geo.training.methods.base import (
    DatasetRole,
    LossWeights,
    Method,
    MethodPlan,
    register_method,
)


@register_method
class SemiSD(Method):
    """Binary ground-truth-vs-prediction discriminators on every task."""

    name = "semisd"
    label = "SemiSD"
    discriminator = "binary"

    def adversarial_terms(
        self,
        plan: MethodPlan,
        role: DatasetRole,
        task: str,
        logits: torch.Tensor,
        loss_cfg: LossWeights,
    ) -> list[WeightedTerm]:
        """Push the prediction toward "ground truth" (intra where labelled, else inter)."""
        labelled = task in role.labelled
        weight = loss_cfg.lambda_intra if labelled else loss_cfg.lambda_inter
        name = "intra" if labelled else "inter"
        value = binary_adversarial_loss(logits, is_real=True)
        return [WeightedTerm(f"{task}/{name}", weight, value, True)]

    def discriminator_terms(
        self,
        plan: MethodPlan,
        role: DatasetRole,
        task: str,
        pred_logits: torch.Tensor,
        gt_logits: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Predictions fake, ground truth (where labelled) real."""
        terms = {"pred": binary_adversarial_loss(pred_logits, is_real=False)}
        if gt_logits is not None:
            terms["gt"] = binary_adversarial_loss(gt_logits, is_real=True)
        return terms

    def accuracies(
        self,
        plan: MethodPlan,
        role: DatasetRole,
        task: str,
        pred_logits: torch.Tensor,
        gt_logits: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """``acc_pred``: predictions judged fake; ``acc_gt``: ground truth judged real."""
        out = {"acc_pred": (~(pred_logits > 0)).float().mean()}
        if gt_logits is not None:
            out["acc_gt"] = (gt_logits > 0).float().mean()
        return out
