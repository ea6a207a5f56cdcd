"""Training configs on OmegaConf structured configs: merging, overrides, errors, data only.

The error wording of the CLI is also checked row by row in docs/errors.md
(tests/test_error_table.py); these tests cover what the table does not: list items,
``_base_`` chains, OmegaConf's conversions, and that no interpolation is ever resolved.
"""

import ast
from pathlib import Path

import _toy_kind as toy
import pytest
import yaml
from omegaconf import OmegaConf

from semimtl_geo.errors import UserError
from semimtl_geo.losses import INTER_MODES
from semimtl_geo.training.config import (
    OPTIMIZERS,
    config_from_dict,
    dataset_from_dict,
    load_config,
    read_yaml_config,
    save_config,
)

CONFIG_PY = Path(__file__).resolve().parents[1] / "semimtl_geo" / "training" / "config.py"


@pytest.fixture(autouse=True)
def toy_kind():
    toy.register()
    yield
    toy.unregister()


def _load(*overrides: str, **changes):
    data = toy.toy_config_dict("semimtl")
    data.update(changes)
    return load_config(None, list(overrides), base=data)


def _error(*overrides: str, **changes) -> str:
    with pytest.raises(UserError) as info:
        _load(*overrides, **changes)
    message = str(info.value)
    assert "\n" not in message and message.endswith("."), message  # one sentence
    return message


def test_unknown_keys_inside_list_items_keep_their_path(tmp_path):
    """OmegaConf alone reports 'bogus' for a key inside a list item it merges."""
    bad = toy.toy_config_dict("semimtl")
    bad["data"]["datasets"][1]["bogus"] = 1
    valid = "valid keys here are: name, kind, root, tasks, options."
    with pytest.raises(UserError, match=r"'data\.datasets\[1\]\.bogus'; " + valid):
        config_from_dict(bad)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(UserError, match=r"'data\.datasets\[1\]\.bogus'"):
        load_config(path)
    assert "'data.datasets[0].bogus'" in _error("data.datasets=[{name: a, bogus: 1}]")
    assert "'data.datasets[0].colour'" in _error("data.datasets.0.colour=red")
    assert "'data.datasets[1].options' must be mapping, got 5" in _error(
        "data.datasets.1.options=5"
    )
    with pytest.raises(UserError, match=r"'data\.datasets\[2\]\.nme'"):
        dataset_from_dict({"nme": "x"}, "data.datasets[2]")


def test_a_section_given_a_value_names_the_section():
    """OmegaConf's merge names no key for {'trainer': 5}; each top-level key is merged alone."""
    assert "Config key 'trainer' must be mapping, got 5" in _error(trainer=5)
    assert "Config key 'trainer' must be mapping, got 5" in _error("trainer=5")
    assert "Config key 'data.datasets[0]' must be mapping, got 5" in _error("data.datasets=[5]")
    assert "Unknown config key 'bogus'; valid keys here are: method, mode, seed," in _error(
        bogus=1
    )
    assert "Config key 'model' must be mapping, got [];" in _error(model=[])
    data = {"scale_range": "low"}
    assert "Config key 'data.scale_range' must be list of float | null" in _error(data=data)
    data = {"mean": {"low": 1}}  # OmegaConf's merge names no key for this shape either
    assert "Config key 'data.mean' must be list of float | null" in _error(data=data)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.datasets.5.root=/x", "Config key 'data.datasets' is a 2-item list indexed from "
         "0, so it has no item '5'."),
        ("data.datasets.x.root=/x", "list indexed from 0, so it has no item 'x'."),
        ("trainer.max_steps.x=1", "Config key 'trainer.max_steps' must be int, got {'x': 1};"),
        ("data.mean.0=1", "Config key 'data.mean' must be list of float | null, got {'0': 1};"),
        ("=3", "Override '=3' is not of the form key=value"),
        ("trainer.max_steps=1.5", "Config key 'trainer.max_steps' must be int, got 1.5;"),
        ("trainer.cpu_threads=x", "Config key 'trainer.cpu_threads' must be int | null, got 'x';"),
        ("data.scale_range=[1, x]", "Config key 'data.scale_range[1]' must be float, got 'x';"),
        ("data.datasets.0.tasks=seg", "'data.datasets[0].tasks' must be list of str, got 'seg';"),
        ("data.scale_range={a: 1}", "'data.scale_range' is a 2-item list indexed from 0, so it"),
        ("model=[]", "Config key 'model' must be mapping, got [];"),
        ("loss={w_segx: 2}", "Unknown config key 'loss.w_segx'; valid keys here are: w_seg,"),
        ("mode=m4", f"Config key 'mode' must be one of {', '.join(INTER_MODES)}, got 'm4'."),
        ("optim.optimizer=adam", "Config key 'optim.optimizer' must be one of sgd, adamw, got"),
        ("trainer.progress_bar=maybe", "Config key 'trainer.progress_bar' must be bool, got"),
    ],
)
def test_override_errors_name_the_key(override, message):
    assert message in _error(override)


def test_list_indices_and_mappings_in_overrides():
    cfg = _load(
        "data.datasets.1.root=/data/b",
        "data.datasets.0.options.extra.depth=2",
        "data.scale_range.0=0.75",
        "loss={w_seg: 2}",  # a mapping merges: the other loss keys keep their values
    )
    assert cfg.data.datasets[1].root == "/data/b" and cfg.data.datasets[0].root == ""
    assert cfg.data.datasets[0].options == {"shift": 0.0, "extra": {"depth": 2}}
    assert cfg.data.scale_range == [0.75, 2.0]
    assert cfg.loss.w_seg == 2.0 and cfg.loss.w_height == 0.01
    two = _load("data.datasets=[{name: z, kind: toy, tasks: [seg]}]")  # a list replaces
    assert [d.name for d in two.data.datasets] == ["z"]


