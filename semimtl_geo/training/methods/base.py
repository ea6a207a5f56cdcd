"""The :class:`Method` base class, its fixed hooks and the registry of methods by name.

One engine (:mod:`semimtl_geo.training.engine`) trains every method of the paper
(section 3, Algorithm 1); what differs between methods is captured by the hooks of one
class per method, as torchgeo's trainers override ``configure_models`` /
``configure_losses``:

* :meth:`Method.select` -- which datasets take part and which tasks they label
  (the :class:`MethodPlan`);
* :attr:`Method.discriminator` / :meth:`Method.d_outputs` -- which discriminators exist
  (none, one binary D_t per task, or the domain-aware (K+1)-way D_t of eq. 2);
* :meth:`Method.adversarial_terms` -- its generator terms beyond the supervised ``w_t L_gt``
  of eq. 1 (eqs. 3-8);
* :meth:`Method.discriminator_terms` / :meth:`Method.accuracies` -- its discriminator
  terms (eq. 6) and the D accuracies logged as diagnostics.

A class registers itself by name with :func:`register_method`; the config's ``method``
key, the CLI's ``--method`` choices and the tables' row labels all come from this
registry, so adding a method is one class (plus a config file that uses it).

Discriminator inputs: segmentation predictions as softmax probabilities and ground truth
as one-hot maps (ignored pixels all-zero); height as the 1-channel map, where no-data
(NaN) ground-truth pixels are filled with ``loss.height_fill`` (0 = ground level).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import nn

from semimtl_geo.errors import UserError
from semimtl_geo.losses import (
    berhu_loss,
    lovasz_softmax_loss,
    one_hot_target,
    seg_to_discriminator_input,
    segmentation_loss,
)
from semimtl_geo.tasks import TASK_KEYS, TASKS
from semimtl_geo.training.backward import WeightedTerm

DiscriminatorKind = Literal["none", "binary", "domain"]


class DatasetSpec(Protocol):
    """What a method needs to know of a configured dataset (``DatasetConfig``)."""

    name: str
    tasks: list[str]


class LossWeights(Protocol):
    """The loss settings a method reads (``LossConfig``: eq. 1 and eq. 7 weights)."""

    w_seg: float
    w_height: float
    lambda_intra: float
    lambda_inter: float
    lambda_da: float
    berhu_ratio: float
    height_fill: float
    seg_class_weights: Sequence[float] | None
    seg_lovasz_weight: float


class PlannedConfig(Protocol):
    """The parts of a ``TrainConfig`` a plan is derived from (``data.datasets``)."""

    method: str
    mode: str
    data: Any


@dataclass(frozen=True)
class DatasetRole:
    """How one dataset takes part in a method.

    Attributes:
        name: dataset name from the config.
        index: position in ``config.data.datasets``.
        domain: discriminator class ``k`` of this dataset's predictions (1-based).
        labelled: tasks supervised on this dataset.
        unlabelled: generator tasks predicted here without labels (adversarial only).

    """

    name: str
    index: int
    domain: int
    labelled: tuple[str, ...]
    unlabelled: tuple[str, ...]

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task predicted on this dataset during training."""
        return tuple(t for t in TASKS if t in self.labelled or t in self.unlabelled)


@dataclass(frozen=True)
class MethodPlan:
    """What a method trains: generator tasks, datasets and their roles, discriminators.

    Attributes:
        method: registered method name (``config.method``).
        mode: SemiMTL inter-domain mode (eq. 4, 5, 8); ignored by the other methods.
        tasks: generator heads.
        datasets: the datasets taking part, in config order.
        discriminator: kind of discriminators (none, binary, domain-aware).
        labelled_domain: per task, the domain ``k`` of the first dataset labelled for it.
        d_tasks: tasks that have a discriminator D_t.
        d_outputs: logits per pixel of every D_t (K + 1 domain-aware, 1 binary).
        label: row name as in the paper's tables, e.g. ``SemiMTL (M2)``.

    """

    method: str
    mode: str
    tasks: tuple[str, ...]
    datasets: tuple[DatasetRole, ...]
    discriminator: DiscriminatorKind
    labelled_domain: Mapping[str, int]
    d_tasks: tuple[str, ...] = ()
    d_outputs: int = 1
    label: str = ""

    @property
    def num_domains(self) -> int:
        """K, the number of datasets taking part."""
        return len(self.datasets)

    @property
    def impl(self) -> "Method":
        """The registered :class:`Method` that made this plan."""
        return get_method(self.method)


# ------------------------------------------------------------------- D inputs


