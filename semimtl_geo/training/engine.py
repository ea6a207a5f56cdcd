"""Lightning engine that trains every method of the paper (Algorithm 1).

One iteration, whatever the method:

1. **G step** (discriminators frozen: ``requires_grad = False``): for every dataset ``k``
   taking part, forward its mini-batch through G and add the method's generator terms
   (:meth:`~semimtl_geo.training.methods.Method.generator_terms`); one backward of the sum
   over datasets and one SGD step (synchronous SGD across datasets, section 3.3), then
   one step of the poly learning-rate schedule.
2. **D step** (G frozen, its predictions detached): every D_t is trained on the sum over
   datasets of :meth:`~semimtl_geo.training.methods.Method.discriminator_terms` (eq. 6) with one
   Adam step.

Reproducibility: the global RNGs are re-seeded from ``(seed, iteration, rank)`` at every
iteration and data loaders are rebuilt every epoch from ``(seed, dataset, epoch, rank)``,
so a run resumed from an epoch-end checkpoint continues bit-for-bit like an
uninterrupted one (optimiser, schedule and discriminator states come from Lightning's
checkpoint). Checkpoints are written atomically (temporary file + rename).

Outputs in the run folder: ``config.yaml`` (resolved config), ``checkpoints/last.ckpt``
(Lightning checkpoint, also loadable by :func:`semimtl_geo.checkpoint.load_model_checkpoint`),
``model.pt`` (standalone generator checkpoint), ``model.stac.json`` (its STAC MLM
model card, :mod:`semimtl_geo.model_card`), ``logs/`` (CSV ``metrics.csv`` and
TensorBoard events, one ``version_N`` folder per session), ``previews/iter_*.png``.
"""

import math
import os
import random
import shutil
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from semimtl_geo.checkpoint import (
    CHECKPOINT_KEY,
    ModelMeta,
    checkpoint_payload,
    save_model_checkpoint,
)
from semimtl_geo.checkpoint_file import read_checkpoint_file, write_checkpoint_file
from semimtl_geo.data.datamodule import KindInfo, TrainLoaderRequest, datamodule
from semimtl_geo.errors import UserError
from semimtl_geo.model_card import write_checkpoint_card
from semimtl_geo.models import Discriminator, MultiTaskNet
from semimtl_geo.outputs import check_output_dir
from semimtl_geo.training.backward import WeightedTerm, backward_terms
from semimtl_geo.training.config import TrainConfig, save_config
from semimtl_geo.training.methods import (
    MethodPlan,
    check_batch,
    discriminator_losses,
    generator_terms,
    plan_method,
)
from semimtl_geo.training.precise_bn import recalibrate_bn
from semimtl_geo.training.preview import PreviewRow, save_preview

_MIX = (1 << 61) - 1
#: Seed stream (in place of the epoch number) of the batches that re-estimate the
#: BatchNorm statistics after training (``trainer.precise_bn_batches``).
PRECISE_BN_STREAM = -1


def mix_seed(*parts: int) -> int:
    """Deterministic 63-bit seed from integers (stable across processes, unlike hash())."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value * 6364136223846793005 + int(part) + 1442695040888963407) % _MIX
    return value


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze (``False``) or unfreeze every parameter of ``module``."""
    for p in module.parameters():
        p.requires_grad_(flag)


def _fusable(params: Iterable[torch.Tensor]) -> bool | None:
    """Return ``True`` when torch's fused Adam/AdamW kernel can update ``params``.

    That is float tensors on the CPU or a CUDA GPU; otherwise ``None`` (torch's default
    implementation). The fused kernel does the whole update in one pass over each tensor;
    torch's default on the CPU loops over six element-wise operations per tensor: for the
    demo's ResNet18 + heads (18.5 M parameters) an AdamW step took 1.38 CPU s against
    0.73 s fused on the 2-core build VM at load 9 (README, demo levers). Same algorithm and
    fp32 arithmetic; only the rounding order differs.
    """
    params = list(params)
    ok = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return True if params and ok else None


