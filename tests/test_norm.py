"""model.norm: the generator's normalisation at test time is the one it trained with.

Algorithm 1 forwards each dataset's mini-batch on its own, so BatchNorm normalises every
dataset with its own statistics in training, while eval mode uses running averages that
blend the datasets (README, "The two commands"). ``model.norm=domain`` keeps running
statistics per dataset; ``model.norm=group`` has none.
"""

import _toy_kind as toy
import pytest
import torch
from torch import nn

from semimtl_geo.checkpoint import load_model_checkpoint, save_model_checkpoint
from semimtl_geo.errors import UserError
from semimtl_geo.models import MultiTaskNet
from semimtl_geo.models.norm import NORMS, DomainBatchNorm2d, convert_norm, group_count
from semimtl_geo.training import config as config_module
from semimtl_geo.training.config import config_from_dict
from semimtl_geo.training.engine import SemiMTLModule, build_meta, describe_datasets, train
from semimtl_geo.training.methods import plan_method


@pytest.fixture(autouse=True)
def toy_kind():
    toy.register()
    yield from toy.single_thread()
    toy.unregister()


def _two_domain_config(norm: str, **trainer) -> dict:
    d = toy.toy_config_dict("jtl", **{"max_steps": 3, **trainer})
    d["model"]["norm"] = norm
    d["data"]["batch_size"] = 2
    d["data"]["datasets"][1]["options"]["shift"] = 0.9  # a strong appearance shift
    return d


def _train_module(norm: str):
    """A two-domain JTL module after three Algorithm 1 generator steps."""
    cfg = config_from_dict(_two_domain_config(norm))
    plan = plan_method(cfg)
    torch.manual_seed(0)
    module = SemiMTLModule(cfg, build_meta(cfg, plan, describe_datasets(cfg, plan)))
    opt_g, _, sched = module.build_optimizers()
    names = [r.name for r in plan.datasets]
    batches = [dict(zip(names, step)) for step in zip(*module.train_dataloader().loaders.values())]
    return module, opt_g, sched, batches


def _training_normalisation(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """What the network computes for ``image`` in training (its own batch), dropout off."""
    model.train()
    for mod in model.modules():
        if isinstance(mod, nn.Dropout2d | nn.Dropout):
            mod.eval()
    with torch.no_grad():
        out = model(image)["seg"]
    model.eval()
    return out


def _relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean() / b.abs().mean())


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_eval_mode_uses_each_domains_training_normalisation_only_with_group_norm(norm):
    """A two-domain run: eval-mode output vs the output the same weights gave in training."""
    cfg = config_from_dict(_two_domain_config(norm))
    plan = plan_method(cfg)
    torch.manual_seed(0)
    module = SemiMTLModule(cfg, build_meta(cfg, plan, describe_datasets(cfg, plan)))
    opt_g, _, sched = module.build_optimizers()
    batches = list(zip(*(loader for loader in module.train_dataloader().loaders.values())))
    for step in batches:  # Algorithm 1: one forward per dataset
        module.generator_step(dict(zip([r.name for r in plan.datasets], step)), opt_g)
        sched.step()
    net = module.generator
    assert net.norm == norm
    gaps = {}
    for name, batch in zip([r.name for r in plan.datasets], batches[-1]):
        intended = _training_normalisation(net, batch["image"])
        with torch.no_grad():
            gaps[name] = _relative_gap(net.eval()(batch["image"])["seg"], intended)
    print(norm, gaps)
    if norm == "group":
        assert max(gaps.values()) < 1e-5, gaps
    else:  # the mismatch model.norm=group removes: running averages fit neither domain
        assert max(gaps.values()) > 0.05, gaps


