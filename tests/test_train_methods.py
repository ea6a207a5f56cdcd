"""One Algorithm 1 iteration per method: which parameters move, and D's labels."""

import copy
import dataclasses
import math
from types import SimpleNamespace

import _toy_kind as toy
import pytest
import torch
import torch.nn.functional as F

from semimtl_geo.data.datamodule import TrainLoaderRequest
from semimtl_geo.errors import UserError
from semimtl_geo.losses import berhu_loss, one_hot_target, segmentation_loss
from semimtl_geo.models import MultiTaskNet
from semimtl_geo.training.config import config_from_dict
from semimtl_geo.training.engine import SemiMTLModule, build_meta, describe_datasets
from semimtl_geo.training.methods import (
    check_batch,
    discriminator_losses,
    generator_losses,
    height_target,
    plan_method,
    prediction_to_d,
    target_to_d,
)


@pytest.fixture(autouse=True)
def toy_kind():
    toy.register()
    yield from toy.single_thread()
    toy.unregister()


def make_module(method, mode="m2"):
    cfg = config_from_dict(toy.toy_config_dict(method, mode))
    plan = plan_method(cfg)
    meta = build_meta(cfg, plan, describe_datasets(cfg, plan))
    torch.manual_seed(0)
    return cfg, SemiMTLModule(cfg, meta)


def test_discriminator_width_and_seg_skip_come_from_the_config():
    data = toy.toy_config_dict("semimtl", "m2")
    data["model"] = {**data.get("model", {}), "discriminator_width": 16, "seg_skip": True,
                     "height_channels": 64, "seg_channels": 48}
    cfg = config_from_dict(data)
    plan = plan_method(cfg)
    module = SemiMTLModule(cfg, build_meta(cfg, plan, describe_datasets(cfg, plan)))
    for disc in module.discriminators.values():
        assert disc.width == 16 and disc.layers[0].out_channels == 16
    assert module.generator.seg_skip
    assert module.generator.heads["height"].reduce[0].out_channels == 64
    assert module.generator.heads["seg"].fuse[0].out_channels == 48
    data["model"]["seg_channels"] = 0
    with pytest.raises(UserError, match="model.seg_channels' must be positive"):
        config_from_dict(data)
    data["model"]["seg_channels"] = 48
    data["model"]["height_channels"] = -1
    with pytest.raises(UserError, match="model.height_channels' must be positive"):
        config_from_dict(data)
    data["model"]["height_channels"] = 64
    data["model"]["discriminator_width"] = 0
    with pytest.raises(UserError, match="model.discriminator_width' must be positive"):
        config_from_dict(data)


def batches_for(module):
    out = {}
    for role in module.plan.datasets:
        spec = module.cfg.data.datasets[role.index]
        req = TrainLoaderRequest(role.labelled, 32, 1, 1, 0, 11 + role.index, [0.5] * 3, [0.25] * 3)
        out[role.name] = toy.train_batches(spec, req)[0]
    return out


def snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def changed(before, module):
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p.detach())}


EXPECTED = {
    # method: (generator heads, discriminator tasks, datasets taking part)
    "stl_seg": ({"seg"}, set(), ["a"]),
    "stl_height": ({"height"}, set(), ["b"]),
    "da_seg": ({"seg"}, {"seg"}, ["a", "b"]),
    "da_height": ({"height"}, {"height"}, ["a", "b"]),
    "jtl": ({"seg", "height"}, set(), ["a", "b"]),
    "semisd": ({"seg", "height"}, {"seg", "height"}, ["a", "b"]),
    "semimtl": ({"seg", "height"}, {"seg", "height"}, ["a", "b"]),
}


@pytest.mark.parametrize("method", list(EXPECTED))
def test_one_iteration_changes_exactly_the_right_parameters(method):
    heads, discs, names = EXPECTED[method]
    cfg, module = make_module(method)
    assert set(module.generator.heads.keys()) == heads
    assert set(module.discriminators.keys()) == discs
    assert [r.name for r in module.plan.datasets] == names
    opt_g, opt_d, sched = module.build_optimizers()
    batches = batches_for(module)

    before = snapshot(module)
    seen_d_grad_flags = []
    for disc in module.discriminators.values():  # record D's state at G backward time
        disc.register_forward_pre_hook(
            lambda m, _: seen_d_grad_flags.append(any(p.requires_grad for p in m.parameters()))
        )
    terms, preds = module.generator_step(batches, opt_g)
    moved = changed(before, module)
    g_names = {f"generator.{n}" for n, _ in module.generator.named_parameters()}
    # G step: every generator parameter moves (encoder + the method's heads), no D parameter
    assert moved == g_names
    assert all(p.grad is None for p in module.discriminators.parameters())
    assert seen_d_grad_flags == [False] * len(seen_d_grad_flags)
    assert all(p.requires_grad for p in module.discriminators.parameters())  # unfrozen after

    before = snapshot(module)
    d_terms = module.discriminator_step(batches, preds, opt_d)
    moved = changed(before, module)
    d_names = {f"discriminators.{n}" for n, _ in module.discriminators.named_parameters()}
    assert moved == d_names  # D step: only the discriminators
    assert all(p.grad is None for p in module.generator.parameters())
    assert ("loss_d" in d_terms) == bool(discs)

    # the supervised terms are exactly the labelled tasks of each dataset
    sup = {k for k in terms if k.endswith("/sup")}
    expected_sup = {f"{r.name}/{t}/sup" for r in module.plan.datasets for t in r.labelled}
    assert sup == expected_sup


