import math
import re

import pytest
import torch

from semimtl_geo.losses import (
    berhu_loss,
    binary_adversarial_loss,
    discriminator_loss,
    inter_loss,
    intra_loss,
    lovasz_softmax_loss,
    one_hot_target,
    seg_to_discriminator_input,
    segmentation_loss,
)


def test_berhu_hand_worked() -> None:
    pred = torch.zeros(4)
    target = torch.tensor([1.0, 0.1, 0.5, float("nan")])
    # e = -1, -0.1, -0.5 over valid pixels; c = 0.2 * 1 = 0.2
    # |e| > c -> (e^2 + c^2) / 2c: (1 + .04)/.4 = 2.6 and (.25 + .04)/.4 = .725; |e| <= c -> .1
    expected = (2.6 + 0.1 + 0.725) / 3
    assert berhu_loss(pred, target).item() == pytest.approx(expected, rel=1e-6)


def test_berhu_respects_valid_mask_and_threshold_from_valid_pixels_only() -> None:
    pred = torch.zeros(3)
    target = torch.tensor([1.0, 0.1, 100.0])
    valid = torch.tensor([True, True, False])
    # the masked 100 must not set c: c = 0.2, losses 2.6 and 0.1
    assert berhu_loss(pred, target, valid).item() == pytest.approx((2.6 + 0.1) / 2)


def test_berhu_no_valid_pixel_is_zero_with_gradient() -> None:
    pred = torch.full((3,), 2.0, requires_grad=True)
    loss = berhu_loss(pred, torch.full((3,), float("nan")))
    loss.backward()
    assert loss.item() == 0.0 and pred.grad is not None


def test_segmentation_loss_ignores_255() -> None:
    logits = torch.tensor([[[[0.0]], [[math.log(3.0)]]]])  # p(class1) = 3/4
    target = torch.tensor([[[1]]])
    assert segmentation_loss(logits, target).item() == pytest.approx(-math.log(0.75))
    all_ignored = torch.full((1, 1, 1), 255)
    assert segmentation_loss(logits, all_ignored).item() == 0.0



def test_segmentation_loss_class_weights_hand_worked() -> None:
    """Weighted mean over the valid pixels: sum_i w_{y_i} CE_i / sum_i w_{y_i}."""
    logits = torch.zeros(1, 3, 1, 3)
    logits[0, 0, 0, 0] = 2.0  # pixel 0: class 0 favoured, reference 0
    target = torch.tensor([[[0, 2, 255]]])  # pixel 1: uniform logits, reference 2; 2 ignored
    ce0, ce1 = math.log(1 + 2 * math.exp(-2.0)), math.log(3.0)
    weights = [1.0, 1.0, 4.0]
    got = segmentation_loss(logits, target, class_weights=weights).item()
    assert got == pytest.approx((1 * ce0 + 4 * ce1) / 5)
    assert segmentation_loss(logits, target).item() == pytest.approx((ce0 + ce1) / 2)
    # only the reference class's weight matters: class 1 has no pixel
    other = [1.0, 50.0, 4.0]
    assert segmentation_loss(logits, target, class_weights=other).item() == pytest.approx(got)


def _iou_loss_of_hard_prediction(pred: torch.Tensor, target: torch.Tensor, n: int) -> float:
    """Mean over the classes present in ``target``'s valid pixels of 1 - IoU."""
    valid = target != 255
    losses = []
    for c in range(n):
        ref = (target == c) & valid
        if not ref.any():
            continue
        hit = (pred == c) & valid
        losses.append(1.0 - (ref & hit).sum().item() / (ref | hit).sum().item())
    return sum(losses) / len(losses)


