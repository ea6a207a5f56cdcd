import math

import pytest
import torch

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
    pred = torch.zeros(3, requires_grad=True)
    loss = berhu_loss(pred, torch.full((3,), float("nan")))
    loss.backward()
    assert loss.item() == 0.0 and pred.grad is not None


def test_segmentation_loss_ignores_255() -> None:
    logits = torch.tensor([[[[0.0]], [[math.log(3.0)]]]])  # p(class1) = 3/4
    target = torch.tensor([[[1]]])
    assert segmentation_loss(logits, target).item() == pytest.approx(-math.log(0.75))
    all_ignored = torch.full((1, 1, 1), 255)
    assert segmentation_loss(logits, all_ignored).item() == 0.0


def _three_way_logits() -> torch.Tensor:
    # per pixel softmax = [0.25, 0.5, 0.25] over classes (GT, dataset 1, dataset 2)
    logits = torch.tensor([0.0, math.log(2.0), 0.0]).view(1, 3, 1, 1)
    return logits.expand(2, 3, 4, 4).contiguous()


def test_discriminator_loss_eq2_domain_labels() -> None:
    logits = _three_way_logits()
    assert discriminator_loss(logits, 0).item() == pytest.approx(-math.log(0.25))
    assert discriminator_loss(logits, 1).item() == pytest.approx(-math.log(0.5))
    assert discriminator_loss(logits, 2).item() == pytest.approx(-math.log(0.25))
    with pytest.raises(ValueError):
        discriminator_loss(logits, 3)


def test_intra_loss_eq3_targets_ground_truth_class() -> None:
    assert intra_loss(_three_way_logits()).item() == pytest.approx(-math.log(0.25))


def test_inter_loss_modes_eq4_eq5_eq8() -> None:
    logits = _three_way_logits()
    m1 = inter_loss(logits, "m1", own_domain=2, labelled_domain=1)
    m2 = inter_loss(logits, "m2", own_domain=2)
    m3 = inter_loss(logits, "m3", own_domain=2)
    assert m1.item() == pytest.approx(-math.log(0.5))  # toward labelled prediction class 1
    assert m2.item() == pytest.approx(-math.log(0.25))  # toward ground truth class 0
    assert m3.item() == pytest.approx(-math.log(1 - 0.25))  # away from own class 2
    with pytest.raises(ValueError, match="m4"):
        inter_loss(logits, "m4", own_domain=2)  # type: ignore[arg-type]


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