@pytest.mark.parametrize("method", ["stl_seg", "stl_height"])
def test_stl_step_moves_the_encoder_and_its_own_head_only(method):
    task = method.split("_")[1]
    cfg, module = make_module(method)
    assert tuple(module.generator.heads.keys()) == (task,) and module.generator.tasks == (task,)
    opt_g, _, _ = module.build_optimizers()
    before = snapshot(module)
    module.generator_step(batches_for(module), opt_g)
    moved = changed(before, module)
    encoder = {f"generator.{n}" for n, _ in module.generator.named_parameters()
               if n.startswith("encoder.")}
    head = {f"generator.heads.{task}.{n}"
            for n, _ in module.generator.heads[task].named_parameters()}
    assert encoder and head and moved == encoder | head


@pytest.mark.parametrize("task,other", [("seg", "height"), ("height", "seg")])
def test_stl_terms_reach_only_their_head_in_a_two_head_network(task, other):
    """The STL objective, on a network that has both heads, gives the other head no gradient."""
    cfg = config_from_dict(toy.toy_config_dict(f"stl_{task}"))
    plan = plan_method(cfg)
    torch.manual_seed(0)
    net = MultiTaskNet("resnet18", 3, 6, ("seg", "height"), None, 16)
    (role,) = plan.datasets
    batch = batches_for(SimpleNamespace(plan=plan, cfg=cfg))[role.name]
    terms = generator_losses(plan, role, net(batch["image"]), batch, {}, cfg.loss)
    assert set(terms) == {f"{task}/sup"}
    sum(terms.values()).backward()
    assert all(p.grad is None for p in net.heads[other].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in net.heads[task].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.encoder.parameters())


#: weighted terms are ~1e-4: compare relatively, not with the default atol of 1e-5
TIGHT = {"rtol": 1e-5, "atol": 0.0}


def _ce(logits, label):
    target = torch.full((logits.shape[0], *logits.shape[2:]), label, dtype=torch.long)
    return F.cross_entropy(logits.float(), target)


def _bce(logits, value):
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits, float(value)))


def _fixed_inputs(module):
    module.discriminators.eval()  # no spectral-norm power iteration between the calls
    torch.manual_seed(1)
    batches = batches_for(module)
    outputs = {
        r.name: {
            "seg": torch.randn(1, 6, 32, 32),
            "height": torch.rand(1, 1, 32, 32),
        }
        for r in module.plan.datasets
    }
    return batches, outputs


@pytest.mark.parametrize("mode", ["m1", "m2", "m3"])
def test_semimtl_discriminator_labels(mode):
    cfg, module = make_module("semimtl", mode)
    plan = module.plan
    assert plan.d_outputs == 3  # K + 1 with K = 2 datasets
    batches, outputs = _fixed_inputs(module)
    D = module.discriminators
    lc = cfg.loss
    a, b = plan.datasets
    g_a = generator_losses(plan, a, outputs["a"], batches["a"], D, lc)
    g_b = generator_losses(plan, b, outputs["b"], batches["b"], D, lc)
    seg_a = D["seg"](prediction_to_d("seg", outputs["a"]["seg"]))
    seg_b = D["seg"](prediction_to_d("seg", outputs["b"]["seg"]))
    h_a = D["height"](outputs["a"]["height"])
    h_b = D["height"](outputs["b"]["height"])
    # intra (eq. 3): labelled predictions toward class 0
    torch.testing.assert_close(g_a["seg/intra"], lc.lambda_intra * _ce(seg_a, 0), **TIGHT)
    torch.testing.assert_close(g_b["height/intra"], lc.lambda_intra * _ce(h_b, 0), **TIGHT)

    # inter: eq. 4 (toward the labelled dataset's class), eq. 5 (toward GT), eq. 8
    def inter(logits, own, labelled):
        if mode == "m1":
            return _ce(logits, labelled)
        if mode == "m2":
            return _ce(logits, 0)
        p = torch.softmax(logits, 1)[:, own]
        return -torch.log(1 - p).mean()

    seg_inter = lc.lambda_inter * inter(seg_b, own=2, labelled=1)
    height_inter = lc.lambda_inter * inter(h_a, own=1, labelled=2)
    torch.testing.assert_close(g_b["seg/inter"], seg_inter, **TIGHT)
    torch.testing.assert_close(g_a["height/inter"], height_inter, **TIGHT)
    assert set(g_a) == {"seg/sup", "seg/intra", "height/inter"}
    assert set(g_b) == {"height/sup", "height/intra", "seg/inter"}

    # D (eq. 6): GT -> 0, predictions of dataset k -> k
    d_a = discriminator_losses(plan, a, outputs["a"], batches["a"], D, 6, lc)
    d_b = discriminator_losses(plan, b, outputs["b"], batches["b"], D, 6, lc)
    gt_seg = D["seg"](target_to_d("seg", batches["a"]["mask"], 6, 0.0))
    gt_h = D["height"](target_to_d("height", batches["b"]["height"], 6, 0.0))
    torch.testing.assert_close(d_a["seg/gt"], _ce(gt_seg, 0))
    torch.testing.assert_close(d_a["seg/pred"], _ce(seg_a, 1))
    torch.testing.assert_close(d_a["height/pred"], _ce(h_a, 1))
    torch.testing.assert_close(d_b["seg/pred"], _ce(seg_b, 2))
    torch.testing.assert_close(d_b["height/gt"], _ce(gt_h, 0))
    torch.testing.assert_close(d_b["height/pred"], _ce(h_b, 2))
    assert set(d_a) == {"seg/gt", "seg/pred", "height/pred"}
    assert set(d_b) == {"height/gt", "height/pred", "seg/pred"}