def test_lovasz_softmax_equals_jaccard_loss_on_hard_predictions() -> None:
    """On one-hot probabilities the Lovasz extension is exactly 1 - IoU (Berman 2018, eq. 9)."""
    torch.manual_seed(0)
    n = 4
    target = torch.randint(0, n - 1, (2, 9, 7))  # class 3 never in the reference
    target[0, :2] = 255
    pred = torch.where(torch.rand(2, 9, 7) < 0.6, target, torch.randint(0, n, (2, 9, 7)))
    pred = pred.clamp(max=n - 1)
    logits = torch.nn.functional.one_hot(pred, n).permute(0, 3, 1, 2).float() * 60.0
    expected = _iou_loss_of_hard_prediction(pred, target, n)
    assert 0.1 < expected < 0.9
    assert lovasz_softmax_loss(logits, target).item() == pytest.approx(expected, abs=1e-6)
    perfect = torch.nn.functional.one_hot(target.clamp(max=n - 1), n).permute(0, 3, 1, 2) * 60.0
    assert lovasz_softmax_loss(perfect.float(), target).item() == pytest.approx(0.0, abs=1e-6)


def test_lovasz_softmax_gradient_lowers_the_loss_and_ignores_255() -> None:
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 6, 6, requires_grad=True)
    target = torch.randint(0, 3, (1, 6, 6))
    loss = lovasz_softmax_loss(logits, target)
    loss.backward()
    stepped = (logits - 5.0 * logits.grad).detach()
    assert lovasz_softmax_loss(stepped, target).item() < loss.item()
    ignored = target.clone()
    ignored[0, 0] = 255
    changed = logits.detach().clone()
    changed[0, :, 0] = torch.tensor([[9.0], [-9.0], [0.0]]).expand(3, 6)  # only ignored pixels
    assert lovasz_softmax_loss(changed, ignored).item() == pytest.approx(
        lovasz_softmax_loss(logits.detach(), ignored).item())
    everything_ignored = torch.full_like(target, 255)
    zero = lovasz_softmax_loss(logits, everything_ignored)
    assert zero.item() == 0.0 and zero.requires_grad


# Asymmetric discriminator outputs: every class has its own probability, so a term aimed
# at the wrong class (e.g. M2 toward the dataset's own domain instead of ground truth)
# changes the value. Left half of the map: p = (0.1, 0.2, 0.7) over (GT, dataset 1,
# dataset 2); right half: p = (0.5, 0.3, 0.2). The products per class differ (0.05, 0.06,
# 0.14), so no two classes give the same pixel mean.
P_LEFT = (0.1, 0.2, 0.7)
P_RIGHT = (0.5, 0.3, 0.2)


def _three_way_logits() -> torch.Tensor:
    logits = torch.empty(2, 3, 4, 4)
    logits[..., :2] = torch.log(torch.tensor(P_LEFT)).view(1, 3, 1, 1)
    logits[..., 2:] = torch.log(torch.tensor(P_RIGHT)).view(1, 3, 1, 1)
    return logits


def _mean_nll(k: int) -> float:
    """Hand-computed pixel mean of -log p_k (half the pixels on each side)."""
    return (-math.log(P_LEFT[k]) - math.log(P_RIGHT[k])) / 2


def test_discriminator_loss_eq2_domain_labels() -> None:
    logits = _three_way_logits()
    assert discriminator_loss(logits, 0).item() == pytest.approx((2.302585 + 0.693147) / 2)
    assert discriminator_loss(logits, 1).item() == pytest.approx((1.609438 + 1.203973) / 2)
    assert discriminator_loss(logits, 2).item() == pytest.approx((0.356675 + 1.609438) / 2)
    with pytest.raises(ValueError, match=r"^domain label 3 outside 0\.\.2$"):
        discriminator_loss(logits, 3)
    with pytest.raises(ValueError, match=r"^domain label -1 outside 0\.\.2$"):
        discriminator_loss(logits, -1)


def test_intra_loss_eq3_targets_ground_truth_class() -> None:
    assert intra_loss(_three_way_logits()).item() == pytest.approx(_mean_nll(0))


