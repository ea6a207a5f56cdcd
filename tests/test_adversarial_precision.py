"""The adversarial terms (eqs. 3-8) must reach the generator under mixed precision.

They weigh 1e-3/1e-4 of the supervised loss. Summed with it and backpropagated once under
bf16 autocast, their gradient is rounded away in the activations' 8-bit mantissa; the
engine backpropagates them separately (semimtl_geo/training/backward.py). These tests
compare the adversarial component of one G update (full objective minus the objective
with every lambda = 0, same seed and batch) under bf16/fp16 autocast with fp32.
"""

import copy
import math

import _toy_kind as toy
import pytest
import torch

import semimtl_geo.training.engine as engine_mod
from semimtl_geo.data.datamodule import TrainLoaderRequest
from semimtl_geo.training.backward import WeightedTerm, backward_terms, group_terms
from semimtl_geo.training.config import config_from_dict
from semimtl_geo.training.engine import SemiMTLModule, build_meta, describe_datasets
from semimtl_geo.training.methods import plan_method

ADVERSARIAL = [
    ("da_seg", "m2"),
    ("da_height", "m2"),
    ("semisd", "m2"),
    ("semimtl", "m1"),
    ("semimtl", "m2"),
    ("semimtl", "m3"),
]


@pytest.fixture(autouse=True)
def toy_kind():
    toy.register()
    yield from toy.single_thread()
    toy.unregister()


class GradRecorder:
    """Stands in for the G optimiser: keeps the gradients G would be stepped with."""

    def __init__(self, params):
        self.params = list(params)
        self.grads = None

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def step(self):
        self.grads = torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().double()
                for p in self.params
            ]
        )


def make_module(method, mode, crop=48):
    data = toy.toy_config_dict(method, mode)
    data["data"]["crop_size"] = crop
    data["data"]["batch_size"] = 2
    cfg = config_from_dict(data)
    plan = plan_method(cfg)
    meta = build_meta(cfg, plan, describe_datasets(cfg, plan))
    torch.manual_seed(0)
    return SemiMTLModule(cfg, meta)


def batches_for(module):
    out = {}
    for role in module.plan.datasets:
        spec = module.cfg.data.datasets[role.index]
        req = TrainLoaderRequest(
            role.labelled, module.cfg.data.crop_size, 2, 1, 0, 11 + role.index, [0.5] * 3,
            [0.25] * 3,
        )
        out[role.name] = toy.train_batches(spec, req)[0]
    return out


def encoder_update(module, batches, dtype, adversarial=True):
    """Encoder gradient of one G step under autocast ``dtype`` (None = fp32)."""
    m = copy.deepcopy(module)
    if not adversarial:
        m.cfg.loss.lambda_intra = m.cfg.loss.lambda_inter = m.cfg.loss.lambda_da = 0.0
    rec = GradRecorder(m.generator.encoder.parameters())
    # the optimiser only sees the encoder here; heads' gradients are irrelevant
    torch.manual_seed(1)  # the same dropout masks in every run
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        m.generator_step(batches, rec)
    return rec.grads


def adversarial_component(module, batches, dtype):
    return encoder_update(module, batches, dtype, True) - encoder_update(
        module, batches, dtype, False
    )