def test_semisd_labels_are_binary_gt_vs_prediction():
    cfg, module = make_module("semisd")
    plan, D, lc = module.plan, module.discriminators, cfg.loss
    assert plan.d_outputs == 1
    batches, outputs = _fixed_inputs(module)
    a, b = plan.datasets
    g_a = generator_losses(plan, a, outputs["a"], batches["a"], D, lc)
    seg_a = D["seg"](prediction_to_d("seg", outputs["a"]["seg"]))
    h_a = D["height"](outputs["a"]["height"])
    torch.testing.assert_close(g_a["seg/intra"], lc.lambda_intra * _bce(seg_a, 1), **TIGHT)
    torch.testing.assert_close(g_a["height/inter"], lc.lambda_inter * _bce(h_a, 1), **TIGHT)
    d_a = discriminator_losses(plan, a, outputs["a"], batches["a"], D, 6, lc)
    gt_seg = D["seg"](target_to_d("seg", batches["a"]["mask"], 6, 0.0))
    torch.testing.assert_close(d_a["seg/gt"], _bce(gt_seg, 1))
    torch.testing.assert_close(d_a["seg/pred"], _bce(seg_a, 0))
    torch.testing.assert_close(d_a["height/pred"], _bce(h_a, 0))


@pytest.mark.parametrize("method", ["da_seg", "da_height"])
def test_da_labels_source_real_target_fake(method):
    cfg, module = make_module(method)
    plan, D, lc = module.plan, module.discriminators, cfg.loss
    task = method.split("_")[1]
    batches, outputs = _fixed_inputs(module)
    source = next(r for r in plan.datasets if task in r.labelled)
    target = next(r for r in plan.datasets if task in r.unlabelled)
    g_s = generator_losses(plan, source, outputs[source.name], batches[source.name], D, lc)
    g_t = generator_losses(plan, target, outputs[target.name], batches[target.name], D, lc)
    assert set(g_s) == {f"{task}/sup"}  # no adversarial term on the source
    logits_t = D[task](prediction_to_d(task, outputs[target.name][task]))
    logits_s = D[task](prediction_to_d(task, outputs[source.name][task]))
    torch.testing.assert_close(g_t[f"{task}/adv"], lc.lambda_da * _bce(logits_t, 1), **TIGHT)
    d_s = discriminator_losses(plan, source, outputs[source.name], batches[source.name], D, 6, lc)
    d_t = discriminator_losses(plan, target, outputs[target.name], batches[target.name], D, 6, lc)
    torch.testing.assert_close(d_s[f"{task}/pred"], _bce(logits_s, 1))
    torch.testing.assert_close(d_t[f"{task}/pred"], _bce(logits_t, 0))
    assert set(d_s) == {f"{task}/pred"} and set(d_t) == {f"{task}/pred"}


def test_height_ground_truth_nan_is_filled_for_the_discriminator():
    h = torch.tensor([[[float("nan"), 2.0]]])
    z = target_to_d("height", h, 6, height_fill=0.0)
    assert z.shape == (1, 1, 1, 2) and z[0, 0, 0, 0] == 0 and z[0, 0, 0, 1] == 2


def test_detached_predictions_do_not_reach_the_generator():
    cfg, module = make_module("semimtl")
    opt_g, opt_d, _ = module.build_optimizers()
    batches = batches_for(module)
    _, preds = module.generator_step(batches, opt_g)
    g_before = copy.deepcopy(module.generator.state_dict())
    module.discriminator_step(batches, preds, opt_d)
    for k, v in module.generator.state_dict().items():
        assert torch.equal(v, g_before[k]), k  # buffers (BN stats) untouched as well


# ---------------------------------------------------------------- hand-computed terms
# Stub discriminators with fixed, asymmetric outputs: an untrained D is nearly uniform,
# which hides a term aimed at the wrong class, and the lambdas (1e-3, 1e-4) would push
# any error below assert_close's absolute tolerance. The terms are therefore compared
# unweighted (all weights 1) against hand-computed values, with a relative tolerance.
P_LEFT = (0.1, 0.2, 0.7)  # p(GT), p(dataset a = domain 1), p(dataset b = domain 2)
P_RIGHT = (0.5, 0.3, 0.2)  # per-class products differ: 0.05, 0.06, 0.14
Z_LEFT, Z_RIGHT = 1.5, -0.5  # binary D logits


