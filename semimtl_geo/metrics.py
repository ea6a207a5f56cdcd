"""Streaming evaluation metrics (paper section 4.1, eq. 10).

Both metric classes accumulate sufficient statistics with ``update`` so that whole tiles
can be evaluated window by window, then report with ``compute``.

Segmentation (from a confusion matrix, ignore pixels excluded):
    pAcc = correct / labelled pixels; IoU_c = TP / (TP + FP + FN);
    F1_c = 2 TP / (2 TP + FP + FN); mIoU and mean F1 average over the classes that
    appear in the reference or the prediction (a class absent from both has no IoU and
    is reported as ``None``, not 0).

Height (Eigen et al. metrics, the paper's [14, 16]):
    The *valid mask* is: reference finite and not nodata. RMSE uses every valid pixel,
    ground (0) included. AbsRel and delta_i divide by the reference, so they use the
    valid references ``> 0`` (the paper's definition: near-ground references a few
    centimetres high count, which is why its AbR values on ISPRS are 1.3-6.9).
    AbsRel = mean(|p - y| / y); RMSE = sqrt(mean((p - y)^2));
    delta_i = % of pixels with max(p / y, y / p) < 1.25^i, where predictions <= 0
    count as failures (the ratio is undefined).
    A *robust* variant, reported separately under ``*_robust`` keys, restricts AbsRel and
    delta_i to references ``> min_height`` (e.g. 0.5 m: ground pixels left out).
    ``r``: Pearson's correlation between prediction and reference over every valid pixel
    (as RMSE); it says whether a model ranks heights right even when their scale is off
    (an untrained or constant predictor scores about 0), which is how an unlabelled
    height task is judged above chance. Sums are accumulated about a running shift so
    that large sums of squares do not cancel.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from semimtl_geo.classes import IGNORE_INDEX

ArrayLike = np.ndarray | torch.Tensor


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return (
            x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
        )
    return np.asarray(x)


@dataclass
class SegmentationMetrics:
    """Confusion-matrix segmentation metrics: pAcc, mIoU, per-class IoU and F1."""

    num_classes: int
    ignore_index: int = IGNORE_INDEX
    confusion: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.confusion[:] = 0

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add a prediction (class ids, same shape as ``target``) to the confusion matrix.

        Rows are reference classes, columns predicted classes. Pixels whose reference is
        ``ignore_index`` (or outside ``0..num_classes-1``) are skipped; predictions must be
        valid class ids.
        """
        p = _np(pred).astype(np.int64).ravel()
        t = _np(target).astype(np.int64).ravel()
        if p.shape != t.shape:
            raise ValueError(f"prediction and target sizes differ: {p.shape} vs {t.shape}")
        keep = (t != self.ignore_index) & (t >= 0) & (t < self.num_classes)
        p, t = p[keep], t[keep]
        if p.size and (p.min() < 0 or p.max() >= self.num_classes):
            raise ValueError(f"predicted class ids must lie in 0..{self.num_classes - 1}")
        idx = t * self.num_classes + p
        self.confusion += np.bincount(idx, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def merge(self, other: "SegmentationMetrics") -> None:
        """Add another accumulator's counts (e.g. from another process)."""
        self.confusion += other.confusion

    def compute(self) -> dict:
        """Return pAcc, mIoU, mean F1 (percent) and per-class IoU/F1 lists (``None`` = absent)."""
        cm = self.confusion.astype(np.float64)
        total = cm.sum()
        tp = np.diag(cm)
        fp = cm.sum(axis=0) - tp
        fn = cm.sum(axis=1) - tp
        union = tp + fp + fn
        present = union > 0
        iou = np.where(present, tp / np.maximum(union, 1), np.nan)
        f1 = np.where(present, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)
        return {
            "pAcc": float(100 * tp.sum() / total) if total else float("nan"),
            "mIoU": float(100 * np.nanmean(iou)) if present.any() else float("nan"),
            "mF1": float(100 * np.nanmean(f1)) if present.any() else float("nan"),
            "IoU": [None if np.isnan(v) else float(100 * v) for v in iou],
            "F1": [None if np.isnan(v) else float(100 * v) for v in f1],
            "pixels": int(total),
        }


@dataclass
class HeightMetrics:
    """Streaming AbsRel, RMSE and delta_1..3 over a documented valid mask.

    Args:
        min_height: threshold of the robust variant: ``AbsRel_robust`` and
            ``delta{i}_robust`` use references ``> min_height`` only. The paper's
            ``AbsRel`` and ``delta{i}`` always use every valid reference ``> 0``.
        nodata: optional reference value that marks missing pixels (NaN always does).

    """

    min_height: float = 0.0
    nodata: float | None = None
    _sq: float = 0.0
    _n_all: int = 0
    _absrel: list[float] = field(default_factory=lambda: [0.0, 0.0])
    _n_pos: list[int] = field(default_factory=lambda: [0, 0])
    _delta: list[list[int]] = field(default_factory=lambda: [[0, 0, 0], [0, 0, 0]])
    #: sum of p, y, p*p, y*y, p*y over every valid pixel, after subtracting ``_shift``
    _moments: list[float] = field(default_factory=lambda: [0.0] * 5)
    _shift: tuple[float, float] | None = None

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._sq, self._n_all = 0.0, 0
        self._moments, self._shift = [0.0] * 5, None
        self._absrel, self._n_pos = [0.0, 0.0], [0, 0]
        self._delta = [[0, 0, 0], [0, 0, 0]]

    def update(self, pred: ArrayLike, target: ArrayLike, valid: ArrayLike | None = None) -> None:
        """Accumulate statistics for one chunk (same units for ``pred`` and ``target``)."""
        p = _np(pred).astype(np.float64).ravel()
        y = _np(target).astype(np.float64).ravel()
        if p.shape != y.shape:
            raise ValueError(f"prediction and target sizes differ: {p.shape} vs {y.shape}")
        ok = np.isfinite(y) & np.isfinite(p)
        if self.nodata is not None:
            ok &= y != self.nodata
        if valid is not None:
            ok &= _np(valid).astype(bool).ravel()
        p, y = p[ok], y[ok]
        self._sq += float(((p - y) ** 2).sum())
        self._n_all += int(p.size)
        if p.size:
            if self._shift is None:
                self._shift = (float(p.mean()), float(y.mean()))
            self._add_moments(p - self._shift[0], y - self._shift[1])
        # 0: the paper's references > 0; 1: the robust references > min_height
        for k, threshold in enumerate((0.0, max(0.0, self.min_height))):
            pos = y > threshold
            pp, yp = p[pos], y[pos]
            self._absrel[k] += float((np.abs(pp - yp) / yp).sum())
            self._n_pos[k] += int(yp.size)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(
                    pp > 0, np.maximum(pp / yp, yp / np.where(pp > 0, pp, 1.0)), np.inf
                )
            for i in range(3):
                self._delta[k][i] += int((ratio < 1.25 ** (i + 1)).sum())

    def _add_moments(self, p: np.ndarray, y: np.ndarray) -> None:
        for i, v in enumerate((p.sum(), y.sum(), (p * p).sum(), (y * y).sum(), (p * y).sum())):
            self._moments[i] += float(v)

    def merge(self, other: "HeightMetrics") -> None:
        """Add another accumulator's sums."""
        if other._n_all:
            if self._shift is None:
                self._shift = other._shift
            # re-centre the other's moments on our shift: (p - a) = (p - b) + (b - a)
            assert other._shift is not None and self._shift is not None
            dp = other._shift[0] - self._shift[0]
            dy = other._shift[1] - self._shift[1]
            n = other._n_all
            sp, sy, spp, syy, spy = other._moments
            self._moments[0] += sp + n * dp
            self._moments[1] += sy + n * dy
            self._moments[2] += spp + 2 * dp * sp + n * dp * dp
            self._moments[3] += syy + 2 * dy * sy + n * dy * dy
            self._moments[4] += spy + dp * sy + dy * sp + n * dp * dy
        self._sq += other._sq
        self._n_all += other._n_all
        for k in range(2):
            self._absrel[k] += other._absrel[k]
            self._n_pos[k] += other._n_pos[k]
            self._delta[k] = [a + b for a, b in zip(self._delta[k], other._delta[k])]

    def _pearson(self) -> float:
        n = self._n_all
        if n < 2:
            return float("nan")
        sp, sy, spp, syy, spy = self._moments
        cov = spy - sp * sy / n
        var_p, var_y = spp - sp * sp / n, syy - sy * sy / n
        if var_p <= 0 or var_y <= 0:
            return float("nan")  # a constant prediction or reference has no correlation
        return float(np.clip(cov / np.sqrt(var_p * var_y), -1.0, 1.0))

    def compute(self) -> dict:
        """Return AbsRel, RMSE (units of the inputs), Pearson r, delta1..3 (%), robust variants."""
        nan = float("nan")
        out: dict = {
            "RMSE": float(np.sqrt(self._sq / self._n_all)) if self._n_all else nan,
            "pixels": self._n_all,
            "min_height": float(self.min_height),
            "r": self._pearson(),
        }
        for k, suffix in enumerate(("", "_robust")):
            n = self._n_pos[k]
            out[f"AbsRel{suffix}"] = self._absrel[k] / n if n else nan
            out[f"pixels_positive{suffix}"] = n
            for i in range(3):
                out[f"delta{i + 1}{suffix}"] = 100 * self._delta[k][i] / n if n else nan
        return out


#: Which direction is better for each representative measure of eq. 10.
LOWER_IS_BETTER: dict[str, bool] = {"mIoU": False, "pAcc": False, "RMSE": True, "AbsRel": True}


def delta_m(
    model: Mapping[str, float],
    baseline: Mapping[str, float],
    lower_is_better: Mapping[str, bool] | None = None,
) -> float:
    """Multi-task gain ΔM of eq. 10, in percent.

    ``ΔM = 1/|T| * sum_t (-1)^{l_t} (M_m,t - M_b,t) / M_b,t`` with ``l_t = 1`` when a lower
    measure is better. ``model`` and ``baseline`` map a measure name per task (the paper
    uses ``mIoU`` for segmentation and ``RMSE`` for height) to its value. A positive ΔM
    means the model beats the single-task baselines.
    """
    lower = dict(LOWER_IS_BETTER, **(lower_is_better or {}))
    keys = [k for k in model if k in baseline]
    if not keys:
        raise ValueError("delta_m needs at least one measure present in both model and baseline")
    total = 0.0
    for key in keys:
        if key not in lower:
            raise ValueError(f"delta_m does not know whether lower '{key}' is better")
        b = float(baseline[key])
        if b == 0:
            raise ValueError(f"baseline {key} is 0; ΔM is undefined")
        sign = -1.0 if lower[key] else 1.0
        total += sign * (float(model[key]) - b) / b
    return 100.0 * total / len(keys)