def prediction_to_d(task: str, pred: torch.Tensor) -> torch.Tensor:
    """Return a prediction as D sees it: softmax probabilities (seg) or the height map."""
    return seg_to_discriminator_input(pred) if task == "seg" else pred.float()


def discriminate(disc: nn.Module, d_input: torch.Tensor) -> torch.Tensor:
    """Run a discriminator in fp32, outside any autocast region.

    The adversarial path is the small one (eqs. 3-8 weigh 1e-3/1e-4): computing D and its
    gradient w.r.t. the prediction in fp32 keeps bf16/fp16 rounding out of the signal
    the generator receives, for the cost of the (small) discriminator alone.
    """
    with torch.autocast(d_input.device.type, enabled=False):
        return disc(d_input.float())


def target_to_d(
    task: str, target: torch.Tensor, num_classes: int, height_fill: float
) -> torch.Tensor:
    """Ground truth as D sees it: one-hot (seg) or the 1-channel height with NaN filled."""
    if task == "seg":
        return one_hot_target(target, num_classes)
    height = target.float()
    if height.ndim == 3:
        height = height.unsqueeze(1)
    return torch.nan_to_num(height, nan=height_fill, posinf=height_fill, neginf=height_fill)


def height_target(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Return the batch's height labels as ``B x H x W``."""
    h = batch["height"]
    return h[:, 0] if h.ndim == 4 else h


def check_batch(role: DatasetRole, batch: Mapping[str, torch.Tensor]) -> None:
    """Fail clearly when a dataset's loader lacks the labels its config declares."""
    for task in role.labelled:
        if TASK_KEYS[task] not in batch:
            raise UserError(
                f"Dataset '{role.name}' declares '{task}' labels but its batches have no "
                f"'{TASK_KEYS[task]}'; remove '{task}' from its tasks or fix the data."
            )


# ------------------------------------------------------------------- the base class


class Method:
    """One training method: a name, a table label and the hooks the engine calls.

    Subclasses set :attr:`name` and :attr:`label`, register with
    :func:`register_method`, and override only what differs. The defaults describe
    joint task learning (JTL): every dataset takes part with its labelled tasks, the
    generator has every labelled task, no discriminator.
    """

    #: Registered name (the config's ``method`` value).
    name: ClassVar[str] = ""
    #: Row label in the paper's tables.
    label: ClassVar[str] = ""
    #: Discriminators: ``none``, one binary D_t per task, or the (K+1)-way D_t of eq. 2.
    discriminator: ClassVar[DiscriminatorKind] = "none"
    #: Whether the D sees ground truth of the labelled datasets (not for AdaptSegNet DA).
    d_sees_ground_truth: ClassVar[bool] = True
    #: Whether ``config.mode`` (M1/M2/M3) changes the method (labels and run names show it).
    uses_mode: ClassVar[bool] = False

    # -- hook: datasets and tasks ---------------------------------------------
    def select(
        self, specs: Sequence[DatasetSpec]
    ) -> tuple[tuple[str, ...], tuple[DatasetRole, ...]]:
        """Return the generator tasks and the roles of the datasets taking part.

        Raises:
            UserError: the datasets cannot support the method.

        """
        tasks = tuple(t for t in TASKS if any(t in d.tasks for d in specs))
        roles = tuple(
            DatasetRole(
                name=d.name,
                index=i,
                domain=i + 1,
                labelled=tuple(t for t in tasks if t in d.tasks),
                unlabelled=tuple(t for t in tasks if t not in d.tasks),
            )
            for i, d in enumerate(specs)
        )
        return tasks, roles

    # -- hook: discriminators -------------------------------------------------
    def discriminator_tasks(self, tasks: tuple[str, ...]) -> tuple[str, ...]:
        """Tasks that get a discriminator D_t (all of them unless there is no D)."""
        return () if self.discriminator == "none" else tasks

    def d_outputs(self, num_domains: int) -> int:
        """Logits per pixel of every D_t: K + 1 (domain-aware, eq. 2) or 1 (binary)."""
        return num_domains + 1 if self.discriminator == "domain" else 1

    def row_label(self, mode: str) -> str:
        """Row name as in the paper's tables (``SemiMTL (M2)`` when the mode matters)."""
        return f"{self.label} ({mode.upper()})" if self.uses_mode else self.label

    def plan(self, cfg: PlannedConfig) -> MethodPlan:
        """Derive the :class:`MethodPlan` of this method from the datasets' labelled tasks."""
        specs = cfg.data.datasets
        if not any(t in d.tasks for d in specs for t in TASKS):
            raise UserError(
                "No dataset in 'data.datasets' declares labelled tasks; "
                "set 'tasks: [seg]' or '[height]'."
            )
        tasks, roles = self.select(specs)
        labelled_domain = {t: next(r.domain for r in roles if t in r.labelled) for t in tasks}
        return MethodPlan(
            method=self.name,
            mode=cfg.mode,
            tasks=tasks,
            datasets=roles,
            discriminator=self.discriminator,
            labelled_domain=labelled_domain,
            d_tasks=self.discriminator_tasks(tasks),
            d_outputs=self.d_outputs(len(roles)),
            label=self.row_label(cfg.mode),
        )

    # -- hook: generator terms ------------------------------------------------
    def supervised_terms(
        self,
        role: DatasetRole,
        outputs: Mapping[str, torch.Tensor],
        batch: Mapping[str, torch.Tensor],
        loss_cfg: LossWeights,
    ) -> list[WeightedTerm]:
        """``w_t L_gt`` (eq. 1) for every task labelled on this dataset."""
        terms: list[WeightedTerm] = []
        for task in role.labelled:
            if task == "seg":
                value = segmentation_loss(
                    outputs["seg"],
                    batch[TASK_KEYS["seg"]],
                    class_weights=loss_cfg.seg_class_weights,
                )
                terms.append(WeightedTerm(f"{task}/sup", loss_cfg.w_seg, value))
                if loss_cfg.seg_lovasz_weight > 0:
                    lovasz = lovasz_softmax_loss(outputs["seg"], batch[TASK_KEYS["seg"]])
                    terms.append(WeightedTerm(
                        f"{task}/lovasz", loss_cfg.w_seg * loss_cfg.seg_lovasz_weight, lovasz))
            else:
                value = berhu_loss(
                    outputs["height"][:, 0],
                    height_target(batch),
                    threshold_ratio=loss_cfg.berhu_ratio,
                )
                terms.append(WeightedTerm(f"{task}/sup", loss_cfg.w_height, value))
        return terms

    def adversarial_terms(
        self,
        plan: MethodPlan,
        role: DatasetRole,
        task: str,
        logits: torch.Tensor,
        loss_cfg: LossWeights,
    ) -> list[WeightedTerm]:
        """Return the generator terms from D_t's ``logits`` on this prediction (eqs. 3-8)."""
        return []

    def generator_terms(
        self,
        plan: MethodPlan,
        role: DatasetRole,
        outputs: Mapping[str, torch.Tensor],
        batch: Mapping[str, torch.Tensor],
        discriminators: Mapping[str, nn.Module],
        loss_cfg: LossWeights,
    ) -> list[WeightedTerm]:
        """Supervised terms, then the adversarial terms of every task with a D_t."""
        terms = self.supervised_terms(role, outputs, batch, loss_cfg)
        for task in role.tasks:
            if task not in plan.d_tasks:
                continue
            logits = discriminate(discriminators[task], prediction_to_d(task, outputs[task]))
            terms.extend(self.adversarial_terms(plan, role, task, logits, loss_cfg))
        return terms

    # -- hook: discriminator terms --------------------------------------------
    def discriminator_terms(
        self,
        plan: MethodPlan,
        role: DatasetRole,
        task: str,
        pred_logits: torch.Tensor,
        gt_logits: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """D_t's terms on one dataset's batch (keys ``pred`` and ``gt``; eq. 6).

        A method without discriminators has none; :func:`register_method` refuses a method
        that declares discriminators without overriding this hook.
        """
        return {}

    def accuracies(
        self,
        plan: MethodPlan,
        role: DatasetRole,
        task: str,
        pred_logits: torch.Tensor,
        gt_logits: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """D_t's pixel accuracies on one dataset's batch (is adversarial learning alive?)."""
        return {}


# ------------------------------------------------------------------- registry

_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available as ``method: <cls.name>``."""
    if not cls.name or not cls.label:
        raise TypeError(f"{cls.__name__} needs a 'name' and a 'label'")  # programming error
    if cls.discriminator != "none" and cls.discriminator_terms is Method.discriminator_terms:
        raise TypeError(f"{cls.__name__} declares discriminators but does not define "
                        "discriminator_terms")  # programming error
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise TypeError(f"method name '{cls.name}' is already registered")  # programming error
    _METHODS[cls.name] = cls
    return cls


def unregister_method(name: str) -> None:
    """Remove a registered method (tests)."""
    _METHODS.pop(name, None)


def method_names() -> tuple[str, ...]:
    """Every registered method name, in registration order."""
    return tuple(_METHODS)


def get_method(name: str) -> Method:
    """Return an instance of the method registered as ``name``.

    Raises:
        UserError: no such method; the message lists the registered ones.

    """
    cls = _METHODS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise UserError(
            f"Config key 'method' must be one of {', '.join(_METHODS)}, got {name!r}."
        )
    return cls()


def method_label(name: str, mode: str = "m2") -> str | None:
    """Table row label of a method (``None`` for a name nothing registers)."""
    cls = _METHODS.get(name)
    return None if cls is None else cls().row_label(mode)


def method_uses_mode(name: str) -> bool:
    """Whether ``config.mode`` matters to the method (``False`` for unknown names)."""
    cls = _METHODS.get(name)
    return bool(cls is not None and cls.uses_mode)


class _Labels(Mapping[str, str]):
    """Read-only view ``{name: label}`` of the registry (always current)."""

    def __getitem__(self, key: str) -> str:
        return _METHODS[key].label

    def __iter__(self):  # noqa: ANN204 - Mapping protocol
        return iter(_METHODS)

    def __len__(self) -> int:
        return len(_METHODS)


#: ``{method name: table label}`` of every registered method.
METHOD_LABELS: Mapping[str, str] = _Labels()


def plan_method(cfg: PlannedConfig) -> MethodPlan:
    """Derive the :class:`MethodPlan` of ``cfg.method`` from the datasets' labelled tasks.

    Raises:
        UserError: unknown method, or datasets that cannot support it (e.g. ``stl_height``
            with no height-labelled dataset, ``da_seg`` with no unlabelled target dataset).

    """
    return get_method(cfg.method).plan(cfg)


# ------------------------------------------------------------------- engine entry points


def generator_terms(
    plan: MethodPlan,
    role: DatasetRole,
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    discriminators: Mapping[str, nn.Module],
    loss_cfg: LossWeights,
) -> list[WeightedTerm]:
    """Return the unweighted generator terms of one mini-batch (``L_G^t`` of Algorithm 1).

    Each :class:`~semimtl_geo.training.backward.WeightedTerm` carries its weight
    (``w_t`` of eq. 1 or a ``lambda`` of eq. 7) separately, so that the engine can
    backpropagate the small adversarial terms without losing them to mixed precision.
    ``sum(t.weight * t.value)`` is this dataset's contribution to eq. 9. Discriminators
    must be frozen by the caller (they only pass gradients back).
    """
    return plan.impl.generator_terms(plan, role, outputs, batch, discriminators, loss_cfg)


def generator_losses(
    plan: MethodPlan,
    role: DatasetRole,
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    discriminators: Mapping[str, nn.Module],
    loss_cfg: LossWeights,
) -> dict[str, torch.Tensor]:
    """Compute the generator terms of one mini-batch, already weighted, by name.

    The sum of the values is this dataset's contribution to eq. 9 (see
    :func:`generator_terms` for the unweighted terms the engine backpropagates).
    """
    return {
        t.name: t.weighted
        for t in generator_terms(plan, role, outputs, batch, discriminators, loss_cfg)
    }


def discriminator_losses(
    plan: MethodPlan,
    role: DatasetRole,
    predictions: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    discriminators: Mapping[str, nn.Module],
    num_classes: int,
    loss_cfg: LossWeights,
    accuracies: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Discriminator terms ``L_D^{t,k}`` of one dataset's mini-batch (eq. 6).

    ``predictions`` are the detached generator outputs of this iteration (the generator
    is frozen during the D step). When ``accuracies`` is given it receives, per task, the
    discriminator's pixel accuracies on this batch (:meth:`Method.accuracies`).
    """
    method = plan.impl
    terms: dict[str, torch.Tensor] = {}
    for task in role.tasks:
        if task not in plan.d_tasks:
            continue
        disc = discriminators[task]
        pred_logits = discriminate(disc, prediction_to_d(task, predictions[task].detach()))
        gt_logits = None
        if task in role.labelled and method.d_sees_ground_truth:
            gt = target_to_d(task, batch[TASK_KEYS[task]], num_classes, loss_cfg.height_fill)
            gt_logits = discriminate(disc, gt)
        for key, value in method.discriminator_terms(
            plan, role, task, pred_logits, gt_logits
        ).items():
            terms[f"{task}/{key}"] = value
        if accuracies is not None:
            for key, value in discriminator_accuracies(
                plan, role, task, pred_logits.detach(),
                None if gt_logits is None else gt_logits.detach(),
            ).items():
                accuracies[f"{task}/{key}"] = value
    return terms


def discriminator_accuracies(
    plan: MethodPlan,
    role: DatasetRole,
    task: str,
    pred_logits: torch.Tensor,
    gt_logits: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """Return D_t's pixel accuracies on one dataset's batch (fractions in [0, 1])."""
    return plan.impl.accuracies(plan, role, task, pred_logits, gt_logits)
