"""Methods are registered classes: adding one is one class plus a config that names it.

Also checks the package's import layering (models know nothing of training, inference
never imports training, the methods do not import the config that names them).
"""

import ast
from pathlib import Path

import _toy_kind as toy
import pytest
import yaml

from semimtl_geo.checkpoint_file import read_checkpoint_file
from semimtl_geo.cli.main import main
from semimtl_geo.errors import UserError
from semimtl_geo.losses import binary_adversarial_loss
from semimtl_geo.training.backward import WeightedTerm
from semimtl_geo.training.config import load_config
from semimtl_geo.training.methods import (
    METHOD_LABELS,
    Method,
    get_method,
    method_names,
    plan_method,
    register_method,
    unregister_method,
)

PACKAGE = Path(__file__).resolve().parents[1] / "semimtl_geo"


class SegOnlyAdversarial(Method):
    """A toy method: JTL plus a binary D on segmentation only (SemiSD restricted to seg)."""

    name = "toy_seg_adv"
    label = "Toy Seg-Adv"
    discriminator = "binary"

    def discriminator_tasks(self, tasks):
        return tuple(t for t in tasks if t == "seg")

    def adversarial_terms(self, plan, role, task, logits, loss_cfg):
        value = binary_adversarial_loss(logits, is_real=True)
        return [WeightedTerm(f"{task}/adv", loss_cfg.lambda_inter, value, True)]

    def discriminator_terms(self, plan, role, task, pred_logits, gt_logits):
        terms = {"pred": binary_adversarial_loss(pred_logits, is_real=False)}
        if gt_logits is not None:
            terms["gt"] = binary_adversarial_loss(gt_logits, is_real=True)
        return terms


@pytest.fixture
def toy_method():
    toy.register()
    register_method(SegOnlyAdversarial)
    yield from toy.single_thread()
    unregister_method(SegOnlyAdversarial.name)
    toy.unregister()


def test_a_new_method_is_one_class_and_a_config(toy_method, tmp_path):
    assert SegOnlyAdversarial.name in method_names()
    assert METHOD_LABELS[SegOnlyAdversarial.name] == "Toy Seg-Adv"
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(toy.toy_config_dict(SegOnlyAdversarial.name)))
    cfg = load_config(config)
    plan = plan_method(cfg)
    assert (plan.tasks, plan.d_tasks, plan.d_outputs) == (("seg", "height"), ("seg",), 1)
    assert plan.label == "Toy Seg-Adv" and isinstance(plan.impl, SegOnlyAdversarial)

    # the CLI's --method choices come from the registry; a short run trains it end to end
    run = tmp_path / "run"
    assert main(["train", "-c", str(config), "-o", str(run), "--method",
                 SegOnlyAdversarial.name, "trainer.max_steps=1", "trainer.steps_per_epoch=1",
                 "trainer.log_every=1"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["method"] == SegOnlyAdversarial.name
    state = read_checkpoint_file(run / "checkpoints" / "last.ckpt")["state_dict"]
    assert any(k.startswith("discriminators.seg.") for k in state)
    assert not any(k.startswith("discriminators.height.") for k in state)
    metrics = (next(run.glob("logs/version_*")) / "metrics.csv").read_text().splitlines()[0]
    assert "train/a/seg/adv" in metrics and "train/b/seg/adv" in metrics
    assert "height/adv" not in metrics


def test_unknown_method_lists_the_registered_ones(toy_method):
    with pytest.raises(UserError) as info:
        get_method("fancy")
    assert str(info.value) == (
        "Config key 'method' must be one of stl_seg, stl_height, da_seg, da_height, jtl, "
        "semisd, semimtl, toy_seg_adv, got 'fancy'."
    )
    assert main(["train", "-c", "x.yaml", "--method", "fancy"]) == 2  # click's choice error


def test_registry_refuses_a_nameless_or_duplicate_method():
    class Nameless(Method):
        pass

    with pytest.raises(TypeError):
        register_method(Nameless)

    class Duplicate(Method):
        name = "jtl"
        label = "Another JTL"

    with pytest.raises(TypeError, match="already registered"):
        register_method(Duplicate)


def _imports(path: Path) -> set[str]:
    """Every ``semimtl_geo`` module a file imports (module level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("semimtl_geo")}


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("models", ("semimtl_geo.training", "semimtl_geo.data", "semimtl_geo.inference")),
        ("inference", ("semimtl_geo.training",)),
        ("training/methods", ("semimtl_geo.training.config", "semimtl_geo.training.engine")),
        ("qgis_plugin", ("semimtl_geo",)),
    ],
)
def test_imports_flow_one_way(folder, forbidden):
    offenders = {
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in (PACKAGE / folder).rglob("*.py")
        for module in _imports(path)
        if any(module == f or module.startswith(f + ".") for f in forbidden)
    }
    assert not offenders, sorted(offenders)


def test_a_method_with_discriminators_must_define_their_terms():
    class NoDTerms(Method):
        name = "no_d_terms"
        label = "No D terms"
        discriminator = "binary"

    with pytest.raises(TypeError, match="^NoDTerms declares discriminators but does not "
                                        "define discriminator_terms$"):
        register_method(NoDTerms)
    assert "no_d_terms" not in method_names()


def test_a_new_method_module_in_the_package_needs_no_other_edit(tmp_path, monkeypatch):
    """A file in training/methods/ registers its class: no list of modules to extend."""
    import sys

    import semimtl_geo.training.methods as methods

    (tmp_path / "toy_extra.py").write_text(
        "from semimtl_geo.training.methods.base import Method, register_method\n\n\n"
        "@register_method\nclass ToyExtra(Method):\n    name = 'toy_extra'\n"
        "    label = 'Toy Extra'\n"
    )
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(tmp_path)])
    try:
        names = methods.import_method_modules()
        assert names[: len(methods.BUILTIN)] == list(methods.BUILTIN)  # the paper's order
        assert names[-1] == "toy_extra" and method_names()[-1] == "toy_extra"
        assert get_method("toy_extra").label == "Toy Extra"
    finally:
        unregister_method("toy_extra")
        sys.modules.pop("semimtl_geo.training.methods.toy_extra", None)