def test_an_integer_for_a_float_key_is_taken_without_a_warning():
    """`loss.w_seg=1` printed OmegaConf's FutureWarning about int-to-float conversion."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = _load("loss.w_seg=2", "loss.seg_lovasz_weight=1", "loss={w_height: 3}")
    assert cfg.loss.w_seg == 2.0 and isinstance(cfg.loss.w_seg, float)
    assert cfg.loss.seg_lovasz_weight == 1.0 and cfg.loss.w_height == 3.0
    steps = _load("trainer.max_steps=7").trainer.max_steps  # an integer key stays one
    assert steps == 7 and isinstance(steps, int)


def test_omegaconf_conversions_are_the_documented_ones():
    """Module docstring: numeric strings for floats, numbers/words for bools, text for str."""
    cfg = _load("loss.lambda_inter=1e-3", "trainer.progress_bar=1", "trainer.grad_diagnostics=no")
    assert cfg.loss.lambda_inter == 0.001  # YAML reads '1e-3' as a string; refused before
    assert cfg.trainer.progress_bar is True and cfg.trainer.grad_diagnostics is False
    cfg = _load("optim.lr=1", "data.datasets.0.name=5", 'trainer.channels_last="on"')
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.data.datasets[0].name == "5" and cfg.trainer.channels_last is True


def test_choices_come_from_their_registries_not_annotations():
    """No Literal copy of the choices: method from the registry, mode and optimiser tuples."""
    tree = ast.parse(CONFIG_PY.read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert "Literal" not in names
    for mode in INTER_MODES:
        assert _load(f"mode={mode}").mode == mode
    for optimizer in OPTIMIZERS:
        assert _load(f"optim.optimizer={optimizer}").optim.optimizer == optimizer


def test_base_chains_merge_mappings_and_replace_lists(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yaml").write_text(yaml.safe_dump(toy.toy_config_dict("semimtl")))
    (tmp_path / "sub" / "mid.yaml").write_text(
        "_base_: ../root.yaml\nloss: {w_seg: 3.0}\ndata: {scale_range: [1.0, 1.5]}\n"
    )
    (tmp_path / "sub" / "leaf.yaml").write_text(
        "_base_: mid.yaml\nloss: {w_height: 0.5}\ndata: {scale_range: [0.8, 1.2]}\n"
    )
    raw = read_yaml_config(tmp_path / "sub" / "leaf.yaml")
    assert "_base_" not in raw and raw["data"]["scale_range"] == [0.8, 1.2]
    assert raw["data"]["datasets"][0]["name"] == "a"  # plain data, not OmegaConf objects
    assert type(raw) is dict and type(raw["data"]["datasets"]) is list
    cfg = load_config(tmp_path / "sub" / "leaf.yaml")
    assert (cfg.loss.w_seg, cfg.loss.w_height) == (3.0, 0.5)
    (tmp_path / "loop.yaml").write_text("_base_: loop.yaml\n")
    with pytest.raises(UserError, match="includes itself through '_base_'"):
        load_config(tmp_path / "loop.yaml")


def test_saved_config_reloads_to_the_same_config(tmp_path):
    """Resume reads config.yaml back: it must rebuild exactly the config that was saved."""
    cfg = _load("loss.lambda_inter=1e-3", "data.datasets.0.options.extra=[1, 2]")
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(None, base=read_yaml_config(tmp_path / "config.yaml"))
    assert again == cfg
    saved = (tmp_path / "config.yaml").read_text()
    assert yaml.safe_dump(again.to_dict(), sort_keys=False) == saved


@pytest.mark.parametrize(
    "value", ["${oc.env:HOME}", "/data/${oc.env:USER}/x", "${boom:}", "???", "\\${boom:}"]
)
def test_configs_are_data_no_interpolation_is_resolved(tmp_path, value):
    """OmegaConf resolves ${...} (env vars, registered resolvers) and skips '???': refused."""
    calls = []
    OmegaConf.register_new_resolver("boom", lambda: calls.append(1) or "ran", replace=True)
    try:
        message = _error(f"data.datasets.0.root={value}")
        assert "'data.datasets.0.root' holds" in message and "plain data" in message
        bad = toy.toy_config_dict("semimtl")
        bad["data"]["datasets"][1]["options"]["note"] = [value]
        with pytest.raises(UserError, match=r"'data\.datasets\[1\]\.options\.note\[0\]' holds"):
            config_from_dict(bad)
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({"_base_": "p.yaml", "model": {"encoder": value}}))
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(toy.toy_config_dict("semimtl")))
        with pytest.raises(UserError, match=r"'model\.encoder' holds"):
            load_config(path)
        parent = toy.toy_config_dict("semimtl")
        parent["model"]["encoder"] = value  # in the _base_ file, not overridden by the child
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(parent))
        path.write_text(yaml.safe_dump({"_base_": "p.yaml", "seed": 1}))
        with pytest.raises(UserError, match=r"'model\.encoder' holds"):
            load_config(path)
        assert calls == []
    finally:
        OmegaConf.clear_resolver("boom")


def test_yaml_tags_that_build_objects_are_refused(tmp_path):
    """yaml.safe_load only: a python/object tag is a YAML error, never a constructed object."""
    path = tmp_path / "c.yaml"
    path.write_text("method: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        load_config(path)
