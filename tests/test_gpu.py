"""CUDA paths of train and predict: bf16 autocast and channels-last, checked against fp32.

Every test here is marked ``gpu`` and skipped without CUDA (tests/conftest.py). On a GPU
the mixed-precision paths are compared with float32 on what the method depends on: the
adversarial terms (eq. 3-8) and the predicted classes and heights, not only the loss.
"""

import csv
import math

import _toy_kind as toy
import numpy as np
import pytest
import torch
from _predict_helpers import textured

from semimtl_geo.checkpoint import LoadedModel, ModelMeta
from semimtl_geo.classes import ISPRS_CLASSES
from semimtl_geo.inference import WindowPredictor, make_grid, predict_array
from semimtl_geo.models import MultiTaskNet
from semimtl_geo.training.config import config_from_dict
from semimtl_geo.training.engine import (
    SemiMTLModule,
    build_meta,
    describe_datasets,
    resolve_precision,
    train,
)
from semimtl_geo.training.methods import generator_losses, plan_method

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def toy_kind():
    toy.register()
    yield
    toy.unregister()


def _module(method="semimtl", **trainer):
    cfg = config_from_dict(toy.toy_config_dict(method, **trainer))
    plan = plan_method(cfg)
    torch.manual_seed(0)
    return cfg, SemiMTLModule(cfg, build_meta(cfg, plan, describe_datasets(cfg, plan)))


def _batches(module, device):
    out = {}
    for role, loaders in zip(module.plan.datasets, module.train_dataloader().loaders.values()):
        out[role.name] = {k: v.to(device) for k, v in loaders[0].items()}
    return out


