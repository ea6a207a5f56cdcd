"""One Algorithm 1 iteration per method: which parameters move, and D's labels."""

import copy

import _toy_kind as toy
import pytest
import torch
import torch.nn.functional as F

from semimtl_geo.training.config import config_from_dict
from semimtl_geo.training.engine import SemiMTLModule, build_meta, describe_datasets
from semimtl_geo.training.methods import (
    discriminator_losses,
    generator_losses,
    plan_method,
    prediction_to_d,
    target_to_d,
)
from semimtl_geo.training.registry import TrainLoaderRequest


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


def batches_for(module):
    out = {}
    for role in module.plan.datasets:
        spec = module.cfg.data.datasets[role.index]
        req = TrainLoaderRequest(role.labelled, 32, 1, 1, 0, 11 + role.index, [0.5] * 3, [0.25] * 3)
        out[role.name] = toy._train_loader(spec, req)[0]
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


def test_stl_touches_one_head_in_a_two_head_network():
    """JTL with only dataset 'a' (seg labels): the height head gets no gradient."""
    cfg_dict = toy.toy_config_dict("jtl")
    cfg_dict["data"]["datasets"] = cfg_dict["data"]["datasets"][:1]
    cfg_dict["data"]["datasets"][0]["tasks"] = ["seg"]
    cfg = config_from_dict(cfg_dict)
    assert plan_method(cfg).tasks == ("seg",)
    cfg, module = make_module("stl_seg")
    assert "height" not in module.generator.heads
    assert module.generator.tasks == ("seg",)


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
    torch.testing.assert_close(g_a["seg/intra"], lc.lambda_intra * _ce(seg_a, 0))
    torch.testing.assert_close(g_b["height/intra"], lc.lambda_intra * _ce(h_b, 0))

    # inter: eq. 4 (toward the labelled dataset's class), eq. 5 (toward GT), eq. 8
    def inter(logits, own, labelled):
        if mode == "m1":
            return _ce(logits, labelled)
        if mode == "m2":
            return _ce(logits, 0)
        p = torch.softmax(logits, 1)[:, own]
        return -torch.log(1 - p).mean()

    torch.testing.assert_close(g_b["seg/inter"], lc.lambda_inter * inter(seg_b, own=2, labelled=1))
    torch.testing.assert_close(g_a["height/inter"], lc.lambda_inter * inter(h_a, own=1, labelled=2))
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
    torch.testing.assert_close(g_a["seg/intra"], lc.lambda_intra * _bce(seg_a, 1))
    torch.testing.assert_close(g_a["height/inter"], lc.lambda_inter * _bce(h_a, 1))
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
    torch.testing.assert_close(g_t[f"{task}/adv"], lc.lambda_da * _bce(logits_t, 1))
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