class FixedD(torch.nn.Module):
    """Left half of the map has P_LEFT (or Z_LEFT), right half P_RIGHT (Z_RIGHT)."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = outputs
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        b = x.shape[0]
        if self.outputs == 1:
            out = torch.empty(b, 1, 4, 4)
            out[..., :2], out[..., 2:] = Z_LEFT, Z_RIGHT
        else:
            out = torch.empty(b, 3, 4, 4)
            out[..., :2] = torch.log(torch.tensor(P_LEFT)).view(1, 3, 1, 1)
            out[..., 2:] = torch.log(torch.tensor(P_RIGHT)).view(1, 3, 1, 1)
        return out + 0.0 * x.mean()  # keeps the graph to the generator's outputs


def nll(k):
    return (-math.log(P_LEFT[k]) - math.log(P_RIGHT[k])) / 2


def not_own(k):
    return (-math.log(1 - P_LEFT[k]) - math.log(1 - P_RIGHT[k])) / 2


def bce(real):
    sp = lambda z: math.log1p(math.exp(z))  # noqa: E731  softplus
    return ((sp(-Z_LEFT) + sp(-Z_RIGHT)) if real else (sp(Z_LEFT) + sp(Z_RIGHT))) / 2


def _unit_weights(cfg):
    return dataclasses.replace(
        cfg.loss, w_seg=1.0, w_height=1.0, lambda_intra=1.0, lambda_inter=1.0, lambda_da=1.0,
        berhu_ratio=0.5, height_fill=-3.0,
    )


def _plan_inputs(method, mode="m2"):
    cfg = config_from_dict(toy.toy_config_dict(method, mode))
    plan = plan_method(cfg)
    torch.manual_seed(1)
    batches = batches_for(SimpleNamespace(plan=plan, cfg=cfg))
    outputs = {
        r.name: {"seg": torch.randn(1, 6, 32, 32), "height": torch.rand(1, 1, 32, 32)}
        for r in plan.datasets
    }
    discs = {t: FixedD(plan.d_outputs) for t in plan.tasks}
    return cfg, plan, batches, outputs, discs


# mode -> (seg inter on b: own 2, labelled 1; height inter on a: own 1, labelled 2)
INTER_EXPECTED = {
    "m1": (nll(1), nll(2)),  # eq. 4: toward the labelled dataset's prediction class
    "m2": (nll(0), nll(0)),  # eq. 5: toward ground truth (class 0), never the own domain
    "m3": (not_own(2), not_own(1)),  # eq. 8: away from the own domain
}


@pytest.mark.parametrize("mode", ["m1", "m2", "m3"])
def test_semimtl_terms_hand_computed_with_asymmetric_discriminator(mode):
    cfg, plan, batches, outputs, D = _plan_inputs("semimtl", mode)
    unit = _unit_weights(cfg)
    a, b = plan.datasets
    g_a = generator_losses(plan, a, outputs["a"], batches["a"], D, unit)
    g_b = generator_losses(plan, b, outputs["b"], batches["b"], D, unit)
    seg_inter, height_inter = INTER_EXPECTED[mode]
    assert g_a["seg/intra"].item() == pytest.approx(nll(0), rel=1e-5)  # eq. 3
    assert g_b["height/intra"].item() == pytest.approx(nll(0), rel=1e-5)
    assert g_b["seg/inter"].item() == pytest.approx(seg_inter, rel=1e-5)
    assert g_a["height/inter"].item() == pytest.approx(height_inter, rel=1e-5)
    # the configured weights multiply exactly these values (eq. 7)
    w = generator_losses(plan, b, outputs["b"], batches["b"], D, cfg.loss)
    assert w["seg/inter"].item() == pytest.approx(cfg.loss.lambda_inter * seg_inter, rel=1e-5)
    assert w["height/intra"].item() == pytest.approx(cfg.loss.lambda_intra * nll(0), rel=1e-5)
    assert w["height/sup"].item() == pytest.approx(cfg.loss.w_height * berhu_loss(
        outputs["b"]["height"][:, 0], batches["b"]["height"], threshold_ratio=0.2).item(),
        rel=1e-5)
    # supervised terms (eq. 1) with the configured BerHu threshold
    assert g_a["seg/sup"].item() == pytest.approx(
        segmentation_loss(outputs["a"]["seg"], batches["a"]["mask"]).item(), rel=1e-6)
    assert g_b["height/sup"].item() == pytest.approx(berhu_loss(
        outputs["b"]["height"][:, 0], batches["b"]["height"], threshold_ratio=0.5).item(),
        rel=1e-6)
    # what each D saw on the generator side: softmax for seg, the height map for height
    seg_in, h_in = D["seg"].inputs, D["height"].inputs
    torch.testing.assert_close(seg_in[0], torch.softmax(outputs["a"]["seg"], 1))
    torch.testing.assert_close(h_in[0], outputs["a"]["height"])
    # D (eq. 6): ground truth -> class 0, predictions of dataset k -> class k
    for d in D.values():
        d.inputs.clear()
    d_a = discriminator_losses(plan, a, outputs["a"], batches["a"], D, 6, unit)
    d_b = discriminator_losses(plan, b, outputs["b"], batches["b"], D, 6, unit)
    pred_seg_a, gt_seg_a, pred_seg_b = D["seg"].inputs
    torch.testing.assert_close(pred_seg_a, torch.softmax(outputs["a"]["seg"], 1))
    torch.testing.assert_close(gt_seg_a, one_hot_target(batches["a"]["mask"], 6))
    torch.testing.assert_close(pred_seg_b, torch.softmax(outputs["b"]["seg"], 1))
    pred_h_a, pred_h_b, gt_h_b = D["height"].inputs
    torch.testing.assert_close(pred_h_a, outputs["a"]["height"])
    torch.testing.assert_close(pred_h_b, outputs["b"]["height"])
    ref = batches["b"]["height"].unsqueeze(1)
    assert gt_h_b.shape == ref.shape and gt_h_b[0, 0, 0, 0] == -3.0  # NaN -> height_fill
    torch.testing.assert_close(gt_h_b, torch.nan_to_num(ref, nan=-3.0))
    assert d_a["seg/gt"].item() == pytest.approx(nll(0), rel=1e-5)
    assert d_a["seg/pred"].item() == pytest.approx(nll(1), rel=1e-5)
    assert d_a["height/pred"].item() == pytest.approx(nll(1), rel=1e-5)
    assert d_b["height/gt"].item() == pytest.approx(nll(0), rel=1e-5)
    assert d_b["height/pred"].item() == pytest.approx(nll(2), rel=1e-5)
    assert d_b["seg/pred"].item() == pytest.approx(nll(2), rel=1e-5)


def test_semisd_and_da_terms_hand_computed_with_asymmetric_discriminator():
    cfg, plan, batches, outputs, D = _plan_inputs("semisd")
    unit = _unit_weights(cfg)
    a, b = plan.datasets
    g_a = generator_losses(plan, a, outputs["a"], batches["a"], D, unit)
    assert g_a["seg/intra"].item() == pytest.approx(bce(real=True), rel=1e-5)
    assert g_a["height/inter"].item() == pytest.approx(bce(real=True), rel=1e-5)
    w = generator_losses(plan, a, outputs["a"], batches["a"], D, cfg.loss)
    assert w["seg/intra"].item() == pytest.approx(cfg.loss.lambda_intra * bce(True), rel=1e-5)
    assert w["height/inter"].item() == pytest.approx(cfg.loss.lambda_inter * bce(True), rel=1e-5)
    for d in D.values():
        d.inputs.clear()
    d_a = discriminator_losses(plan, a, outputs["a"], batches["a"], D, 6, unit)
    d_b = discriminator_losses(plan, b, outputs["b"], batches["b"], D, 6, unit)
    assert d_b["height/gt"].item() == pytest.approx(bce(real=True), rel=1e-5)
    torch.testing.assert_close(D["seg"].inputs[1], one_hot_target(batches["a"]["mask"], 6))
    ref = batches["b"]["height"].unsqueeze(1)
    torch.testing.assert_close(D["height"].inputs[-1], torch.nan_to_num(ref, nan=-3.0))
    assert d_a["seg/gt"].item() == pytest.approx(bce(real=True), rel=1e-5)
    assert d_a["seg/pred"].item() == pytest.approx(bce(real=False), rel=1e-5)
    assert d_a["height/pred"].item() == pytest.approx(bce(real=False), rel=1e-5)

    cfg, plan, batches, outputs, D = _plan_inputs("da_seg")
    unit = _unit_weights(cfg)
    src, tgt = plan.datasets
    g_t = generator_losses(plan, tgt, outputs["b"], batches["b"], D, unit)
    assert g_t["seg/adv"].item() == pytest.approx(bce(real=True), rel=1e-5)
    w = generator_losses(plan, tgt, outputs["b"], batches["b"], D, cfg.loss)
    assert w["seg/adv"].item() == pytest.approx(cfg.loss.lambda_da * bce(True), rel=1e-5)
    d_s = discriminator_losses(plan, src, outputs["a"], batches["a"], D, 6, unit)
    d_t = discriminator_losses(plan, tgt, outputs["b"], batches["b"], D, 6, unit)
    assert d_s["seg/pred"].item() == pytest.approx(bce(real=True), rel=1e-5)
    assert d_t["seg/pred"].item() == pytest.approx(bce(real=False), rel=1e-5)


# ---------------------------------------------------------------- plans and D inputs

PLANS = {
    # method: (label, tasks, discriminator, d_outputs, [(name, domain, labelled, unlabelled)])
    "stl_seg": ("STL Seg", ("seg",), "none", 1, [("a", 1, ("seg",), ())]),
    "stl_height": ("STL Depth", ("height",), "none", 1, [("b", 1, ("height",), ())]),
    "da_seg": ("DA Seg", ("seg",), "binary", 1,
               [("a", 1, ("seg",), ()), ("b", 2, (), ("seg",))]),
    "da_height": ("DA Depth", ("height",), "binary", 1,
                  [("a", 1, (), ("height",)), ("b", 2, ("height",), ())]),
    "jtl": ("JTL", ("seg", "height"), "none", 1,
            [("a", 1, ("seg",), ("height",)), ("b", 2, ("height",), ("seg",))]),
    "semisd": ("SemiSD", ("seg", "height"), "binary", 1,
               [("a", 1, ("seg",), ("height",)), ("b", 2, ("height",), ("seg",))]),
    "semimtl": ("SemiMTL (M3)", ("seg", "height"), "domain", 3,
                [("a", 1, ("seg",), ("height",)), ("b", 2, ("height",), ("seg",))]),
}


@pytest.mark.parametrize("method", list(PLANS))
def test_method_plans(method):
    label, tasks, disc, d_outputs, roles = PLANS[method]
    plan = plan_method(config_from_dict(toy.toy_config_dict(method, "m3")))
    assert (plan.method, plan.mode, plan.label) == (method, "m3", label)
    assert (plan.tasks, plan.discriminator, plan.d_outputs) == (tasks, disc, d_outputs)
    assert plan.num_domains == len(roles)
    got = [(r.name, r.domain, r.labelled, r.unlabelled) for r in plan.datasets]
    assert got == roles
    assert [r.index for r in plan.datasets] == [{"a": 0, "b": 1}[r[0]] for r in roles]
    for r in plan.datasets:
        assert r.tasks == tuple(t for t in ("seg", "height") if t in r.labelled + r.unlabelled)
    expected_labelled = {t: next(d for _, d, lab, _ in roles if t in lab) for t in tasks}
    assert dict(plan.labelled_domain) == expected_labelled


def test_plan_errors_say_what_to_change():
    import re

    d = toy.toy_config_dict("jtl")
    for ds in d["data"]["datasets"]:
        ds["tasks"] = []
    with pytest.raises(UserError, match=re.escape(
            "No dataset in 'data.datasets' declares labelled tasks; "
            "set 'tasks: [seg]' or '[height]'.")):
        config_from_dict(d)
    d = toy.toy_config_dict("stl_height")
    d["data"]["datasets"][1]["tasks"] = ["seg"]
    with pytest.raises(UserError, match=re.escape(
            "Method 'stl_height' needs a dataset with 'height' labels; none of "
            "['a', 'b'] lists 'height' in its tasks.")):
        config_from_dict(d)
    d = toy.toy_config_dict("da_seg")
    d["data"]["datasets"][1]["tasks"] = ["seg", "height"]
    with pytest.raises(UserError, match=re.escape(
            "Method 'da_seg' adapts to a dataset without 'seg' labels, but every dataset has "
            "them; use an STL or JTL method instead.")):
        config_from_dict(d)
    role = plan_method(config_from_dict(toy.toy_config_dict("jtl"))).datasets[1]
    with pytest.raises(UserError, match=re.escape(
            "Dataset 'b' declares 'height' labels but its batches have no 'height'; remove "
            "'height' from its tasks or fix the data.")):
        check_batch(role, {"image": torch.zeros(1), "mask": torch.zeros(1)})
    check_batch(role, {"height": torch.zeros(1)})


def test_discriminator_inputs_for_each_task():
    logits = torch.randn(2, 6, 4, 4).bfloat16()
    seg = prediction_to_d("seg", logits)
    assert seg.dtype == torch.float32
    torch.testing.assert_close(seg, torch.softmax(logits.float(), 1))
    h = torch.rand(2, 1, 4, 4).bfloat16()
    assert prediction_to_d("height", h).dtype == torch.float32
    torch.testing.assert_close(prediction_to_d("height", h), h.float())
    mask = torch.tensor([[[0, 5], [255, 2]]])
    onehot = target_to_d("seg", mask, 6, 0.0)
    assert onehot.shape == (1, 6, 2, 2) and onehot[0, :, 1, 0].sum() == 0
    assert onehot[0, 5, 0, 1] == 1 and onehot[0, 2, 1, 1] == 1
    inf = float("inf")
    h4 = torch.tensor([[[[float("nan"), inf], [-inf, 1.5]]]])
    filled = target_to_d("height", h4, 6, height_fill=-2.0)
    assert filled.shape == (1, 1, 2, 2) and filled.flatten().tolist() == [-2.0, -2.0, -2.0, 1.5]
    assert height_target({"height": h4}).shape == (1, 2, 2)
    assert height_target({"height": h4[:, 0]}).shape == (1, 2, 2)


@pytest.mark.parametrize("method", ["jtl", "stl_seg"])
def test_methods_without_discriminator_have_no_adversarial_terms(method):
    cfg, plan, batches, outputs, _ = _plan_inputs(method)
    for role in plan.datasets:
        g = generator_losses(plan, role, outputs[role.name], batches[role.name], {}, cfg.loss)
        assert set(g) == {f"{t}/sup" for t in role.labelled}
        d = discriminator_losses(plan, role, outputs[role.name], batches[role.name], {}, 6,
                                 cfg.loss)
        assert d == {}


# ---------------------------------------------------------------- D accuracies, labels


class ZonedD(torch.nn.Module):
    """Column 0 of the 4 x 4 map is one zone, columns 1-3 another (25 % / 75 %).

    Domain-aware (3 outputs): column 0 has P_LEFT (arg-max class 2, domain 2), the rest
    P_RIGHT (arg-max class 0 = ground truth; among the domains, domain 1). Binary: logit
    0.5 in column 0 (judged real), exactly 0 in column 1 (p = 0.5: not judged real), -0.5
    in columns 2-3 (fake).
    """

    def __init__(self, outputs):
        super().__init__()
        self.outputs = outputs

    def forward(self, x):
        b = x.shape[0]
        if self.outputs == 1:
            out = torch.empty(b, 1, 4, 4)
            out[..., 0], out[..., 1], out[..., 2:] = 0.5, 0.0, -0.5
        else:
            out = torch.empty(b, 3, 4, 4)
            out[..., :1] = torch.log(torch.tensor(P_LEFT)).view(1, 3, 1, 1)
            out[..., 1:] = torch.log(torch.tensor(P_RIGHT)).view(1, 3, 1, 1)
        return out


def _accuracies(method, role_index):
    cfg, plan, batches, outputs, _ = _plan_inputs(method)
    discs = {t: ZonedD(plan.d_outputs) for t in plan.tasks}
    role = plan.datasets[role_index]
    acc = {}
    discriminator_losses(plan, role, outputs[role.name], batches[role.name], discs, 6,
                         _unit_weights(cfg), accuracies=acc)
    return {k: round(v.item(), 6) for k, v in acc.items()}


def test_discriminator_accuracies_hand_computed():
    """Which pixels each method's D gets right (the is-adversarial-learning-alive log)."""
    # SemiMTL (K = 2): prediction pixels judged "not ground truth" (arg-max != 0): column
    # 0 only; own domain among 1..K: columns 1-3 are domain 1 (dataset a), column 0 is
    # domain 2 (dataset b); ground truth judged class 0: columns 1-3.
    assert _accuracies("semimtl", 0) == {
        "seg/acc_pred": 0.25, "seg/acc_domain": 0.75, "seg/acc_gt": 0.75,
        "height/acc_pred": 0.25, "height/acc_domain": 0.75,  # no height labels on a
    }
    assert _accuracies("semimtl", 1) == {
        "seg/acc_pred": 0.25, "seg/acc_domain": 0.25,
        "height/acc_pred": 0.25, "height/acc_domain": 0.25, "height/acc_gt": 0.75,
    }
    # SemiSD: predictions judged fake (logit <= 0): columns 1-3; ground truth judged real
    # (logit > 0): column 0
    assert _accuracies("semisd", 0) == {
        "seg/acc_pred": 0.75, "seg/acc_gt": 0.25, "height/acc_pred": 0.75,
    }
    # DA: the labelled source's predictions should be judged real, the target's fake;
    # D never sees ground truth
    assert _accuracies("da_seg", 0) == {"seg/acc_pred": 0.25}
    assert _accuracies("da_seg", 1) == {"seg/acc_pred": 0.75}
    assert _accuracies("da_height", 0) == {"height/acc_pred": 0.75}  # a: height target
    assert _accuracies("da_height", 1) == {"height/acc_pred": 0.25}
    # no discriminator, no accuracies
    assert _accuracies("jtl", 0) == {} and _accuracies("stl_seg", 0) == {}