def test_inter_loss_modes_eq4_eq5_eq8() -> None:
    logits = _three_way_logits()
    # dataset 2 (own domain) without labels; dataset 1 has them
    m1 = inter_loss(logits, "m1", own_domain=2, labelled_domain=1)
    m2 = inter_loss(logits, "m2", own_domain=2, labelled_domain=1)
    m3 = inter_loss(logits, "m3", own_domain=2, labelled_domain=1)
    assert m1.item() == pytest.approx(_mean_nll(1))  # eq. 4: toward dataset 1's class
    assert m2.item() == pytest.approx(_mean_nll(0))  # eq. 5: toward ground truth, not own (2)
    assert m2.item() != pytest.approx(_mean_nll(2))
    # eq. 8: -log(1 - p_own), p_own = 0.7 | 0.2
    assert m3.item() == pytest.approx((-math.log(0.3) - math.log(0.8)) / 2)
    # the labelled dataset defaults to domain 1
    assert inter_loss(logits, "m1", own_domain=2).item() == pytest.approx(_mean_nll(1))
    # dataset 1 unlabelled, dataset 2 labelled: the classes swap roles
    assert inter_loss(logits, "m1", own_domain=1, labelled_domain=2).item() == pytest.approx(
        _mean_nll(2)
    )
    assert inter_loss(logits, "m3", own_domain=1).item() == pytest.approx(
        (-math.log(0.8) - math.log(0.7)) / 2
    )
    with pytest.raises(ValueError, match=re.escape(
            "Unknown inter-domain mode 'm4'; use one of ('m1', 'm2', 'm3').")):
        inter_loss(logits, "m4", own_domain=2)  # type: ignore[arg-type]


def test_adversarial_terms_push_the_discriminator_output_the_right_way() -> None:
    """A gradient step on each generator term raises the probability of its target."""
    for loss, target in [
        (lambda z: intra_loss(z), 0),
        (lambda z: inter_loss(z, "m1", own_domain=2, labelled_domain=1), 1),
        (lambda z: inter_loss(z, "m2", own_domain=2), 0),
    ]:
        z = _three_way_logits().requires_grad_(True)
        loss(z).backward()
        stepped = z.detach() - 0.1 * z.grad
        before = torch.softmax(z.detach(), 1)[:, target].mean()
        assert torch.softmax(stepped, 1)[:, target].mean() > before
    z = _three_way_logits().requires_grad_(True)
    inter_loss(z, "m3", own_domain=2).backward()
    stepped = z.detach() - 0.1 * z.grad
    assert torch.softmax(stepped, 1)[:, 2].mean() < torch.softmax(z.detach(), 1)[:, 2].mean()


def test_inter_loss_m3_is_stable_for_confident_discriminator() -> None:
    logits = torch.tensor([-50.0, -50.0, 50.0]).view(1, 3, 1, 1)
    val = inter_loss(logits, "m3", own_domain=2)
    assert torch.isfinite(val) and val.item() == pytest.approx(100 - math.log(2), rel=1e-4)


def test_binary_adversarial_loss() -> None:
    zero = torch.zeros(1, 1, 2, 2)
    assert binary_adversarial_loss(zero, True).item() == pytest.approx(math.log(2))
    big = torch.full((1, 1, 2, 2), 3.0)
    assert binary_adversarial_loss(big, True).item() == pytest.approx(math.log(1 + math.exp(-3)))
    assert binary_adversarial_loss(big, False).item() == pytest.approx(math.log(1 + math.exp(3)))


def test_discriminator_inputs_softmax_and_one_hot() -> None:
    logits = torch.randn(2, 4, 3, 3)
    probs = seg_to_discriminator_input(logits)
    assert torch.allclose(probs.sum(1), torch.ones(2, 3, 3))
    target = torch.tensor([[[0, 3], [255, 1]]])
    onehot = one_hot_target(target, 4)
    assert onehot.shape == (1, 4, 2, 2)
    assert onehot[0, :, 0, 1].tolist() == [0, 0, 0, 1]
    assert onehot[0, :, 1, 0].sum() == 0  # ignored pixel carries no class