def poly_lambda(max_steps: int, power: float, warmup: int = 0):  # noqa: ANN201 - a closure
    """Poly learning-rate factor ``(1 - it / max_steps) ** power`` (section 4.1).

    With ``warmup`` > 0 the factor also rises linearly over the first ``warmup``
    iterations, ``min(1, (it + 1) / warmup)`` (Goyal et al., "Accurate, Large Minibatch
    SGD", 2017, section 2.2: gradual warm-up lets a higher peak rate train stably).
    """

    def factor(it: int) -> float:
        rise = min(1.0, (it + 1) / warmup) if warmup > 0 else 1.0
        return rise * max(0.0, 1.0 - min(it, max_steps) / max_steps) ** power

    return factor


def poly_schedule(
    optimizer: torch.optim.Optimizer, max_steps: int, power: float, warmup: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Return the poly schedule ``lr = base_lr (1 - it / max_steps) ** power`` (section 4.1).

    torch's ``PolynomialLR`` computes the same curve, but step by step from the previous
    learning rate and with ``max_steps`` saved in its state. A run resumed with a larger
    ``trainer.max_steps`` would then keep the old length (and stay at 0 once it ended)
    instead of following the schedule of the new length; ``LambdaLR`` evaluates the
    closed form from ``base_lr`` at every step, so only the step count is state.
    ``warmup``: :func:`poly_lambda`.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(max_steps, power, warmup))


# ------------------------------------------------------------------ dataset facts


def describe_datasets(cfg: TrainConfig, plan: MethodPlan) -> dict[str, KindInfo]:
    """Ask every dataset's kind for its facts (class table, bands, stats, GSD, scale)."""
    return {
        role.name: datamodule(cfg.data.datasets[role.index]).describe()
        for role in plan.datasets
    }


def build_meta(cfg: TrainConfig, plan: MethodPlan, infos: dict[str, KindInfo]) -> ModelMeta:
    """Derive the checkpoint metadata from the datasets that train the model.

    The model's height unit is that of the first height-labelled dataset
    (``height_scale`` metres per unit); other height-labelled datasets are rescaled to it.

    Raises:
        UserError: datasets that disagree on band count or class table.

    """
    roles = plan.datasets
    first = infos[roles[0].name]
    for role in roles[1:]:
        info = infos[role.name]
        if len(info.bands) != len(first.bands):
            raise UserError(
                f"Datasets '{roles[0].name}' ({len(first.bands)} bands) and '{role.name}' "
                f"({len(info.bands)} bands) differ in band count; prepare them with the same bands."
            )
    seg_roles = [r for r in roles if "seg" in r.labelled] or list(roles)
    classes = infos[seg_roles[0].name].classes
    for role in seg_roles[1:]:
        if infos[role.name].classes.names != classes.names:
            raise UserError(
                f"Datasets '{seg_roles[0].name}' and '{role.name}' have different class tables; "
                "segmentation labels must share one class list."
            )
    for role in roles[1:]:
        info = infos[role.name]
        if (info.input_dtype, tuple(info.input_range)) != (
            first.input_dtype, tuple(first.input_range)
        ):
            raise UserError(
                f"Datasets '{roles[0].name}' ({first.input_dtype} {first.input_range}) and "
                f"'{role.name}' ({info.input_dtype} {info.input_range}) have different pixel "
                "value ranges; prepare them with the same pixel type."
            )
    height_roles = [r for r in roles if "height" in r.labelled]
    scale_info = infos[height_roles[0].name] if height_roles else first
    n = len(first.bands)
    mean = cfg.data.mean or [
        float(np.mean([infos[r.name].mean[b] for r in roles])) for b in range(n)
    ]
    std = cfg.data.std or [float(np.mean([infos[r.name].std[b] for r in roles])) for b in range(n)]
    if len(mean) != n or len(std) != n:
        raise UserError(
            f"Config keys 'data.mean'/'data.std' need {n} values, one per band {first.bands}."
        )
    return ModelMeta(
        classes=classes,
        bands=list(first.bands),
        mean=list(mean),
        std=list(std),
        gsd=first.gsd,
        height_scale=float(scale_info.height_scale),
        height_unit=scale_info.height_unit,
        patch_size=cfg.eval.patch_size,
        overlap=cfg.eval.overlap,
        input_dtype=first.input_dtype,
        input_range=[float(v) for v in first.input_range],
    )