def test_first_argmax_is_argmax_with_ties_to_the_first_channel():
    """The D accuracies' fast arg-max picks the first of tied channels, as argmax does."""
    from semimtl_geo.training.methods.semimtl import _first_argmax

    torch.manual_seed(0)
    logits = torch.randint(0, 3, (4, 3, 17, 19)).float()  # many ties
    assert torch.equal(_first_argmax(logits), logits.argmax(dim=1))
    tied = torch.zeros(1, 3, 2, 2)
    tied[:, 1:] = 1.0  # channels 1 and 2 tie for the maximum
    assert _first_argmax(tied).eq(1).all() and _first_argmax(tied[:, 1:]).eq(0).all()


def test_method_labels_and_modes_come_from_the_registry():
    from semimtl_geo.training.methods import (
        METHOD_LABELS,
        get_method,
        method_label,
        method_uses_mode,
    )

    assert dict(METHOD_LABELS) == {
        "stl_seg": "STL Seg", "stl_height": "STL Depth", "da_seg": "DA Seg",
        "da_height": "DA Depth", "jtl": "JTL", "semisd": "SemiSD", "semimtl": "SemiMTL",
    }
    assert list(METHOD_LABELS)[:2] == ["stl_seg", "stl_height"] and len(METHOD_LABELS) == 7
    with pytest.raises(KeyError):
        METHOD_LABELS["fancy"]
    assert method_label("semimtl", "m1") == "SemiMTL (M1)"
    assert method_label("semimtl") == "SemiMTL (M2)"  # the paper's main mode by default
    assert method_label("jtl", "m3") == "JTL" and method_label("fancy") is None
    assert method_uses_mode("semimtl") is True
    assert method_uses_mode("semisd") is False and method_uses_mode("fancy") is False
    plan = plan_method(config_from_dict(toy.toy_config_dict("semisd")))
    assert type(plan.impl) is type(get_method("semisd")) and plan.impl.name == "semisd"