def test_group_norm_output_does_not_depend_on_the_rest_of_the_batch():
    torch.manual_seed(0)
    net = MultiTaskNet("resnet18", 3, 6, ("seg", "height"), None, 32, norm="group").train()
    for mod in net.modules():
        if isinstance(mod, nn.Dropout2d):
            mod.eval()
    a, b = torch.randn(2, 3, 64, 64), 3 + 0.5 * torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        alone = net(a)
        mixed = net(torch.cat([a, b]))
    for task in ("seg", "height"):
        torch.testing.assert_close(mixed[task][:2], alone[task], rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert not any("running_" in k for k in net.state_dict())


def test_group_norm_checkpoint_roundtrip_and_resume_are_exact(tmp_path):
    """The trained GroupNorm generator is what model.pt rebuilds; resuming is bit-identical."""
    cfg = config_from_dict(_two_domain_config("group", steps_per_epoch=2, max_steps=4))
    full = train(cfg, tmp_path / "full")
    loaded = load_model_checkpoint(tmp_path / "full")
    assert loaded.model.norm == "group"
    assert loaded.model.config()["norm"] == "group"
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = full.module.generator.eval()(x)
        got = loaded.model(x)
    for task in expected:
        assert torch.equal(expected[task], got[task])

    from lightning.pytorch.callbacks import Callback

    class StopAfterFirstEpoch(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    train(cfg, tmp_path / "split", callbacks=[StopAfterFirstEpoch()])
    resumed = train(cfg, tmp_path / "split", resume=True).module.state_dict()
    for key, value in full.module.state_dict().items():
        assert torch.equal(value, resumed[key]), key


def test_checkpoints_without_a_norm_entry_are_batch_norm(tmp_path):
    """Checkpoints written before model.norm existed load as the BatchNorm network."""
    net = MultiTaskNet("resnet18", 3, 6, ("seg",), None, 32).eval()
    path = save_model_checkpoint(tmp_path / "m.pt", net, toy_meta())
    from semimtl_geo.checkpoint_file import read_checkpoint_file, write_checkpoint_file

    payload = read_checkpoint_file(path)
    for entry in payload.values():
        del entry["model"]["norm"]
    write_checkpoint_file(payload, path)
    assert load_model_checkpoint(path).model.norm == "batch"


def toy_meta():
    from semimtl_geo.checkpoint import ModelMeta

    return ModelMeta()


def test_group_count_and_conversion_errors():
    assert [group_count(c) for c in (64, 80, 160, 7, 1)] == [32, 20, 32, 7, 1]
    assert config_module.NORMS == NORMS  # config checks the list without importing models
    with pytest.raises(UserError, match="Unknown normalisation 'layer'"):
        MultiTaskNet("resnet18", norm="layer")

    class ActBN(nn.BatchNorm2d):
        """Stands for timm's BatchNormAct2d (a BatchNorm with an activation)."""

    with pytest.raises(UserError, match="cannot replace the ActBN layers"):
        convert_norm(nn.Sequential(nn.Conv2d(3, 8, 3), ActBN(8)), "group")
    bn = nn.BatchNorm2d(8)
    nn.init.uniform_(bn.weight)
    seq = convert_norm(nn.Sequential(bn), "group")
    assert isinstance(seq[0], nn.GroupNorm) and torch.equal(seq[0].weight, bn.weight)


@pytest.mark.parametrize("norm", ["batch", "domain"])
def test_each_datasets_running_statistics_come_from_its_own_batches_only(norm):
    """Replay every BatchNorm input of training: per-dataset statistics only with 'domain'.

    A plain BatchNorm that saw only dataset k's training inputs of a layer is the
    reference for dataset k's statistics. With model.norm=domain, the engine selects each
    dataset's statistics before its forward, and they equal the reference exactly; with
    the paper's BatchNorm the one set of running statistics blends the two datasets.
    """
    module, opt_g, sched, batches = _train_module(norm)
    net = module.generator
    layer_name, layer = next(
        (n, m) for n, m in net.named_modules()
        if isinstance(m, nn.BatchNorm2d | DomainBatchNorm2d) and n.startswith("heads.")
    )
    seen: list[tuple[str, torch.Tensor]] = []
    current: dict[str, str] = {}
    images: dict[int, str] = {}
    hooks = [
        net.register_forward_pre_hook(  # which dataset this forward is (by its tensor)
            lambda mod, args: current.__setitem__("name", images[args[0].data_ptr()])
        ),
        layer.register_forward_pre_hook(
            lambda mod, args: seen.append((current["name"], args[0].detach().clone()))
        ),
    ]
    for step in batches:
        images.update({b["image"].data_ptr(): name for name, b in step.items()})
        module.generator_step(step, opt_g)
        sched.step()
    for hook in hooks:
        hook.remove()
    assert {name for name, _ in seen} == {"a", "b"}, layer_name
    for index, name in enumerate(["a", "b"]):
        reference = nn.BatchNorm2d(layer.num_features)
        reference.train()
        for who, x in seen:
            if who == name:
                reference(x)
        if norm == "domain":
            assert net.domains == ("a", "b")
            torch.testing.assert_close(layer.running_mean[index], reference.running_mean)
            torch.testing.assert_close(layer.running_var[index], reference.running_var)
        else:
            gap = (layer.running_mean - reference.running_mean).abs().max()
            assert gap > 1e-3, (name, float(gap))  # the blend the fix removes


def test_domain_statistics_are_chosen_by_dataset_name_everywhere(tmp_path):
    """Checkpoint, load_model_checkpoint(domain=...), evaluate: each dataset its own."""
    from semimtl_geo.training.evaluate import evaluate_model

    cfg = config_from_dict(_two_domain_config("domain", steps_per_epoch=2, max_steps=2))
    train(cfg, tmp_path / "run")
    loaded = load_model_checkpoint(tmp_path / "run")
    assert loaded.model.config()["domains"] == ["a", "b"]
    assert loaded.model.domain == "a"  # the first dataset by default
    layer = next(m for m in loaded.model.modules() if isinstance(m, DomainBatchNorm2d))
    assert not torch.equal(layer.running_mean[0], layer.running_mean[1])
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        as_a = loaded.model(x)["seg"]
        as_b = load_model_checkpoint(tmp_path / "run", domain="b").model(x)["seg"]
    assert not torch.allclose(as_a, as_b)
    with pytest.raises(UserError, match="statistics for the datasets a, b, not 'c'"):
        load_model_checkpoint(tmp_path / "run", domain="c")

    used = []

    def predict(model, image, tasks):
        used.append(model.model.domain)
        return {"class": image[0].astype("uint8") * 0, "height": image[0].astype("float32")}

    datasets = [*cfg.data.datasets,
        type(cfg.data.datasets[0])(**{**cfg.data.datasets[0].__dict__, "name": "other"})]
    evaluate_model(loaded, datasets, predict, progress=False, max_samples=1)
    assert used == ["a", "b", "a"]  # an unknown dataset: the first one's statistics
    assert loaded.model.domain == "a"


def test_batch_norm_checkpoints_refuse_a_domain(tmp_path):
    net = MultiTaskNet("resnet18", 3, 6, ("seg",), None, 32).eval()
    path = save_model_checkpoint(tmp_path / "m.pt", net, toy_meta())
    with pytest.raises(UserError, match="keeps no normalisation statistics per dataset"):
        load_model_checkpoint(path, domain="potsdam")