class ZippedLoaders:
    """One mini-batch from every dataset per step: ``{name: batch}`` (Algorithm 1).

    A plain object (not a dict, not Lightning's ``CombinedLoader``) so that Lightning
    treats it as a single iterable and leaves the datasets' loaders alone. Given a
    ``CombinedLoader``, Lightning prepares each loader in it: it calls the samplers'
    ``set_epoch`` (the ISPRS crop sampler seeds its stream with ``seed + epoch``, so the
    crops would no longer be those of each dataset's per-epoch seed, :func:`mix_seed`),
    adds its worker seeding and warns about worker counts; and a ``CombinedLoader``
    wrapped in a plain object only knows its length once its loaders' iterators (and
    workers) have been started.
    """

    def __init__(self, loaders: dict[str, Iterable[dict[str, Any]]]) -> None:
        self.loaders = loaders

    def __len__(self) -> int:
        return min(len(loader) for loader in self.loaders.values())  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[dict[str, dict[str, Any]]]:
        iterators = {name: iter(loader) for name, loader in self.loaders.items()}
        for _ in range(len(self)):
            yield {name: next(it) for name, it in iterators.items()}


# ------------------------------------------------------------------ the module


class SemiMTLModule(pl.LightningModule):
    """Generator, discriminators and the Algorithm 1 iteration for any method.

    Args:
        cfg: validated training config.
        meta: checkpoint metadata (see :func:`build_meta`).
        height_ratios: per dataset, factor that converts its loader's normalised height
            into the model's height unit (1 when the scales agree).
        run_dir: where previews are written (``None``: no previews).

    """

    def __init__(
        self,
        cfg: TrainConfig,
        meta: ModelMeta,
        height_ratios: dict[str, float] | None = None,
        run_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.plan = plan_method(cfg)
        self.meta = meta
        self.height_ratios = height_ratios or {}
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.num_classes = len(meta.classes)
        weights = cfg.loss.seg_class_weights
        if weights is not None and len(weights) != self.num_classes:
            raise UserError(
                f"Config key 'loss.seg_class_weights' has {len(weights)} weights but the "
                f"datasets have {self.num_classes} classes ({', '.join(meta.classes.names)}); give "
                "one per class, in that order."
            )
        self.generator = MultiTaskNet(
            encoder_name=cfg.model.encoder,
            in_channels=len(meta.bands),
            num_classes=self.num_classes,
            tasks=self.plan.tasks,
            encoder_weights=cfg.model.encoder_weights,
            output_stride=cfg.model.output_stride,
            norm=cfg.model.norm,
            domains=[role.name for role in self.plan.datasets]
            if cfg.model.norm == "domain"
            else None,
            seg_skip=cfg.model.seg_skip,
            height_channels=cfg.model.height_channels,
            seg_channels=cfg.model.seg_channels,
        )
        self.discriminators = nn.ModuleDict()
        for task in self.plan.d_tasks:
            in_ch = self.num_classes if task == "seg" else 1
            self.discriminators[task] = Discriminator(
                in_ch, self.plan.d_outputs, width=cfg.model.discriminator_width
            )
        if cfg.trainer.channels_last:
            self.to(memory_format=torch.channels_last)

    # -- optimisers ---------------------------------------------------------
    def build_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None, Any]:
        """SGD (or AdamW) + poly schedule for G, Adam for the discriminators (section 4.1)."""
        o = self.cfg.optim
        if o.optimizer == "adamw":
            opt_g: torch.optim.Optimizer = torch.optim.AdamW(
                self.generator.parameters(), lr=o.lr, weight_decay=o.weight_decay,
                fused=_fusable(self.generator.parameters()),
            )
        else:
            opt_g = torch.optim.SGD(
                self.generator.parameters(), lr=o.lr, momentum=o.momentum,
                weight_decay=o.weight_decay,
            )
        sched = poly_schedule(opt_g, self.cfg.trainer.max_steps, o.poly_power, o.warmup_steps)
        opt_d = None
        if len(self.discriminators):
            opt_d = torch.optim.Adam(
                self.discriminators.parameters(), lr=o.d_lr, betas=tuple(o.d_betas),
                fused=_fusable(self.discriminators.parameters()),
            )
        return opt_g, opt_d, sched

    def build_d_scheduler(self, opt_d: torch.optim.Optimizer) -> Any:
        """Poly decay of the discriminators' learning rate (AdaptSegNet [56]), or None."""
        power = self.cfg.optim.d_poly_power
        if power is None:
            return None
        return poly_schedule(opt_d, self.cfg.trainer.max_steps, power)

    def configure_optimizers(self):  # noqa: ANN201 - Lightning's flexible return type
        """Lightning hook: optimisers and the (manually stepped) poly schedules."""
        opt_g, opt_d, sched = self.build_optimizers()
        opts = [opt_g] + ([opt_d] if opt_d is not None else [])
        scheds = [{"scheduler": sched, "interval": "step"}]
        d_sched = self.build_d_scheduler(opt_d) if opt_d is not None else None
        if d_sched is not None:
            scheds.append({"scheduler": d_sched, "interval": "step"})
        return opts, scheds

    # -- data ---------------------------------------------------------------
    def _num_batches(self, epoch: int) -> int:
        t = self.cfg.trainer
        return max(0, min(t.steps_per_epoch, t.max_steps - epoch * t.steps_per_epoch))

    def train_dataloader(self) -> "ZippedLoaders":
        """Per-epoch loaders, one per dataset, seeded from (seed, dataset, epoch, rank)."""
        epoch = self.current_epoch
        return ZippedLoaders(self._loaders(self._num_batches(epoch), epoch))

    def _loaders(self, num_batches: int, stream: int) -> dict[str, Iterable[dict[str, Any]]]:
        """One training loader per dataset, seeded from (seed, dataset, ``stream``, rank)."""
        rank = self.global_rank if self._trainer is not None else 0
        loaders = {}
        for role in self.plan.datasets:
            spec = self.cfg.data.datasets[role.index]
            request = TrainLoaderRequest(
                tasks=role.labelled,
                crop_size=self.cfg.data.crop_size,
                batch_size=self.cfg.data.batch_size,
                num_batches=num_batches,
                num_workers=self.cfg.data.num_workers,
                seed=mix_seed(self.cfg.seed, role.index, stream, rank) % (2**31),
                mean=list(self.meta.mean),
                std=list(self.meta.std),
                augment=self.cfg.data.augment,
                scale_range=None
                if self.cfg.data.scale_range is None
                else (self.cfg.data.scale_range[0], self.cfg.data.scale_range[1]),
            )
            loaders[role.name] = datamodule(spec, request).train_dataloader()
        return loaders

    def precise_bn(self, num_batches: int, device: torch.device | str | None = None) -> int:
        """Re-estimate the generator's BatchNorm statistics with its final weights.

        ``num_batches`` training mini-batches per dataset (crops and augmentation as in
        training, from a stream of their own: the epoch number ``-1``) go through the frozen
        generator; :func:`~semimtl_geo.training.precise_bn.recalibrate_bn` replaces the
        running statistics by their pooled ones (per dataset with ``model.norm=domain``).
        ``device``: where to run the pass (the training device; Lightning hands the module
        back on the CPU after ``fit``); the generator returns to where it was.
        Returns the number of batches forwarded.
        """
        home = next(self.generator.parameters()).device
        device = torch.device(device) if device is not None else home
        loaders = self._loaders(num_batches, PRECISE_BN_STREAM)

        def images(name: str) -> Iterator[torch.Tensor]:
            for batch in loaders[name]:
                yield self._prepare(name, {"image": batch["image"].to(device)})["image"]

        names = [role.name for role in self.plan.datasets]
        domains = self.generator.domains
        self.generator.to(device)
        try:
            return recalibrate_bn(
                self.generator,
                {name: images(name) for name in names},
                select=self.generator.select_domain if domains else None,
            )
        finally:
            self.generator.to(home)

    # -- the iteration --------------------------------------------------------
    def _prepare(self, name: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(batch)
        if self.cfg.trainer.channels_last:
            out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
        ratio = self.height_ratios.get(name, 1.0)
        if "height" in out and ratio != 1.0:
            out["height"] = out["height"] * ratio
        return out

    def generator_step(
        self,
        batches: dict[str, dict[str, torch.Tensor]],
        opt_g: Any,
        backward: Any = None,
        diagnostics: bool = False,
    ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
        """Algorithm 1, G part: D frozen, one step on the sum over datasets.

        The objective's terms are backpropagated by
        :func:`~semimtl_geo.training.backward.backward_terms`: one pass in fp32; under
        autocast (bf16/fp16 mixed precision) one pass per group of similar weight, so the
        1e-3/1e-4-weighted adversarial terms reach the fp32 parameter gradients instead of
        being rounded away in the activations' gradients. With ``diagnostics`` every term
        is backpropagated on its own and its gradient norm at the encoder is returned as
        ``grad_norm/<dataset>/<task>/<term>``.

        Returns the logged loss terms and the detached predictions per dataset.
        """
        backward = backward or (lambda loss, **kw: loss.backward(**kw))
        set_requires_grad(self.discriminators, False)
        set_requires_grad(self.generator, True)
        self.generator.train()
        self.discriminators.eval()  # frozen: no spectral-norm power iteration either
        logged: dict[str, torch.Tensor] = {}
        predictions: dict[str, dict[str, torch.Tensor]] = {}
        terms: list[WeightedTerm] = []
        mixed = False
        for role in self.plan.datasets:
            batch = self._prepare(role.name, batches[role.name])
            check_batch(role, batch)
            image = batch["image"]
            mixed = mixed or torch.is_autocast_enabled(image.device.type)
            self.generator.select_domain(role.name)  # model.norm=domain: its statistics
            outputs = self.generator(image)
            for term in generator_terms(
                self.plan, role, outputs, batch, self.discriminators, self.cfg.loss
            ):
                named = WeightedTerm(
                    f"{role.name}/{term.name}", term.weight, term.value, term.adversarial,
                    graph=role.name,
                )
                terms.append(named)
                logged[named.name] = named.weighted.detach()
            predictions[role.name] = {t: outputs[t].detach() for t in role.tasks}
        assert terms  # every plan has a supervised term
        total = terms[0].weighted.detach()
        for term in terms[1:]:
            total = total + term.weighted.detach()
        logged["loss_g"] = total
        opt_g.zero_grad(set_to_none=True)
        norms = backward_terms(
            terms,
            [p for p in self.generator.parameters() if p.requires_grad],
            backward,
            split=mixed,
            per_term=diagnostics,
            measure=list(self.generator.encoder.parameters()) if diagnostics else (),
            grad_scale=self._grad_scale(),
        )
        if diagnostics:
            self._check_adversarial_gradients(terms, norms)
            for name, norm in norms.items():
                logged[f"grad_norm/{name}"] = torch.tensor(norm)
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)  # free the memory before the D step
        set_requires_grad(self.discriminators, True)
        return logged, predictions

    def _grad_scale(self) -> float:
        """Return the float16 GradScaler's current loss scale (1 without one)."""
        plugin = getattr(self._trainer, "precision_plugin", None) if self._trainer else None
        scaler = getattr(plugin, "scaler", None)
        return float(scaler.get_scale()) if scaler is not None else 1.0

    def _check_adversarial_gradients(
        self, terms: list[WeightedTerm], norms: dict[str, float]
    ) -> None:
        """Warn once per term when an adversarial term sends no (or a non-finite) gradient."""
        warned = self.__dict__.setdefault("_warned_terms", set())
        for term in terms:
            norm = norms.get(term.name)
            if not term.adversarial or norm is None or term.name in warned:
                continue
            if norm == 0 or not math.isfinite(norm):
                warned.add(term.name)
                warnings.warn(
                    f"The adversarial term '{term.name}' sends a gradient of norm {norm} to "
                    "the encoder: adversarial learning is not reaching the generator "
                    "(check the precision, the lambda values and the discriminator).",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def discriminator_step(
        self,
        batches: dict[str, dict[str, torch.Tensor]],
        predictions: dict[str, dict[str, torch.Tensor]],
        opt_d: Any,
        backward: Any = None,
    ) -> dict[str, torch.Tensor]:
        """Algorithm 1, D part: G frozen, every D_t updated with the sum over datasets."""
        if opt_d is None:
            return {}
        backward = backward or (lambda loss: loss.backward())
        set_requires_grad(self.generator, False)
        set_requires_grad(self.discriminators, True)
        self.discriminators.train()
        terms: dict[str, torch.Tensor] = {}
        total = None
        for role in self.plan.datasets:
            batch = self._prepare(role.name, batches[role.name])
            accuracies: dict[str, torch.Tensor] = {}
            parts = discriminator_losses(
                self.plan,
                role,
                predictions[role.name],
                batch,
                self.discriminators,
                self.num_classes,
                self.cfg.loss,
                accuracies=accuracies,
            )
            for key, value in parts.items():
                terms[f"{role.name}/D_{key}"] = value.detach()
                total = value if total is None else total + value
            for key, value in accuracies.items():
                terms[f"D_acc/{role.name}/{key}"] = value
        if total is not None:
            terms["loss_d"] = total.detach()
            opt_d.zero_grad(set_to_none=True)
            backward(total)
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
        set_requires_grad(self.generator, True)
        return terms

    def is_diagnostic(self, iteration: int) -> bool:
        """Whether this iteration measures every term's encoder gradient (logging steps)."""
        t = self.cfg.trainer
        return bool(t.grad_diagnostics) and t.log_every > 0 and (iteration + 1) % t.log_every == 0

    def iteration_index(self, batch_idx: int) -> int:
        """0-based iteration number (independent of Lightning's optimiser-step counter)."""
        return self.current_epoch * self.cfg.trainer.steps_per_epoch + batch_idx

    def reseed(self, iteration: int) -> None:
        """Seed every RNG from (seed, iteration, rank): dropout etc. are resumable exactly."""
        seed = mix_seed(self.cfg.seed, iteration, self.global_rank if self._trainer else 0)
        torch.manual_seed(seed)
        np.random.seed(seed % (2**32))
        random.seed(seed)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One Algorithm 1 iteration with Lightning's manual optimisation."""
        iteration = self.iteration_index(batch_idx)
        self.reseed(iteration)
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        opt_g, opt_d = opts[0], (opts[1] if len(opts) > 1 else None)
        scheds = self.lr_schedulers()
        scheds = scheds if isinstance(scheds, list) else [scheds]
        sched = scheds[0]
        terms, preds = self.generator_step(
            batch, opt_g, self.manual_backward, diagnostics=self.is_diagnostic(iteration)
        )
        sched.step()
        terms.update(self.discriminator_step(batch, preds, opt_d, self.manual_backward))
        for d_sched in scheds[1:]:  # the discriminators' poly schedule (AdaptSegNet)
            d_sched.step()
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, on_step=True, on_epoch=False)
        self.log("lr", sched.get_last_lr()[0], on_step=True, on_epoch=False)
        if len(scheds) > 1:
            self.log("lr_d", scheds[1].get_last_lr()[0], on_step=True, on_epoch=False)
        self.log(
            "loss_g", terms["loss_g"], prog_bar=True, on_step=True, on_epoch=False, logger=False
        )
        every = self.cfg.trainer.preview_every
        if (
            every
            and self.run_dir is not None
            and (iteration + 1) % every == 0
            and self.global_rank == 0
        ):
            self.write_preview(batch, preds, iteration + 1)

    # -- outputs ------------------------------------------------------------
    def write_preview(self, batches: dict[str, Any], preds: dict[str, Any], iteration: int) -> Path:
        """PNG of the first sample of every dataset: image, GT and prediction per task."""
        mean = torch.tensor(self.meta.mean).view(-1, 1, 1)
        std = torch.tensor(self.meta.std).view(-1, 1, 1)
        scale = self.meta.height_scale
        rows = []
        for role in self.plan.datasets:
            b = batches[role.name]
            image = (b["image"][0].detach().float().cpu() * std + mean).numpy()
            p = preds[role.name]
            h = b.get("height")
            ratio = self.height_ratios.get(role.name, 1.0)
            rows.append(
                PreviewRow(
                    name=role.name,
                    image=image,
                    mask=b["mask"][0].cpu().numpy() if "mask" in b else None,
                    pred_class=p["seg"][0].argmax(0).cpu().numpy() if "seg" in p else None,
                    height=None
                    if h is None
                    else (h[0].float().cpu().numpy().squeeze() * ratio * scale),
                    pred_height=None
                    if "height" not in p
                    else p["height"][0, 0].float().cpu().numpy() * scale,
                )
            )
        assert self.run_dir is not None
        return save_preview(
            self.run_dir / "previews" / f"iter_{iteration:07d}.png",
            rows,
            self.meta.classes,
            title=f"{self.plan.label} - iteration {iteration}",
        )

    def payload(self) -> dict[str, Any]:
        """Return the checkpoint-contract dict (generator, metadata, resolved config)."""
        return checkpoint_payload(self.generator, self.meta, self.cfg.to_dict())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the contract payload so Lightning checkpoints load like ``model.pt``."""
        checkpoint[CHECKPOINT_KEY] = self.payload()


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O in the code-free format of :mod:`semimtl_geo.checkpoint_file`.

    Saving never leaves a half-written file (temporary name, then rename). Loading, which
    ``trainer.fit(ckpt_path=...)`` does on ``--resume``, never unpickles: whatever
    ``weights_only`` Lightning asks for, the file is parsed as JSON plus raw tensor bytes.

    Args:
        preloaded: ``(path, checkpoint)`` already read by :func:`train` (which checks a
            resume checkpoint before it writes anything); handed to Lightning once instead
            of reading the file a second time.

    """

    def __init__(self, preloaded: tuple[Path, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self._preloaded = preloaded

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        """Write ``checkpoint`` to a temporary file, then rename it over ``path``."""
        write_checkpoint_file(checkpoint, path)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read a checkpoint without unpickling anything (tensors on the CPU)."""
        if self._preloaded is not None and Path(path).resolve() == self._preloaded[0].resolve():
            checkpoint, self._preloaded = self._preloaded[1], None
            return checkpoint
        return read_checkpoint_file(path)


#: What Lightning needs in a checkpoint to resume a run.
RESUME_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "loops", "epoch", "global_step")


def read_resume_checkpoint(path: Path) -> dict[str, Any]:
    """Read and check ``checkpoints/last.ckpt`` before a run is resumed from it.

    Raises:
        UserError: missing, pickled, damaged or model-only files, in one sentence.

    """
    if not path.is_file():
        raise UserError(
            f"Nothing to resume: '{path}' does not exist; start the run without --resume."
        )
    checkpoint = read_checkpoint_file(path)
    if not isinstance(checkpoint, dict) or not all(k in checkpoint for k in RESUME_KEYS):
        raise UserError(
            f"'{path}' is not a training checkpoint (it lacks Lightning's optimiser and loop "
            "state); resume only from the last.ckpt that 'semimtl-geo train' wrote there."
        )
    return checkpoint


class EpochCheckpoint(Callback):
    """Save ``checkpoints/last.ckpt`` at the end of every epoch (= every steps_per_epoch)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning hook."""
        trainer.save_checkpoint(self.path, weights_only=False)  # full state, for --resume


@dataclass
class TrainResult:
    """Where a finished run put its outputs."""

    run_dir: Path
    checkpoint: Path
    model_path: Path
    module: SemiMTLModule


def resolve_precision(cfg: TrainConfig) -> str:
    """``auto``: bf16 autocast on a CUDA GPU, fp32 otherwise."""
    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    gpu = torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    return "bf16-mixed" if gpu else "32-true"


#: What a training run writes in its folder (``--overwrite`` removes exactly these).
RUN_ENTRIES = ("config.yaml", "model.pt", "model.stac.json", "checkpoints", "logs", "previews")


def existing_run_entries(run_dir: Path) -> list[str]:
    """Names of :data:`RUN_ENTRIES` present in ``run_dir``."""
    return [name for name in RUN_ENTRIES if (run_dir / name).exists()]


def clear_run(run_dir: Path) -> None:
    """Delete a run's own outputs (:data:`RUN_ENTRIES`); other files in the folder stay."""
    for name in RUN_ENTRIES:
        target = run_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def check_hardware(cfg: TrainConfig) -> None:
    """Refuse accelerators and device counts this machine does not have, in one sentence.

    Raises:
        UserError: a GPU/MPS accelerator that is not available, or more GPUs than present.

    """
    t = cfg.trainer
    if t.accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"trainer.accelerator is '{t.accelerator}' but no CUDA GPU is available; "
                "use --accelerator cpu (or auto)."
            )
        if t.devices > torch.cuda.device_count():
            raise UserError(
                f"trainer.devices is {t.devices} but this machine has "
                f"{torch.cuda.device_count()} CUDA GPU(s); pass --devices "
                f"{torch.cuda.device_count()} or fewer."
            )
    if t.accelerator == "mps" and not torch.backends.mps.is_available():
        raise UserError(
            "trainer.accelerator is 'mps' but Apple's MPS is not available; use --accelerator cpu."
        )


def _is_rank_zero() -> bool:
    """Whether this process is the first of a (possibly distributed) launch."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    callbacks: list[Callback] | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (or continue the run there with ``resume=True``).

    A folder that already holds a run is refused unless ``resume`` (continue it) or
    ``overwrite`` (its :data:`RUN_ENTRIES` are deleted once the new config has been
    checked against its datasets; other files stay). A run that fails before writing its
    first checkpoint leaves no stub behind: what it wrote is removed again.

    Raises:
        UserError: an existing run without resume/overwrite, an unwritable run folder,
            unavailable hardware, nothing to resume, data problems reported by the
            dataset kinds.

    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise UserError("--resume continues a run and --overwrite replaces it; pass only one.")
    check_output_dir(run_dir, "Run folder")
    # Only rank zero judges the folder: under torchrun the other ranks start while rank
    # zero may already be writing the new run there, and would refuse their own run.
    existing = existing_run_entries(run_dir) if _is_rank_zero() else []
    if existing and not resume and not overwrite:
        raise UserError(
            f"'{run_dir}' already holds a training run ({', '.join(existing)}); pass --resume "
            "to continue it, --overwrite to replace it, or choose another -o folder."
        )
    check_hardware(cfg)
    if overwrite and existing:
        plan = plan_method(cfg)  # a config that cannot start must not cost the old run
        build_meta(cfg, plan, describe_datasets(cfg, plan))
        clear_run(run_dir)
    created = not run_dir.exists()
    threads = torch.get_num_threads()  # trainer.cpu_threads applies to this run only
    try:
        return _train_into(cfg, run_dir, resume, callbacks)
    except BaseException:
        first_checkpoint = (run_dir / "checkpoints" / "last.ckpt").exists()
        if not resume and not first_checkpoint and _is_rank_zero():
            clear_run(run_dir)  # a failed start leaves no stub run behind
            if created and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
        raise
    finally:
        torch.set_num_threads(threads)


def _train_into(
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
    callbacks: list[Callback] | None,
) -> TrainResult:
    """Run the body of :func:`train` once the run folder has been checked."""
    ckpt_path = run_dir / "checkpoints" / "last.ckpt"
    resume_state = read_resume_checkpoint(ckpt_path) if resume else None
    plan = plan_method(cfg)
    infos = describe_datasets(cfg, plan)
    meta = build_meta(cfg, plan, infos)
    model_scale = meta.height_scale
    ratios = {
        role.name: float(infos[role.name].height_scale) / model_scale
        for role in plan.datasets
        if "height" in role.labelled
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    if _is_rank_zero():
        # The other ranks of a torchrun launch may start before rank zero has judged the
        # folder; a config.yaml written by them would make rank zero refuse its own run.
        save_config(cfg, run_dir / "config.yaml")
    if t_threads := cfg.trainer.cpu_threads:
        torch.set_num_threads(t_threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = SemiMTLModule(cfg, meta, ratios, run_dir)
    t = cfg.trainer
    # one log folder per session (a resumed run must not overwrite the earlier metrics.csv)
    session = f"version_{len(list((run_dir / 'logs').glob('version_*')))}"
    # Several processes (devices x nodes, started by torchrun/srun or by Lightning): DDP.
    distributed = t.devices * t.num_nodes > 1
    strategy: Any = "ddp_find_unused_parameters_true" if distributed else "auto"
    trainer = pl.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=resolve_precision(cfg),  # type: ignore[arg-type]
        max_epochs=math.ceil(t.max_steps / t.steps_per_epoch),
        max_steps=-1,
        logger=[
            CSVLogger(run_dir, name="logs", version=session),
            TensorBoardLogger(run_dir, name="logs", version=session, default_hp_metric=False),
        ],
        callbacks=[EpochCheckpoint(ckpt_path), *(callbacks or [])],
        plugins=[SafeCheckpointIO((ckpt_path, resume_state) if resume_state else None)],
        enable_checkpointing=False,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=max(1, t.log_every),
        reload_dataloaders_every_n_epochs=1,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=run_dir,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
        trainer.fit(module, ckpt_path=str(ckpt_path) if resume else None)
    model_path = run_dir / "model.pt"
    if trainer.is_global_zero:
        if t.precise_bn_batches:
            module.precise_bn(t.precise_bn_batches, trainer.strategy.root_device)
        save_model_checkpoint(model_path, module.generator, module.meta, cfg.to_dict())
        write_checkpoint_card(model_path, module.generator, module.meta, cfg.to_dict())
    return TrainResult(run_dir, ckpt_path, model_path, module)