def test_train_defaults_to_bf16_on_cuda_and_runs_channels_last(tmp_path):
    cfg = config_from_dict(toy.toy_config_dict("semimtl", max_steps=4, channels_last=True))
    assert resolve_precision(cfg) == "bf16-mixed"
    result = train(cfg, tmp_path / "run")
    module = result.module
    assert next(module.generator.parameters()).is_cuda
    convs = [p for p in module.generator.parameters() if p.ndim == 4 and p.shape[-1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert all(p.dtype == torch.float32 for p in module.parameters())  # fp32 master weights
    assert all(torch.isfinite(p).all() for p in module.parameters())
    rows = list(csv.DictReader(open(next((tmp_path / "run").glob("logs/version_*/metrics.csv")))))
    logged = [float(r[k]) for r in rows for k in r if k.startswith("train/") and r[k]]
    assert logged and all(math.isfinite(v) for v in logged)
    assert any(r.get("train/a/seg/intra") for r in rows)  # adversarial terms were logged
    assert (tmp_path / "run" / "model.pt").is_file()


def test_precise_bn_runs_on_the_training_device(tmp_path):
    """trainer.precise_bn_batches on a CUDA run: statistics re-estimated there, into model.pt."""
    from semimtl_geo.checkpoint import load_model_checkpoint

    data = toy.toy_config_dict("jtl", max_steps=2, steps_per_epoch=2)
    data["model"]["norm"] = "domain"
    data["trainer"]["precise_bn_batches"] = 2
    result = train(config_from_dict(data), tmp_path / "run")
    generator = result.module.generator
    assert next(generator.parameters()).is_cuda  # back where training left it
    saved = load_model_checkpoint(tmp_path / "run" / "model.pt").model.state_dict()
    for key, value in generator.state_dict().items():
        if "running_" in key:
            assert torch.isfinite(value).all() and torch.equal(value.cpu(), saved[key]), key


def test_bf16_generator_terms_match_fp32():
    """The adversarial terms under bf16 autocast stay within 2 % of float32 (eq. 3-8)."""
    cfg, module = _module()
    module = module.cuda().eval()
    batches = _batches(module, "cuda")
    lossless = {}
    for dtype in (None, torch.bfloat16):
        terms = {}
        for role in module.plan.datasets:
            batch = batches[role.name]
            with torch.no_grad(), torch.autocast("cuda", dtype=dtype or torch.float32,
                                                 enabled=dtype is not None):
                outputs = module.generator(batch["image"])
                parts = generator_losses(module.plan, role, outputs, batch,
                                         module.discriminators, cfg.loss)
            terms.update({f"{role.name}/{k}": v for k, v in parts.items()})
        lossless[dtype] = terms
    fp32, bf16 = lossless[None], lossless[torch.bfloat16]
    assert fp32.keys() == bf16.keys()
    assert {"a/seg/intra", "b/seg/inter", "a/height/inter", "b/height/intra"} <= set(fp32)
    for key in fp32:
        assert bf16[key].dtype == torch.float32, key  # losses are computed in float32
        assert bf16[key].item() == pytest.approx(fp32[key].item(), rel=2e-2), key


def test_one_bf16_channels_last_iteration_updates_generator_and_discriminators():
    cfg, module = _module(channels_last=True)
    module = module.cuda().to(memory_format=torch.channels_last)
    opt_g, opt_d, _ = module.build_optimizers()
    batches = _batches(module, "cuda")
    g_before = [p.detach().clone() for p in module.generator.parameters()]
    d_before = [p.detach().clone() for p in module.discriminators.parameters()]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        terms, preds = module.generator_step(batches, opt_g)
        d_terms = module.discriminator_step(batches, preds, opt_d)
    assert all(torch.isfinite(v).all() for v in terms.values())
    assert all(torch.isfinite(v).all() for v in d_terms.values())
    assert all(not torch.equal(a, p) for a, p in zip(g_before, module.generator.parameters()))
    assert all(not torch.equal(a, p) for a, p in zip(d_before, module.discriminators.parameters()))


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    torch.manual_seed(0)
    model = MultiTaskNet("resnet18", 3, 6, ("seg", "height"), None, 8).eval()
    meta = ModelMeta(classes=ISPRS_CLASSES, bands=["R", "G", "B"], mean=[0.5] * 3,
                     std=[0.25] * 3, patch_size=64, overlap=0.5, height_scale=30.0)
    return LoadedModel(model, meta, {})


def test_predict_cuda_bf16_channels_last_matches_cpu_fp32(tiny):
    image = textured(150, 170)
    valid = np.ones((150, 170), bool)
    valid[40:60, 50:90] = False  # nodata: the fill values and masks go to the GPU too
    runner = WindowPredictor(tiny, device="cuda")
    assert runner.cuda
    convs = [p for p in runner.model.parameters() if p.ndim == 4 and p.shape[-1] > 1]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    gpu = predict_array(tiny, image, valid, patch_size=64, overlap=0.5, predictor=runner,
                        return_probs=True)
    cpu = predict_array(tiny, image, valid, patch_size=64, overlap=0.5, device="cpu",
                        return_probs=True)
    assert (gpu["class"][~valid] == 255).all() and np.isnan(gpu["height"][~valid]).all()
    gpu["height"][~valid] = cpu["height"][~valid] = 0.0
    gpu["probs"][:, ~valid] = cpu["probs"][:, ~valid] = 0.0
    assert gpu["class"].dtype == np.uint8 and gpu["height"].dtype == np.float32
    assert np.isfinite(gpu["height"]).all()
    agree = (gpu["class"] == cpu["class"]).mean()
    assert agree > 0.98, f"only {agree:.3f} of pixels keep their class under bf16"
    scale = float(np.abs(cpu["height"]).max())
    assert np.abs(gpu["height"] - cpu["height"]).max() < 0.03 * max(scale, 1.0)
    np.testing.assert_allclose(gpu["probs"], cpu["probs"], atol=0.03)


def test_predict_cuda_pad_and_resize_modes(tiny):
    """Small inputs (pad) and resampled windows (resize) also run in bf16/channels-last."""
    runner = WindowPredictor(tiny, device="cuda")
    for shape, scale, mode in (((20, 50), 1.0, "pad"), ((120, 150), 2.0, "resize")):
        image = textured(*shape)
        assert make_grid(*shape, 64, 0.5, scale).mode == mode
        gpu = predict_array(tiny, image, patch_size=64, scale=scale, predictor=runner)
        cpu = predict_array(tiny, image, patch_size=64, scale=scale, device="cpu")
        assert (gpu["class"] == cpu["class"]).mean() > 0.98, mode
        assert np.abs(gpu["height"] - cpu["height"]).max() < 0.03 * max(
            float(np.abs(cpu["height"]).max()), 1.0), mode
