"""SemiMTL, the paper's method (section 3, Algorithm 1).

Domain-aware (K+1)-way discriminators D_t (eq. 2): class 0 = ground truth, class k =
prediction of dataset k. For one dataset's mini-batch:

* tasks **with** ground truth on dataset ``k``: ``w_t L_gt`` (eq. 1) plus
  ``lambda_intra L_intra`` (eq. 3); D_t accumulates ``L_D(y_t, 0) + L_D(ŷ_t, k)``
  (eq. 2, 6);
* tasks **without** ground truth on dataset ``k``: ``lambda_inter L_inter`` (eq. 4, 5 or 8
  by ``config.mode`` M1/M2/M3); D_t accumulates ``L_D(ŷ_t, k)``.
"""

import torch

from semimtl_geo.losses import discriminator_loss, inter_loss, intra_loss
from semimtl_geo.training.backward import WeightedTerm
from semimtl_geo.training.methods.base import (
    DatasetRole,
    LossWeights,
    Method,
    MethodPlan,
    register_method,
)


@register_method
class SemiMTL(Method):
    """Intra- and inter-domain adversarial terms with domain-aware discriminators."""

    name = "semimtl"
    label = "SemiMTL"
    discriminator = "domain"
    uses_mode = True

    def adversarial_terms(
        self,
        plan: MethodPlan,
        role: DatasetRole,
        task: str,
        logits: torch.Tensor,
        loss_cfg: LossWeights,
    ) -> list[WeightedTerm]:
        """``lambda_intra L_intra`` (eq. 3) where labelled, ``lambda_inter L_inter`` else."""
        if task in role.labelled:
            return [WeightedTerm(f"{task}/intra", loss_cfg.lambda_intra, intra_loss(logits), True)]
        value = inter_loss(
            logits, plan.mode, own_domain=role.domain, labelled_domain=plan.labelled_domain[task]
        )
        return [WeightedTerm(f"{task}/inter", loss_cfg.lambda_inter, value, True)]

    def discriminator_terms(
        self,
        plan: MethodPlan,
        role: DatasetRole,
        task: str,
        pred_logits: torch.Tensor,
        gt_logits: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Predictions as domain ``k``, ground truth (where labelled) as class 0 (eq. 6)."""
        terms = {"pred": discriminator_loss(pred_logits, role.domain)}
        if gt_logits is not None:
            terms["gt"] = discriminator_loss(gt_logits, 0)
        return terms

    def accuracies(
        self,
        plan: MethodPlan,
        role: DatasetRole,
        task: str,
        pred_logits: torch.Tensor,
        gt_logits: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Domain-aware D's pixel accuracies.

        * ``acc_gt``: ground-truth pixels classified as class 0 (ground truth);
        * ``acc_pred``: this dataset's prediction pixels classified as *not* ground truth;
        * ``acc_domain``: prediction pixels whose most likely domain among 1..K is this
          dataset's own ``k`` (chance = 1/K).
        """
        out = {"acc_pred": (_first_argmax(pred_logits) != 0).float().mean()}
        domain = _first_argmax(pred_logits[:, 1:]) + 1
        out["acc_domain"] = (domain == role.domain).float().mean()
        if gt_logits is not None:
            out["acc_gt"] = (_first_argmax(gt_logits) == 0).float().mean()
        return out


def _first_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(dim=1)``: the first maximal index along the channels, as argmax.

    ``max(dim=1).indices`` is the same index (both return the first maximum) and about 10x
    faster on CPU for these few-channel, many-pixel maps: ``argmax`` over dim 1 took about
    5 % of a demo SemiMTL iteration on one thread.
    """
    return logits.max(dim=1).indices
