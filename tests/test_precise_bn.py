"""Precise BatchNorm (trainer.precise_bn_batches): population statistics of the final weights."""

import _toy_kind as toy
import pytest
import torch
from torch import nn

from semimtl_geo.checkpoint import load_model_checkpoint
from semimtl_geo.checkpoint_file import read_checkpoint_file
from semimtl_geo.errors import UserError
from semimtl_geo.models.norm import DomainBatchNorm2d, select_domain
from semimtl_geo.training.config import config_from_dict
from semimtl_geo.training.engine import train
from semimtl_geo.training.precise_bn import recalibrate_bn


@pytest.fixture(autouse=True)
def toy_kind():
    toy.register()
    yield from toy.single_thread()
    toy.unregister()


def _batches(seed: int, shift: float, count: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [shift + (1 + i) * torch.randn(2, 4, 5, 5, generator=g) for i in range(count)]


def _pooled(batches: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat(batches)
    return x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)


def test_statistics_are_those_of_the_pooled_batches_and_weights_stay():
    """Mean and variance of every input pixel of every batch, not the average batch variance.

    The batches have different means and spreads on purpose: averaging their variances
    (or a moving average, as training keeps) gives other figures.
    """
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).eval()
    weights = {k: v.clone() for k, v in net.named_parameters()}
    batches = _batches(1, 0.0) + _batches(2, 3.0)
    assert recalibrate_bn(net, {None: iter(batches)}) == 6
    mean, var = _pooled(batches)
    torch.testing.assert_close(net[0].running_mean, mean)
    torch.testing.assert_close(net[0].running_var, var)
    naive = torch.stack([b.var((0, 2, 3), unbiased=False) for b in batches]).mean(0)
    assert (net[0].running_var - naive).abs().max() > 0.5  # the spread of the batch means
    # the second layer sees the first one's training-mode output (each batch normalised
    # by its own statistics), as in training
    inputs = [net[1](nn.functional.batch_norm(b, None, None, net[0].weight, net[0].bias, True))
              for b in batches]
    mean2, var2 = _pooled([x.detach() for x in inputs])
    torch.testing.assert_close(net[2].running_mean, mean2)
    torch.testing.assert_close(net[2].running_var, var2)
    assert not net.training  # mode restored
    for k, v in net.named_parameters():
        assert torch.equal(v, weights[k]), k


def test_domain_statistics_come_from_each_domains_batches_only():
    layer = DomainBatchNorm2d(4, domains=3)
    net = nn.Sequential(layer).train()
    untouched_mean, untouched_var = layer.running_mean[2].clone(), layer.running_var[2].clone()
    batches = {"a": _batches(1, -2.0), "b": _batches(2, 5.0)}
    recalibrate_bn(net, {k: iter(v) for k, v in batches.items()},
                   select=lambda name: select_domain(net, "ab".index(name)))
    for index, name in enumerate("ab"):
        mean, var = _pooled(batches[name])
        torch.testing.assert_close(layer.running_mean[index], mean)
        torch.testing.assert_close(layer.running_var[index], var)
    assert torch.equal(layer.running_mean[2], untouched_mean)  # no batches: left alone
    assert torch.equal(layer.running_var[2], untouched_var)
    assert net.training


def test_a_network_without_batch_norm_is_left_alone():
    net = nn.Sequential(nn.Conv2d(4, 4, 1), nn.GroupNorm(2, 4))
    assert recalibrate_bn(net, {None: iter(_batches(0, 0.0))}) == 0


def _config(norm: str, batches: int, **trainer):
    d = toy.toy_config_dict("jtl", **{"max_steps": 2, "steps_per_epoch": 2, **trainer})
    d["model"]["norm"] = norm
    d["data"]["batch_size"] = 2
    d["data"]["datasets"][1]["options"]["shift"] = 0.9
    d["trainer"]["precise_bn_batches"] = batches
    return config_from_dict(d)


@pytest.mark.parametrize("norm", ["domain", "batch"])
def test_training_writes_recalibrated_statistics_to_model_pt_only(tmp_path, norm):
    """Same run with and without precise BN: same weights, other statistics in model.pt.

    model.pt holds the statistics precise BN gives the final generator (checked against
    recalibrating training's statistics by hand); last.ckpt keeps training's.
    """
    plain = train(_config(norm, 0), tmp_path / "plain")
    train(_config(norm, 3), tmp_path / "precise")
    before = load_model_checkpoint(tmp_path / "plain" / "model.pt").model.state_dict()
    after = load_model_checkpoint(tmp_path / "precise" / "model.pt").model.state_dict()
    stats = [k for k in before if "running_" in k]
    assert stats
    for key in before:
        if "running_" in key:
            assert not torch.equal(before[key], after[key]), key
        elif "num_batches" not in key:
            assert torch.equal(before[key], after[key]), key
    # recalibrating the plain run's generator by hand gives model.pt's statistics
    module = plain.module
    module.precise_bn(3)
    for key, value in module.generator.state_dict().items():
        if "running_" in key:
            torch.testing.assert_close(value, after[key])
    ckpt = read_checkpoint_file(tmp_path / "precise" / "checkpoints" / "last.ckpt")
    trained = {k.removeprefix("generator."): v for k, v in ckpt["state_dict"].items()}
    for key in stats:
        assert torch.equal(trained[key], before[key]), key  # training's, for --resume


def test_precise_bn_batches_must_not_be_negative():
    with pytest.raises(UserError, match="trainer.precise_bn_batches"):
        _config("domain", -1)


def test_on_in_the_demo_off_in_the_paper_configs(tmp_path):
    from pathlib import Path

    from semimtl_geo.cli.cmd_demo import PROFILES, demo_config
    from semimtl_geo.training.config import load_config

    configs = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(configs.glob("*.yaml")):
        assert load_config(path).trainer.precise_bn_batches == 0, path.name
    cfg = config_from_dict(demo_config(tmp_path, PROFILES["default"], "cpu", 0, None))
    assert cfg.trainer.precise_bn_batches == 50