def test_losses_are_float32_for_bf16_inputs() -> None:
    """Under bf16 autocast the networks emit bf16; every loss is computed in float32."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4).bfloat16()
    ref = logits.float()
    cases = [
        (lambda z: discriminator_loss(z, 2), None),
        (intra_loss, None),
        (lambda z: inter_loss(z, "m1", own_domain=2, labelled_domain=1), None),
        (lambda z: inter_loss(z, "m3", own_domain=2), None),
        (lambda z: binary_adversarial_loss(z[:, :1], True), None),
        (lambda z: binary_adversarial_loss(z[:, :1], False), None),
        (lambda z: segmentation_loss(z, torch.tensor([[[0, 1, 2, 255]] * 4] * 2)), None),
        (lambda z: berhu_loss(z[:, 0], torch.ones(2, 4, 4)), None),
    ]
    for loss, _ in cases:
        low, high = loss(logits), loss(ref)
        assert low.dtype == torch.float32
        assert low.item() == pytest.approx(high.item(), rel=1e-6)
    probs = seg_to_discriminator_input(logits)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs, torch.softmax(ref, 1))
    onehot = one_hot_target(torch.tensor([[[1]]]), 3)  # fewer classes present than exist
    assert onehot.dtype == torch.float32 and onehot.flatten().tolist() == [0.0, 1.0, 0.0]


def test_berhu_threshold_boundary_and_zero_error() -> None:
    # e = 1 and 0.2 with c = 0.2: |e| == c is on the linear side -> (2.6 + 0.2) / 2
    pred = torch.zeros(2)
    assert berhu_loss(pred, torch.tensor([1.0, 0.2])).item() == pytest.approx(1.4)
    # max |e| = 2: c = 0.4 -> (4 + 0.16) / 0.8 = 5.2 and 0.2
    assert berhu_loss(pred, torch.tensor([2.0, 0.2])).item() == pytest.approx((5.2 + 0.2) / 2)
    # all errors zero: c = 0, the loss is 0 and so is its gradient (no 0 / 0 anywhere)
    same = torch.ones(3, requires_grad=True)
    loss = berhu_loss(same, torch.ones(3))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(same.grad).all()
    # threshold_ratio is honoured: c = 0.5 -> (1 + .25)/1 = 1.25 and 0.2
    assert berhu_loss(pred, torch.tensor([1.0, 0.2]), threshold_ratio=0.5).item() == (
        pytest.approx((1.25 + 0.2) / 2)
    )


def test_berhu_gradient_flows_only_through_valid_pixels() -> None:
    pred = torch.zeros(3, requires_grad=True)
    berhu_loss(pred, torch.tensor([1.0, float("nan"), 0.1])).backward()
    assert pred.grad[1] == 0 and pred.grad[0] < 0 and pred.grad[2] < 0


def test_segmentation_loss_all_ignored_keeps_gradient_path() -> None:
    logits = torch.ones(1, 2, 1, 1, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((1, 1, 1), 255))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None
    # a custom ignore index
    target = torch.tensor([[[7]]])
    assert segmentation_loss(logits, target, ignore_index=7).item() == 0.0


def test_one_hot_target_custom_ignore_and_layout() -> None:
    target = torch.tensor([[[2, 9], [0, 1]]])
    onehot = one_hot_target(target, 3, ignore_index=9)
    assert onehot.shape == (1, 3, 2, 2)
    assert onehot[0, :, 0, 0].tolist() == [0, 0, 1]
    assert onehot[0, :, 0, 1].tolist() == [0, 0, 0]
    assert onehot[0, :, 1, 0].tolist() == [1, 0, 0]