def cosine(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


@pytest.mark.parametrize(("method", "mode"), ADVERSARIAL)
def test_adversarial_update_survives_bf16_mixed(method, mode):
    """bf16-mixed: cosine >= 0.8 and norm ratio in [0.5, 2] against fp32."""
    module = make_module(method, mode)
    batches = batches_for(module)
    ref = adversarial_component(module, batches, None)
    assert ref.norm() > 0
    mixed = adversarial_component(module, batches, torch.bfloat16)
    assert cosine(mixed, ref) >= 0.8
    assert 0.5 <= float(mixed.norm() / ref.norm()) <= 2.0


class SmallNet(torch.nn.Module):
    """A few convolutions: float16 convolutions are very slow on CPU, ResNets too slow."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
        )
        self.seg = torch.nn.Conv2d(16, 4, 1)
        self.disc = torch.nn.Conv2d(4, 3, 3, padding=1)


def small_update(net, image, target, dtype, lam, split):
    net.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        logits = net.seg(net.body(image))
        sup = torch.nn.functional.cross_entropy(logits.float(), target)
        d = net.disc(torch.softmax(logits.float(), 1))
        adv = torch.nn.functional.cross_entropy(d.float(), torch.zeros_like(target))
    terms = [WeightedTerm("sup", 1.0, sup, False, "a"), WeightedTerm("adv", lam, adv, True, "a")]
    body = list(net.body.parameters())
    backward_terms(terms, list(net.parameters()), split=split)
    return torch.cat([p.grad.flatten().double() for p in body])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["16-mixed", "bf16-mixed"])
def test_separate_passes_keep_a_1e4_term_under_half_precision_autocast(dtype):
    torch.manual_seed(0)
    net = SmallNet()
    image = torch.randn(2, 3, 24, 24)
    target = torch.randint(0, 4, (2, 24, 24))
    ref = small_update(net, image, target, None, 1e-4, False) - small_update(
        net, image, target, None, 0.0, False)
    fixed = small_update(net, image, target, dtype, 1e-4, True) - small_update(
        net, image, target, dtype, 0.0, True)
    summed = small_update(net, image, target, dtype, 1e-4, False) - small_update(
        net, image, target, dtype, 0.0, False)
    assert cosine(fixed, ref) >= 0.8 and 0.5 <= float(fixed.norm() / ref.norm()) <= 2.0
    assert not (cosine(summed, ref) >= 0.8 and 0.5 <= float(summed.norm() / ref.norm()) <= 2.0)


def test_one_summed_backward_loses_the_adversarial_update_under_bf16(monkeypatch):
    """The bug this guards against: one backward of the summed objective under bf16."""
    module = make_module("semimtl", "m2")
    batches = batches_for(module)
    ref = adversarial_component(module, batches, None)
    original = engine_mod.backward_terms

    def summed(*args, **kwargs):
        kwargs["split"] = False
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_mod, "backward_terms", summed)
    broken = adversarial_component(module, batches, torch.bfloat16)
    ok = cosine(broken, ref) >= 0.8 and 0.5 <= float(broken.norm() / ref.norm()) <= 2.0
    assert not ok


def test_fp32_keeps_one_backward_pass_bit_identical():
    module = make_module("semimtl", "m2")
    batches = batches_for(module)
    calls = []
    a = copy.deepcopy(module)
    rec = GradRecorder(a.generator.encoder.parameters())

    def counting(loss, **kw):
        calls.append(kw)
        loss.backward(**kw)

    torch.manual_seed(1)
    a.generator_step(batches, rec, counting)
    assert len(calls) == 1  # fp32: the plain single pass
    b = copy.deepcopy(module)
    rec_b = GradRecorder(b.generator.encoder.parameters())
    # the same objective summed by hand and backpropagated once
    torch.manual_seed(1)
    terms, _ = b.generator_step(batches, rec_b)
    assert torch.equal(rec.grads, rec_b.grads)
    assert math.isfinite(float(terms["loss_g"]))


def test_groups_separate_graphs_kinds_and_weights():
    v = torch.tensor(1.0, requires_grad=True)
    terms = [
        WeightedTerm("a/seg/sup", 1.0, v, False, "a"),
        WeightedTerm("a/seg/intra", 1e-3, v, True, "a"),
        WeightedTerm("a/height/inter", 1e-4, v, True, "a"),
        WeightedTerm("b/height/sup", 0.01, v, False, "b"),
        WeightedTerm("b/height/intra", 1e-3, v, True, "b"),
        WeightedTerm("b/seg/inter", 1e-6, v, True, "b"),
        WeightedTerm("b/zero", 0.0, v, True, "b"),
    ]
    names = [[t.name for t in g] for g in group_terms(terms)]
    assert names == [
        ["a/seg/sup"],
        ["a/seg/intra", "a/height/inter"],  # ratio 10 <= 16: one pass
        ["b/height/sup"],
        ["b/height/intra"],
        ["b/seg/inter"],  # ratio 1000: its own pass
    ]


def test_backward_terms_accumulates_scaled_gradients_in_fp32():
    w = torch.nn.Parameter(torch.tensor([2.0, -1.0]))
    w.grad = torch.tensor([0.5, 0.5])  # existing gradient is accumulated into
    terms = [
        WeightedTerm("sup", 1.0, (w**2).sum(), False, "a"),
        WeightedTerm("adv", 1e-4, (3 * w).sum(), True, "a"),
    ]
    norms = backward_terms(terms, [w], split=True, per_term=True, measure=[w])
    expected = torch.tensor([0.5 + 4.0 + 3e-4, 0.5 - 2.0 + 3e-4])
    assert torch.allclose(w.grad, expected, rtol=0, atol=1e-7)
    assert norms["sup"] == pytest.approx(math.hypot(4.0, 2.0))
    assert norms["adv"] == pytest.approx(math.hypot(3e-4, 3e-4))


def test_a_dead_adversarial_term_warns_once():
    module = make_module("semimtl", "m2")
    leaf = torch.tensor(0.7, requires_grad=True)  # does not depend on the generator
    terms = [WeightedTerm("a/seg/intra", 1e-3, leaf * 2, True, "a")]
    encoder = list(module.generator.encoder.parameters())
    norms = backward_terms(terms, [leaf], per_term=True, split=True, measure=encoder)
    assert norms["a/seg/intra"] == 0.0
    with pytest.warns(RuntimeWarning, match="a/seg/intra"):
        module._check_adversarial_gradients(terms, norms)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module._check_adversarial_gradients(terms, norms)  # only once per term
