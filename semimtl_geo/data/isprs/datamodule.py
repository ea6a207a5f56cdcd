"""Datamodule of kind ``isprs``: Potsdam / Vaihingen prepared by ``semimtl-geo prepare-isprs``.

Config entry::

    {name: potsdam, kind: isprs, root: data/isprs, tasks: [seg]}

``root`` is the prepared folder (with ``manifest.json``). The ISPRS dataset read is
``options.dataset`` when given, else ``name`` (``potsdam`` or ``vaihingen``); the training
split is ``options.split`` (default ``train``). Training batches are random in-tile crops
(:func:`~semimtl_geo.data.isprs.loaders.make_isprs_train_loader`); evaluation reads whole
tiles of the requested split with every layer that exists (labels and nDSM), heights in
metres (normalised nDSM x the manifest's ``height_scale``).
"""

from collections.abc import Iterator
from typing import Any

from semimtl_geo.data.datamodule import (
    DataModule,
    EvalSample,
    KindInfo,
    TrainLoaderRequest,
    register_datamodule,
)
from semimtl_geo.errors import UserError

OPTIONS = ("dataset", "split")


@register_datamodule
class ISPRSDataModule(DataModule):
    """Prepared ISPRS tiles: manifest facts, random training crops, whole evaluation tiles."""

    kinds = ("isprs",)

    def _dataset(self) -> str:
        spec = self.spec
        unknown = sorted(set(spec.options) - set(OPTIONS))
        if unknown:
            raise UserError(
                f"Unknown option(s) {unknown} for the isprs dataset '{spec.name}'; "
                f"valid: {', '.join(OPTIONS)}."
            )
        if not spec.root:
            raise UserError(
                f"Dataset '{spec.name}' has no root; set it to the prepare-isprs output folder."
            )
        return str(spec.options.get("dataset", spec.name))

    def describe(self) -> KindInfo:
        """Class table, bands, mean/std, GSD and nDSM scale from the manifest."""
        from semimtl_geo.data.isprs.loaders import dataset_info

        info = dataset_info(self.spec.root, self._dataset())
        return KindInfo(
            classes=info.classes,
            bands=list(info.bands),
            mean=list(info.mean),
            std=list(info.std),
            gsd=info.gsd,
            height_scale=info.height_scale,
            height_unit=info.height_unit,
        )

    def train_loader(self, request: TrainLoaderRequest) -> Any:  # noqa: ANN401 - a DataLoader
        """Random in-tile crops (scale, flip/rot90 augmentation), exactly ``num_batches``."""
        from semimtl_geo.data.isprs.loaders import make_isprs_train_loader

        return make_isprs_train_loader(
            self.spec.root,
            self._dataset(),
            split=str(self.spec.options.get("split", "train")),
            tasks=request.tasks,
            crop_size=request.crop_size,
            batch_size=request.batch_size,
            num_workers=request.num_workers,
            samples_per_epoch=max(1, request.num_batches) * request.batch_size,
            seed=request.seed,
            mean=request.mean,
            std=request.std,
            augment=request.augment,
            scale_range=request.scale_range,
        )

    def eval_samples(self, split: str) -> Iterator[EvalSample]:
        """Whole prepared tiles of ``split`` with labels and heights in metres."""
        from semimtl_geo.data.isprs.loaders import list_isprs_tiles, read_isprs_tile

        dataset = self._dataset()
        for record in list_isprs_tiles(self.spec.root, dataset, split):
            tile = read_isprs_tile(record)
            height = None if tile.height is None else tile.height * record.height_scale
            yield EvalSample(tile.image, tile.mask, height, f"{dataset}/{tile.tile_id}")