def test_adversarial_terms_are_flagged_and_supervised_ones_are_not():
    """The engine backpropagates flagged (adversarial) terms apart, in fp32 (backward.py)."""
    from semimtl_geo.training.methods import generator_terms

    for method in ("semimtl", "semisd", "da_seg"):
        cfg, plan, batches, outputs, D = _plan_inputs(method)
        flags = {}
        for role in plan.datasets:
            for t in generator_terms(plan, role, outputs[role.name], batches[role.name], D,
                                     cfg.loss):
                flags[t.name] = t.adversarial
        assert all(flags[n] is (not n.endswith("/sup")) for n in flags), (method, flags)
        assert sum(flags.values()) >= 1


def test_discriminator_runs_in_float32_outside_autocast():
    from semimtl_geo.training.methods import discriminate

    torch.manual_seed(0)
    disc = torch.nn.Conv2d(3, 1, 3)
    x = torch.randn(1, 3, 8, 8)
    expected = disc(x)
    for outer in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=outer):
            out = discriminate(disc, x.bfloat16() if outer else x)
        assert out.dtype == torch.float32
        if not outer:
            torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_generator_tasks_are_the_labelled_ones_only():
    from semimtl_geo.training.methods import get_method

    specs = [SimpleNamespace(name="a", tasks=["seg"]), SimpleNamespace(name="b", tasks=["seg"])]
    tasks, roles = get_method("jtl").select(specs)
    assert tasks == ("seg",)  # no dataset labels height: no height head
    assert [(r.labelled, r.unlabelled) for r in roles] == [(("seg",), ()), (("seg",), ())]


