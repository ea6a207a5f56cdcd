"""The ``isprs`` datamodule on synthesized, prepared archives (train loader + eval tiles)."""

import numpy as np
import pytest
from lightning.pytorch import LightningDataModule

from semimtl_geo.cli.main import main
from semimtl_geo.data.datamodule import (
    TrainLoaderRequest,
    available_kinds,
    datamodule,
    datamodule_class,
)
from semimtl_geo.data.isprs.datamodule import ISPRSDataModule
from semimtl_geo.data.isprs.synthesize import synthesize_isprs
from semimtl_geo.errors import UserError
from semimtl_geo.training.config import DatasetConfig


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("isprs")
    synthesize_isprs(root / "raw", size_potsdam=240, size_vaihingen=150, tiles_potsdam=2,
                     tiles_vaihingen=2, seed=1)
    out = root / "prepared"
    assert main(["prepare-isprs", "--potsdam", str(root / "raw" / "potsdam"), "--vaihingen",
                 str(root / "raw" / "vaihingen"), "-o", str(out), "--no-progress",
                 "--no-preview"]) == 0
    return out


def test_isprs_kind_is_registered():
    assert "isprs" in available_kinds()
    with pytest.raises(UserError, match="Unknown dataset kind 'isprz'; use one of .*isprs"):
        datamodule_class("isprz")


def test_isprs_kind_describe_train_and_eval(prepared):
    potsdam = DatasetConfig(name="potsdam", kind="isprs", root=str(prepared), tasks=["seg"])
    vaihingen = DatasetConfig(name="v", kind="isprs", root=str(prepared), tasks=["height"],
                              options={"dataset": "vaihingen"})
    kind = datamodule(vaihingen)
    assert isinstance(kind, ISPRSDataModule) and isinstance(kind, LightningDataModule)
    info = kind.describe()
    assert info.bands == ["IR", "R", "G"] and info.gsd == pytest.approx(0.09)
    assert info.height_scale > 0 and info.classes.names[0] == "impervious_surfaces"
    request = TrainLoaderRequest(("height",), 64, 2, 3, 0, 5, info.mean, info.std)
    batches = list(kind.train_loader(request))
    assert len(batches) == 3  # exactly num_batches
    assert set(batches[0]) == {"image", "height"} and batches[0]["image"].shape == (2, 3, 64, 64)
    again = list(datamodule(vaihingen, request).train_dataloader())  # Lightning's hook
    assert all((a["image"] == b["image"]).all() for a, b in zip(batches, again))  # seeded
    request = TrainLoaderRequest(("seg",), 64, 2, 1, 0, 5, info.mean, info.std)
    batch = next(iter(datamodule(potsdam).train_loader(request)))
    assert set(batch) == {"image", "mask"} and batch["mask"].dtype.is_floating_point is False

    samples = list(kind.eval_samples("test"))
    assert len(samples) == 1 and samples[0].id.startswith("vaihingen/")
    s = samples[0]
    assert s.image.dtype == np.uint8 and s.image.shape[0] == 3
    assert s.mask is not None and s.mask.shape == s.image.shape[1:]
    assert s.height is not None and s.height.dtype == np.float32
    finite = s.height[np.isfinite(s.height)]
    assert finite.max() > 1.0  # metres, not the normalised [0, 1] nDSM
    assert finite.max() <= info.height_scale + 1e-3

    with pytest.raises(UserError, match="Unknown option"):
        datamodule(
            DatasetConfig(name="potsdam", root=str(prepared), options={"bands": 4})).describe()