class _HeightOnlyAdversarial:
    """Registered in a test: a D on height only, hooks that record the plan they get."""

    seen: list = []

    @classmethod
    def make(cls):
        from semimtl_geo.losses import binary_adversarial_loss
        from semimtl_geo.training.backward import WeightedTerm
        from semimtl_geo.training.methods import Method

        class HeightOnly(Method):
            name = "toy_height_adv"
            label = "Toy Height-Adv"
            discriminator = "binary"

            def discriminator_tasks(self, tasks):
                return tuple(t for t in tasks if t == "height")

            def adversarial_terms(self, plan, role, task, logits, loss_cfg):
                value = binary_adversarial_loss(logits, is_real=True)
                return [WeightedTerm(f"{task}/adv", 1.0, value, True)]

            def discriminator_terms(self, plan, role, task, pred_logits, gt_logits):
                cls.seen.append(("terms", plan))
                return {"pred": binary_adversarial_loss(pred_logits, is_real=False)}

            def accuracies(self, plan, role, task, pred_logits, gt_logits):
                cls.seen.append(("acc", plan))
                return {"acc_pred": (pred_logits <= 0).float().mean()}

        return HeightOnly


def test_hooks_see_the_plan_and_tasks_without_a_d_are_skipped_not_the_rest():
    from semimtl_geo.training.methods import register_method, unregister_method

    method = _HeightOnlyAdversarial.make()
    _HeightOnlyAdversarial.seen.clear()
    register_method(method)
    try:
        cfg = config_from_dict(toy.toy_config_dict("toy_height_adv"))
        plan = plan_method(cfg)
        assert plan.d_tasks == ("height",)
        torch.manual_seed(1)
        batches = batches_for(SimpleNamespace(plan=plan, cfg=cfg))
        role = plan.datasets[0]  # 'a': seg first (no D), then height (a D)
        outputs = {"seg": torch.randn(1, 6, 32, 32), "height": torch.rand(1, 1, 32, 32)}
        gen = generator_losses(plan, role, outputs, batches["a"], {"height": ZonedD(1)},
                               cfg.loss)
        assert set(gen) == {"seg/sup", "height/adv"}
        acc = {}
        terms = discriminator_losses(plan, role, outputs, batches["a"],
                                     {"height": ZonedD(1)}, 6, cfg.loss, accuracies=acc)
        assert set(terms) == {"height/pred"} and set(acc) == {"height/acc_pred"}
        assert acc["height/acc_pred"].item() == 0.75
        assert [k for k, _ in _HeightOnlyAdversarial.seen] == ["terms", "acc"]
        assert all(p is plan for _, p in _HeightOnlyAdversarial.seen)
    finally:
        unregister_method("toy_height_adv")


def test_registry_needs_name_and_label_and_unregisters_cleanly():
    from semimtl_geo.training.methods import (
        Method,
        method_names,
        register_method,
        unregister_method,
    )

    class NameOnly(Method):
        name = "name_only"

    class LabelOnly(Method):
        label = "Label only"

    for cls in (NameOnly, LabelOnly):
        with pytest.raises(TypeError, match="needs a 'name' and a 'label'"):
            register_method(cls)
    assert "name_only" not in method_names()
    method = _HeightOnlyAdversarial.make()
    assert register_method(method) is method
    register_method(method)  # the same class again is fine
    assert method_names()[-1] == "toy_height_adv"
    unregister_method("toy_height_adv")
    assert "toy_height_adv" not in method_names()
    unregister_method("toy_height_adv")  # unknown names are ignored
    assert "jtl" in method_names()
    from semimtl_geo.training.methods import get_method

    with pytest.raises(UserError, match=r"^Config key 'method' must be one of .*got \['jtl'\]\.$"):
        get_method(["jtl"])  # a YAML list, not a name
