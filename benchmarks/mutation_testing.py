r"""Mutation testing of the core (mutmut): does the suite catch the method's own mistakes?

For each group of core modules the script copies the working tree into a scratch folder,
configures mutmut there (the modules to mutate, a fast test selection for that group),
runs ``mutmut run`` and reads the verdicts back. mutmut records which tests call each
function and runs only those against that function's mutants, in processes forked from
one that already imported torch, so a mutant costs the time of its few tests.

mutmut mutates code inside functions only (its trampolines wrap functions); module-level
constants such as the class tables are not mutated by it. The ``planted`` stage therefore
plants hand-written bugs (the ones found by hand in issue 18, the class-table swaps among
them) one at a time and runs the group's tests against each: every planted bug must fail.

Usage::

    python benchmarks/mutation_testing.py                      # every group + planted bugs
    python benchmarks/mutation_testing.py --groups losses metrics --max-children 2
    python benchmarks/mutation_testing.py --groups losses --survivors-only  # after a fix
    python benchmarks/mutation_testing.py --incremental        # only functions that changed
    python benchmarks/mutation_testing.py --report-only        # re-read finished runs
    python benchmarks/mutation_testing.py --groups inference --survivors-only --timeouts-only \
        --timeout-multiplier 240                               # slow pass or hang?

Results: ``benchmarks/results/mutation.md`` and ``mutation.json``. Scratch copies live in
``runs/mutation/<group>`` (ignored by git). Not run in CI: a full campaign takes about an
hour on two busy cores. Each surviving mutant is listed with its diff; the ones judged
equivalent (no input can tell them apart from the original) are annotated in
:data:`EQUIVALENT`, keyed by the function and the mutated line, with the reason.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import difflib
import fnmatch
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "runs" / "mutation"


@dataclass
class Group:
    """One module group: files mutmut mutates, mutants counted, the tests it runs."""

    name: str
    files: list[str]
    tests: list[str]
    #: fnmatch patterns of mutant names to run and count (default: every mutant of files)
    mutants: list[str] = field(default_factory=list)


MT = "tests/test_train_methods.py::"
ADVERSARIAL_TESTS = [
    "tests/test_losses.py",
    MT + "test_semimtl_terms_hand_computed_with_asymmetric_discriminator",
]
GROUPS = [
    Group(
        "losses",
        ["semimtl_geo/losses.py"],
        [
            "tests/test_losses.py",
            MT + "test_semimtl_terms_hand_computed_with_asymmetric_discriminator",
            MT + "test_semisd_and_da_terms_hand_computed_with_asymmetric_discriminator",
        ],
    ),
    Group(
        "methods",
        [
            "semimtl_geo/training/methods/base.py",
            "semimtl_geo/training/methods/stl.py",
            "semimtl_geo/training/methods/da.py",
            "semimtl_geo/training/methods/jtl.py",
            "semimtl_geo/training/methods/semisd.py",
            "semimtl_geo/training/methods/semimtl.py",
        ],
        # the engine-level tests (a full G and D step per method, or a training run) take
        # 5-10 s each and check parameters, not terms; the term, plan, D-input and registry
        # tests cover the methods package
        ["tests/test_train_methods.py", "tests/test_method_registry.py", "-k",
         "not one_iteration and not detached and not stl_step and not discriminator_labels"
         " and not semisd_labels and not da_labels and not one_class_and_a_config"
         " and not imports_flow"],
    ),
    Group("metrics", ["semimtl_geo/metrics.py"], ["tests/test_metrics.py"]),
    Group(
        "classes",
        [
            "semimtl_geo/classes.py",
            "semimtl_geo/data/isprs/prepare/labels.py",
            "semimtl_geo/inference/qml.py",
        ],
        ["tests/test_classes.py"],
        [
            "semimtl_geo.classes.*",
            "semimtl_geo.data.isprs.prepare.labels.x_colors_to_classes__mutmut_*",
            "semimtl_geo.inference.qml.x__hex__mutmut_*",
        ],
    ),
    Group(
        "inference",
        [
            "semimtl_geo/grid.py",
            "semimtl_geo/inference/windows.py",
            "semimtl_geo/inference/blending.py",
            "semimtl_geo/inference/predictor.py",
            "semimtl_geo/inference/engine.py",
        ],
        ["tests/test_predict_windows.py", "tests/test_grid.py",
         "tests/test_predict_engines.py::test_argmax_of_class_sums_matches_torch_with_ties"],
    ),
    Group(
        "engines",
        ["semimtl_geo/inference/engines.py"],
        # torch.compile (minutes), --devices worker processes, the CLI/COG tests and the
        # whole-image agreement runs (an ONNX export each) are left out: too slow to run
        # per mutant on the shared cores; the unit tests of the engines stay
        ["tests/test_predict_engines.py", "-k",
         "not compile_engine and not devices_spread and not cog_outputs and not cli_engine"
         " and not agrees_with_eager and not agreement_check"],
    ),
]

#: (function, mutated line) -> why the mutant is equivalent. Filled in from reading each
#: survivor; anything not listed here that survives is a gap in the tests.
EQUIVALENT: dict[tuple[str, str], str] = {
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'acc_w = np.zeros((win_h, width), None)',
    ): 'float64 instead of float32 accumulation changes only the last bits of the blended values, which leave the engine as float32; no test can demand float32 rounding',  # noqa: E501
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'acc_w = np.zeros((win_h, width), )',
    ): 'float64 instead of float32 accumulation changes only the last bits of the blended values, which leave the engine as float32; no test can demand float32 rounding',  # noqa: E501
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'acc_p = np.zeros((predictor.num_classes, win_h, width), np.float32) if (seg) or True else None',  # noqa: E501
    ): 'only allocates (and shifts) a buffer that is never read when the task is not predicted',
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'acc_p = np.zeros((predictor.num_classes, win_h, width), None) if seg else None',
    ): 'float64 instead of float32 accumulation changes only the last bits of the blended values, which leave the engine as float32; no test can demand float32 rounding',  # noqa: E501
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'acc_p = np.zeros((predictor.num_classes, win_h, width), ) if seg else None',
    ): 'float64 instead of float32 accumulation changes only the last bits of the blended values, which leave the engine as float32; no test can demand float32 rounding',  # noqa: E501
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'acc_h = np.zeros((win_h, width), np.float32) if (hgt) or True else None',
    ): 'only allocates (and shifts) a buffer that is never read when the task is not predicted',
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'acc_h = np.zeros((win_h, width), None) if hgt else None',
    ): 'float64 instead of float32 accumulation changes only the last bits of the blended values, which leave the engine as float32; no test can demand float32 rounding',  # noqa: E501
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'acc_h = np.zeros((win_h, width), ) if hgt else None',
    ): 'float64 instead of float32 accumulation changes only the last bits of the blended values, which leave the engine as float32; no test can demand float32 rounding',  # noqa: E501
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'valid = valid[:count] & (acc_w[:count] >= 0)',
    ): 'a valid pixel always lies in a window that runs (it is valid itself) and Hann weights are floored above 0, so acc_w > 0 wherever valid',  # noqa: E501
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'with np.errstate(invalid=None, divide="ignore"):',
    ): 'np.errstate only decides whether numpy warns about 0 / 0 or x / 0; the values are the same',
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'with np.errstate(invalid="ignore", divide=None):',
    ): 'np.errstate only decides whether numpy warns about 0 / 0 or x / 0; the values are the same',
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'with np.errstate(divide="ignore"):',
    ): 'np.errstate only decides whether numpy warns about 0 / 0 or x / 0; the values are the same',
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'with np.errstate(invalid="ignore", ):',
    ): 'np.errstate only decides whether numpy warns about 0 / 0 or x / 0; the values are the same',
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'probs[:, ~valid] = None',
    ): 'numpy stores None in a float array as NaN',
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'with ThreadPoolExecutor(thread_name_prefix="semimtl-read") as pool:',
    ): 'at most one strip read is pending at a time (the next is submitted after the current one is taken), so more workers change nothing',  # noqa: E501
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'with ThreadPoolExecutor(max_workers=None, thread_name_prefix="semimtl-read") as pool:',
    ): 'at most one strip read is pending at a time (the next is submitted after the current one is taken), so more workers change nothing',  # noqa: E501
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'with ThreadPoolExecutor(max_workers=2, thread_name_prefix="semimtl-read") as pool:',
    ): 'at most one strip read is pending at a time (the next is submitted after the current one is taken), so more workers change nothing',  # noqa: E501
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'with ThreadPoolExecutor(max_workers=1, thread_name_prefix=None) as pool:',
    ): 'the prefix only names the reader thread for debuggers',
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'with ThreadPoolExecutor(max_workers=1, thread_name_prefix="XXsemimtl-readXX") as pool:',
    ): 'the prefix only names the reader thread for debuggers',
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'with ThreadPoolExecutor(max_workers=1, thread_name_prefix="SEMIMTL-READ") as pool:',
    ): 'the prefix only names the reader thread for debuggers',
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'with ThreadPoolExecutor(max_workers=1, ) as pool:',
    ): 'the prefix only names the reader thread for debuggers',
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'height[~valid] = None',
    ): 'numpy stores None in a float array as NaN',
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'flush(row, grid.height + row, valid)',
    ): 'the last window row ends at the raster edge, so grid.height - row is the whole strip, and an oversize or open slice gives the same rows',  # noqa: E501
    (
        'semimtl_geo.inference.engine.run_sliding_windows',
        'flush(row, None, valid)',
    ): 'the last window row ends at the raster edge, so grid.height - row is the whole strip, and an oversize or open slice gives the same rows',  # noqa: E501
    (
        'semimtl_geo.inference.predictor.WindowPredictor.__init__',
        'self._std = torch.as_tensor(std, device=self.device).view(-1, 1, 1)',
    ): 'a C x 1 x 1 tensor broadcasts against N x C x H x W exactly like 1 x C x 1 x 1',
    (
        'semimtl_geo.inference.predictor.WindowPredictor.__init__',
        'self._mean = torch.as_tensor(mean, device=self.device).view(-1, 1, 1)',
    ): 'a C x 1 x 1 tensor broadcasts against N x C x H x W exactly like 1 x C x 1 x 1',
    (
        "semimtl_geo.training.methods.da.DomainAdaptation.discriminator_terms",
        'return {"pred": binary_adversarial_loss(pred_logits, is_real=None)}',
    ): "the target is 1.0 if is_real else 0.0, and None is falsy like False",
    (
        "semimtl_geo.training.methods.semisd.SemiSD.discriminator_terms",
        'terms = {"pred": binary_adversarial_loss(pred_logits, is_real=None)}',
    ): "the target is 1.0 if is_real else 0.0, and None is falsy like False",
    (
        "semimtl_geo.training.methods.base.method_label",
        'def method_label(name: str, mode: str = "M2") -> str | None:',
    ): "Method.row_label upper-cases the mode (no built-in method overrides it): m2 and M2 "
       "give the same label",
    (
        "semimtl_geo.classes.ClassTable.lut",
        "lut = np.zeros((257, 3), dtype=np.uint8)",
    ): "ids are mapped into 0..255 before indexing, so a 257th row is never read",
    (
        "semimtl_geo.classes.ClassTable.colorize",
        "return self.lut()[np.where((ids >= 0) & (ids < 255), ids, IGNORE_INDEX)]",
    ): "id 255 is sent to IGNORE_INDEX, which is 255: the same row either way",
    (
        "semimtl_geo.losses.berhu_loss",
        "return torch.where(abs_err < c, abs_err, quadratic).mean()",
    ): "at |e| = c both branches give c with slope ±1: BerHu is C1 at the threshold",
    (
        "semimtl_geo.losses._domain_ce",
        "(logits.shape[0], *logits.shape[2:]), label, dtype=None, device=logits.device",
    ): "torch.full infers int64 from the integer label, which is torch.long",
    (
        "semimtl_geo.losses._domain_ce",
        "(logits.shape[0], *logits.shape[2:]), label, device=logits.device",
    ): "torch.full infers int64 from the integer label, which is torch.long",
    (
        'semimtl_geo.metrics._np',
        'x.detach().float().cpu().numpy() if (x.is_floating_point()) or True else x.detach().cpu().numpy()',  # noqa: E501
    ): 'integer tensors are class ids or counts below 2^24, exact in float32, and every caller casts the result again (int64 / float64)',  # noqa: E501
    (
        'semimtl_geo.metrics.SegmentationMetrics.compute',
        'cm = self.confusion.astype(None)',
    ): "astype(None) is astype(float64), numpy's default float type",
    (
        'semimtl_geo.metrics.SegmentationMetrics.compute',
        'f1 = np.where(present, 2 * tp / np.maximum(2 * tp + fp + fn, 2), np.nan)',
    ): '2 TP + FP + FN = 1 only when TP = 0, where F1 is 0 with either divisor',
    (
        'semimtl_geo.metrics.SegmentationMetrics.compute',
        '"pAcc": float(100 * tp.sum() / total) if (total) or True else float("nan"),',
    ): "with no pixel numpy's 0 / 0 is NaN as well (it only adds a RuntimeWarning)",
    (
        'semimtl_geo.metrics.SegmentationMetrics.compute',
        '"pAcc": float(100 * tp.sum() / total) if total else float("NAN"),',
    ): 'float("NAN") is float("nan")',
    (
        'semimtl_geo.metrics.SegmentationMetrics.compute',
        '"mIoU": float(100 * np.nanmean(iou)) if (present.any()) or True else float("nan"),',
    ): 'np.nanmean of an all-NaN array is NaN as well (it only adds a RuntimeWarning)',
    (
        'semimtl_geo.metrics.SegmentationMetrics.compute',
        '"mIoU": float(100 * np.nanmean(iou)) if present.any() else float("NAN"),',
    ): 'float("NAN") is float("nan")',
    (
        'semimtl_geo.metrics.SegmentationMetrics.compute',
        '"mF1": float(100 * np.nanmean(f1)) if (present.any()) or True else float("nan"),',
    ): 'np.nanmean of an all-NaN array is NaN as well (it only adds a RuntimeWarning)',
    (
        'semimtl_geo.metrics.SegmentationMetrics.compute',
        '"mF1": float(100 * np.nanmean(f1)) if present.any() else float("NAN"),',
    ): 'float("NAN") is float("nan")',
    (
        'semimtl_geo.metrics.HeightMetrics.update',
        'with np.errstate(divide=None, invalid="ignore"):',
    ): 'np.errstate only decides whether numpy warns about x / 0; the values are the same',
    (
        'semimtl_geo.metrics.HeightMetrics.update',
        'with np.errstate(divide="ignore", invalid=None):',
    ): 'np.errstate only decides whether numpy warns about 0 / 0; the values are the same',
    (
        'semimtl_geo.metrics.HeightMetrics.update',
        'with np.errstate(invalid="ignore"):',
    ): 'np.errstate only decides whether numpy warns about x / 0; the values are the same',
    (
        'semimtl_geo.metrics.HeightMetrics.update',
        'with np.errstate(divide="ignore", ):',
    ): 'np.errstate only decides whether numpy warns about 0 / 0; the values are the same',
    (
        'semimtl_geo.metrics.HeightMetrics.update',
        'ratio = np.where(pp > 0, np.maximum(pp / yp, yp / np.where(pp >= 0, pp, 1.0)), np.inf)',
    ): 'the inner where only guards the division; where pp <= 0 the outer where discards it',
    (
        'semimtl_geo.metrics.HeightMetrics.update',
        'ratio = np.where(pp > 0, np.maximum(pp / yp, yp / np.where(pp > 0, pp, 2.0)), np.inf)',
    ): 'the placeholder divisor is used only where pp <= 0, and the outer where discards it',
    (
        'semimtl_geo.metrics.HeightMetrics.compute',
        'nan = float("NAN")',
    ): 'float("NAN") is float("nan")',
    (
        "semimtl_geo.metrics.HeightMetrics.update",
        "p = _np(pred).astype(None).ravel()",
    ): "astype(None) is astype(float64), numpy's default float type",
    (
        "semimtl_geo.metrics.HeightMetrics.update",
        "y = _np(target).astype(None).ravel()",
    ): "astype(None) is astype(float64), numpy's default float type",
    **{
        ("semimtl_geo.inference.blending.hann_1d", line): "an integer arange: i + 0.5 is "
        "float64 all the same, with the same values"
        for line in ("i = np.arange(n, dtype=None)", "i = np.arange(n, )")
    },
    **{
        ("semimtl_geo.inference.windows._axis", line): "the condition is redundant: for a "
        "window that is a multiple of 8 and >= 32 px, max(32, ceil_to(win, 8)) is win itself"
        for line in (
            "model = win if win / MODEL_MULTIPLE == 0 and win >= MIN_MODEL_SIZE else max(",
            "model = win if win % MODEL_MULTIPLE == 1 and win >= MIN_MODEL_SIZE else max(",
            "model = win if win % MODEL_MULTIPLE == 0 and win > MIN_MODEL_SIZE else max(",
            "model = win if (win % MODEL_MULTIPLE == 0 and win >= MIN_MODEL_SIZE) and False "
            "else max(",
        )
    },
    **{
        ("semimtl_geo.inference.windows._axis", line): "the per-axis mode is only compared "
        "with 'identity' (and ignored when scale != 1), so any other string is the same"
        for line in ('mode = "identity" if model == win else "XXpadXX"',
                     'mode = "identity" if model == win else "PAD"',
                     "mode = None", 'mode = "XXresizeXX"', 'mode = "RESIZE"')
    },
    (
        "semimtl_geo.grid.grid_starts",
        "if window > length:",
    ): "at window == length, range(0, 1, stride) gives the same single start [0]",
    **{
        ("semimtl_geo.inference.predictor.WindowPredictor.__init__", line): "float64 instead "
        "of float32 normalisation constants change only the last bit of the normalised "
        "pixels (the batch stays float32); no test can demand float32 rounding"
        for line in (
            "mean = np.asarray(self.meta.mean, dtype=None)", "mean = np.asarray(self.meta.mean, )",
            "std = np.asarray(self.meta.std, dtype=None)", "std = np.asarray(self.meta.std, )",
            "scale = 1.0 / (255.0 * std.astype(None))",
            "shift = -mean.astype(None) / std.astype(np.float64)",
            "shift = -mean.astype(np.float64) / std.astype(None)",
        )
    },
    (
        "semimtl_geo.inference.predictor.WindowPredictor.__init__",
        "-1, 1, 1)",
    ): "a C x 1 x 1 tensor broadcasts against N x C x H x W exactly like 1 x C x 1 x 1",
    **{
        ("semimtl_geo.classes.ClassTable.lut", line): "colours are 0..255, so an int64 array "
        "stores the same values into the uint8 table; numpy reads any negative reshape "
        "size as the unknown one"
        for line in (
            "lut[: len(self.colors)] = np.asarray(self.colors, dtype=None).reshape(-1, 3)",
            "lut[: len(self.colors)] = np.asarray(self.colors, ).reshape(-1, 3)",
            "lut[: len(self.colors)] = np.asarray(self.colors, dtype=np.uint8).reshape(-2, 3)",
        )
    },
    (
        "semimtl_geo.grid.grid_count",
        "if window > length:",
    ): "at window == length both branches give 1 window (ceil(0 / stride) + 1)",
    (
        "semimtl_geo.inference.engine._fill_tensor",
        "values = fill.astype(None)",
    ): "astype(None) is astype(float64), numpy's default float type",
    **{
        ("semimtl_geo.inference.engine._upload", line): "a blocking copy from the pinned "
        "buffer gives the same device tensor (the flag only lets the host run ahead)"
        for line in ("return tensor.pin_memory().to(device, non_blocking=None)",
                     "return tensor.pin_memory().to(device, )",
                     "return tensor.pin_memory().to(device, non_blocking=False)")
    },
    (
        "semimtl_geo.inference.engine._shift_rows",
        "if keep >= 0:",
    ): "keep = h - step is never negative (step <= window height); at keep = 0 the copy "
       "is of two empty slices",
    (
        "semimtl_geo.inference.engine._shift_rows",
        "acc[:keep] = src.clone() if (step < keep) or True else src  # no overlapping copy",
    ): "clone only copies the rows first; the values moved are the same",
    (
        "semimtl_geo.inference.engine._shift_rows",
        "acc[:keep] = src.clone() if step <= keep else src  # no overlapping copy",
    ): "at step == keep the source rows [keep, 2 keep) and the target rows [0, keep) do "
       "not overlap: the clone only copies",
    (
        "semimtl_geo.inference.predictor.WindowPredictor.__init__",
        'device: str | torch.device = "CPU",',
    ): "resolve_device lower-cases the name: CPU is cpu",
    (
        "semimtl_geo.inference.predictor.WindowPredictor.__init__",
        'engine: str = "AUTO",',
    ): "resolve_engine lower-cases the name: AUTO is auto",
    (
        "semimtl_geo.metrics.HeightMetrics.update",
        "pp > 0, np.maximum(pp / yp, yp / np.where(pp >= 0, pp, 1.0)), np.inf",
    ): "the inner where only guards the division; where pp <= 0 the outer where discards it",
    (
        "semimtl_geo.metrics.HeightMetrics.update",
        "pp > 0, np.maximum(pp / yp, yp / np.where(pp > 0, pp, 2.0)), np.inf",
    ): "the placeholder divisor is used only where pp <= 0, and the outer where discards it",
    (
        "semimtl_geo.metrics.HeightMetrics.merge",
        "assert other._shift is not None or self._shift is not None",
    ): "other has pixels, so its shift is set, and ours was set from it just before",
    (
        "semimtl_geo.metrics.HeightMetrics._pearson",
        'return float("NAN")',
    ): 'float("NAN") is float("nan")',
    (
        "semimtl_geo.metrics.HeightMetrics._pearson",
        'return float("NAN")  # a constant prediction or reference has no correlation',
    ): 'float("NAN") is float("nan")',
    (
        "semimtl_geo.inference.qml._hex",
        'return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb[:4]))',
    ): "str.format ignores surplus arguments, so a 4th (alpha) value changes nothing",
}

#: Equivalent mutants of the functions mutmut mutates since they are unwrapped (see
#: :data:`UNWRAP`) and of the engines module.
_RSW = "semimtl_geo.inference.engine.run_sliding_windows"
_FW = "semimtl_geo.inference.predictor.WindowPredictor.forward_windows"
_ONNX = "semimtl_geo.inference.engines._onnx_session"
EQUIVALENT |= {
    **{
        (_RSW, line): "torch.zeros / torch.empty make float32 tensors by default "
        "(torch's default dtype): dropping dtype=torch.float32 changes nothing"
        for line in (
            "probs = torch.empty((sums.shape[0], count, width), dtype=None,",
            "height = torch.empty((count, width), dtype=None, device=dev)",
            "height = torch.empty((count, width), device=dev)",
            "acc_w = torch.zeros((win_h, width), dtype=None, device=dev)",
            "acc_w = torch.zeros((win_h, width), device=dev)",
            "sums = (torch.zeros((predictor.num_classes, win_h, width), dtype=None, device=dev)",
            "sums = (torch.zeros((predictor.num_classes, win_h, width), device=dev)",
            "full_cover = torch.zeros(width, dtype=None, device=dev)",
            "full_cover = torch.zeros(width, device=dev)",
            "acc_h = torch.zeros((win_h, width), dtype=None, device=dev) if hgt else None",
            "acc_h = torch.zeros((win_h, width), device=dev) if hgt else None",
        )
    },
    ("semimtl_geo.inference.predictor._buffer",
     "tensor = space[key] = torch.empty(shape, device=device)"):
        "torch.empty makes float32 tensors by default (torch's default dtype)",
    (_RSW, 'probs.masked_fill_(~ok, float("NAN"))'): 'float("NAN") is float("nan")',
    **{
        (_RSW, line): "only allocates (and zeroes) a buffer that is never read when the "
        "task is not predicted"
        for line in ("if (seg) or True else None)",
                     "acc_h = torch.zeros((win_h, width), dtype=torch.float32, device=dev) "
                     "if (hgt) or True else None")
    },
    **{
        (_RSW, line): "the initial value is never read: the first window row always "
        "starts a new strip (its first read starts at its own row), which sets strip, valid "
        "and valid_dev"
        for line in ('strip: torch.Tensor | None = ""  # C x win_h x W on the device, nodata '
                     'filled',
                     "valid = None  # the strip's valid mask (host)",
                     "valid = np.zeros((0, width), None)  # the strip's valid mask (host)",
                     "valid = np.zeros((0, width), )  # the strip's valid mask (host)",
                     "valid = np.zeros((1, width), bool)  # the strip's valid mask (host)",
                     'valid_dev: torch.Tensor | None = ""')
    },
    **{
        (_RSW, line): "without the reused workspace forward_windows allocates fresh "
        "buffers: the same values (the workspace only saves page faults)"
        for line in ("workspace: dict[str, torch.Tensor] = None  # the predictor's reused "
                     "batch buffers", "grid, workspace=None)", "grid, )")
    },
    (_RSW, "origin = 1  # accumulator row of band row 0"):
        "every accumulator is addressed through the same ring origin and starts at zero: "
        "a ring rotated by one row holds the same sums",
    (_FW, "height = None"):
        "torch.mul(..., out=None) returns a new tensor with the same values",
    **{
        (_FW, line): "the key only names the workspace buffer: another name is "
        "another buffer with the same values"
        for line in (
            'height = _buffer(space, None, (y.shape[0], *y.shape[2:]), y.device)',
            'height = _buffer(space, "HEIGHT", (y.shape[0], *y.shape[2:]), y.device)',
            'x = _buffer(space, "XXinputXX", (len(windows), self.in_channels, win_h, win_w),',
            'x = _buffer(space, "INPUT", (len(windows), self.in_channels, win_h, win_w),',
            'y = torch.softmax(y, dim=1, out=_buffer(space, "SOFTMAX", y.shape, y.device))',
        )
    },
    **{
        (_ONNX, line): "export settings that give a graph with the same values (any "
        "supported opset, constant folding on or off, the other exporter)"
        for line in (
            "output_names=list(tasks), opset_version=None, do_constant_folding=True,",
            "output_names=list(tasks), opset_version=17, do_constant_folding=None,",
            "dynamo=None,",
            "output_names=list(tasks), do_constant_folding=True,",
            'output_names=list(tasks), opset_version=17, dynamic_axes={"input": {0: "batch"}, '
            '**{t: {0: "batch"} for t in tasks}},',
            "output_names=list(tasks), opset_version=18, do_constant_folding=True,",
            "output_names=list(tasks), opset_version=17, do_constant_folding=False,",
        )
    },
    **{
        (_ONNX, line): "dynamic axis names are labels; ONNX Runtime infers output shapes "
        "from the (dynamic) input, whatever the outputs declare"
        for line in (
            'dynamic_axes={"input": {0: "XXbatchXX"}, **{t: {0: "batch"} for t in tasks}},',
            'dynamic_axes={"input": {0: "BATCH"}, **{t: {0: "batch"} for t in tasks}},',
            'dynamic_axes={"input": {0: "batch"}, **{t: {1: "batch"} for t in tasks}},',
            'dynamic_axes={"input": {0: "batch"}, **{t: {0: "XXbatchXX"} for t in tasks}},',
            'dynamic_axes={"input": {0: "batch"}, **{t: {0: "BATCH"} for t in tasks}},',
        )
    },
    ("semimtl_geo.inference.engines.float32_outputs",
     "parent = head.get_submodule(parent_name) if (parent_name) or True else head"):
        'get_submodule("") is the module itself',
    ("semimtl_geo.inference.engines.Engine.__call__",
     'if self.name == "compile" and count <= self._batch:'):
        "at count == batch the padding is zero rows: the same batch",
    ("semimtl_geo.inference.engines.Engine.__init__", "self._batch = 1"):
        "batches have at least one window: max(1, count) is max(0, count)",
    ("semimtl_geo.inference.engines.Engine._onnx",
     "session = self._sessions[key] = _onnx_session(self.model, x[:2])"):
        "the export example's batch size does not matter: the batch axis is dynamic",
    ("semimtl_geo.inference.engines.Engine._onnx", "key = (int(x.shape[+2]), int(x.shape[-1]))"):
        "batches are 4-D: shape[2] is shape[-2]",
}

EQUIVALENT |= {
    **{
        ("semimtl_geo.inference.engine._ring_pieces", line): "slice(None, n) is slice(0, n), "
        "and slice(first, None) ends at the ring's size: the same rows"
        for line in ("return [(slice(first, None), slice(start, start + head)),",
                     "(slice(None, count - head), slice(start + head, stop))]",
                     "(slice(count - head), slice(start + head, stop))]")
    },
    **{
        (_FW, line): "align_corners=None is False, F.interpolate's default"
        for line in ('y = F.interpolate(y, size=(win_h, win_w), mode="bilinear", '
                     'align_corners=None)',
                     'y = F.interpolate(y, size=(win_h, win_w), mode="bilinear", )',
                     "align_corners=None)")
    },
    **{
        (_FW, line): "without an out= buffer torch returns a new tensor with the same values"
        for line in ("y = torch.softmax(y, dim=1, out=None)", "y = torch.softmax(y, dim=1, )",
                     'result["height"] = torch.mul(y[:, 0], self.height_scale, out=None)',
                     'result["height"] = torch.mul(y[:, 0], self.height_scale, )',
                     "space = workspace if (workspace is not None) and False else {}")
    },
    **{
        (_FW, line): "the key only names the workspace buffer: another name is another "
        "buffer with the same values"
        for line in (
            "x = _buffer(space, None, (len(windows), self.in_channels, win_h, win_w),",
            'y = torch.softmax(y, dim=1, out=_buffer(space, None, y.shape, y.device))',
            'y = torch.softmax(y, dim=1, out=_buffer(space, "XXsoftmaxXX", y.shape, y.device))',
            'height = _buffer(space, "XXheightXX", (y.shape[0], *y.shape[2:]), y.device)',
        )
    },
}
#: Equivalent mutants of the engine as rewritten by issue 14 (the ring accumulators in
#: :class:`_Accumulators`, the blending thread :class:`_Worker`), and of ``_upload`` since
#: it moves strips to every non-CPU device (issue 18).
_ENG = "semimtl_geo.inference.engine"
_ACC = _ENG + "._Accumulators"
_SLOTS = ("the two workspaces still alternate (slots 1, 0, 1, ... or 0, 1, 0, ...), and a "
          "batch waits for the blending of the previous user of its workspace "
          "(slot_users) before overwriting it: the same values and the same overlap")
_FRESH = ("without the reused workspace the predictor allocates fresh buffers for that "
          "batch: the same values (the workspace only saves page faults; a fresh buffer "
          "may even get the freed one's address, so no test can tell)")
EQUIVALENT |= {
    (_RSW, "origin = 1  # accumulator row of band row 0 (the blending thread's order, known "
           "here)"):
        "every accumulator is addressed through the same ring origin and starts at zero: "
        "a ring rotated by one row holds the same sums",
    (_RSW, "batches = 1"): _SLOTS,  # the initial value (the one in the loop is killed)
    (_RSW, "batches -= 1"): _SLOTS,
    **{(_RSW, line): _FRESH for line in (
        "workspace=None)", ")",
        "slot_users[slot] = blender.submit(acc.blend_raw, raw, None, chunk,")},
    **{(_RSW, line): "at most one strip read is pending at a time (the next is submitted "
       "after the current one is taken), so more reader threads change nothing"
       for line in (
           'with ThreadPoolExecutor(max_workers=None, thread_name_prefix="semimtl-read") as '
           'reader, \\',
           'with ThreadPoolExecutor(thread_name_prefix="semimtl-read") as reader, \\',
           'with ThreadPoolExecutor(max_workers=2, thread_name_prefix="semimtl-read") as '
           'reader, \\',
       )},
    (_ENG + "._argmax_classes_torch", "for k in range(num - 2, -2, -1):"):
        "the extra step k = -1 makes the mark (eq - 1) | -1 = 255 everywhere, which the "
        "element-wise minimum ignores",
    (_ACC + ".flush", "torch.logical_and(valid_dev[band_rows], acc_w[acc_rows] >= 0, "
                      "out=ok[band_rows])"):
        "a valid pixel always lies in a window that ran (it is valid itself) and Hann "
        "weights are floored above 0, so acc_w > 0 wherever valid",
    **{(_ACC + ".flush", line): 'float("NAN") is float("nan")'
       for line in ('probs.masked_fill_(~ok, float("NAN"))',
                    'height.masked_fill_(~ok, float("NAN"))')},
}
#: Equivalent mutants of the functions issue 14 split forward_windows into, and of the
#: blending worker's failure flag (issue 19's race fix).
_RM = "semimtl_geo.inference.predictor.WindowPredictor.run_model"
_FO = "semimtl_geo.inference.predictor.WindowPredictor.finish_outputs"
_KEY = ("the key only names the workspace buffer: another name is another buffer with "
        "the same values (the keys of one call stay distinct)")
EQUIVALENT |= {
    **{(_RM, line): _KEY for line in (
        'x = _buffer(space, None, (len(windows), self.in_channels, win_h, win_w),',
        'x = _buffer(space, "XXinputXX", (len(windows), self.in_channels, win_h, win_w),',
        'x = _buffer(space, "INPUT", (len(windows), self.in_channels, win_h, win_w),')},
    **{(_FO, line): _KEY for line in (
        'y = _softmax_windows(y, _buffer(space, None, y.shape, y.device))',
        'y = _softmax_windows(y, _buffer(space, "XXsoftmaxXX", y.shape, y.device))',
        'y = _softmax_windows(y, _buffer(space, "SOFTMAX", y.shape, y.device))',
        'height = _buffer(space, None, (y.shape[0], *y.shape[2:]), y.device)',
        'height = _buffer(space, "XXheightXX", (y.shape[0], *y.shape[2:]), y.device)',
        'height = _buffer(space, "HEIGHT", (y.shape[0], *y.shape[2:]), y.device)')},
    **{(_RM, line): "align_corners=None is False, F.interpolate's default for bilinear "
       "(torch 2.x no longer warns: the resize tests turn warnings into errors)"
       for line in ("align_corners=None)", ")")},
    **{(_FO, line): "align_corners=None is False, F.interpolate's default for bilinear "
       "(torch 2.x no longer warns: the resize tests turn warnings into errors)"
       for line in ('y = F.interpolate(y, size=(win_h, win_w), mode="bilinear", '
                    'align_corners=None)',
                    'y = F.interpolate(y, size=(win_h, win_w), mode="bilinear", )')},
    ("semimtl_geo.inference.predictor._cpu_threads",
     'if device.type != "cpu" or inside > threads:'):
        "at inside == threads the count is set to the value it has and restored: the same "
        "threads (the >= only skips two calls)",
    (_ENG + "._Worker.__init__", "self.failed = None"): "None is falsy like False",
    **{(_ENG + "._Worker.__exit__", line): "the caller's exit sets failed just before the "
       "shutdown, so the queued tasks, cancelled or not, do nothing (cancelling only saves "
       "dequeuing them)"
       for line in ("self.pool.shutdown(cancel_futures=None)  # waits for the running task",
                    "self.pool.shutdown(cancel_futures=False)  # waits for the running task",
                    "self.pool.shutdown()  # waits for the running task")},
    **{(_ACC + ".blend_raw", line): _FRESH for line in (
        "self.blend(self.predictor.finish_outputs(raw, self.grid, None), chunk, pieces,",
        "self.blend(self.predictor.finish_outputs(raw, self.grid, ), chunk, pieces,")},
}
EQUIVALENT[(_FW, ")")] = ("align_corners=False is F.interpolate's default for bilinear "
                           "(torch 2.x no longer warns): dropping it changes nothing")
_GPU_PREDICT = ("CUDA only: tests/test_gpu.py::"
                "test_predict_cuda_bf16_channels_last_matches_cpu_fp32")
CUDA_ONLY_EXTRA = {
    (_FW, 'height = _buffer(space, "height", (y.shape[0], *y.shape[2:]), None)'),
}

#: (function, mutated line) -> the CUDA-only path the mutant breaks. Such mutants are not
#: equivalent and stay counted as survivors: only tests/test_gpu.py (skipped without CUDA)
#: can kill them, so they are listed apart from the gaps of the CPU tests.
CUDA_ONLY: dict[tuple[str, str], str] = {
    (P, line): "CUDA only: tests/test_gpu.py::test_predict_cuda_bf16_channels_last_matches_cpu_fp32"
    for P, line in [
        ("semimtl_geo.inference.predictor.WindowPredictor.__init__",
         "self.model = loaded.model.to(None).eval()"),
        ("semimtl_geo.inference.predictor.WindowPredictor.__init__",
         'self.cuda = self.device.type == "XXcudaXX"'),
        ("semimtl_geo.inference.predictor.WindowPredictor.__init__",
         'self.cuda = self.device.type == "CUDA"'),
        ("semimtl_geo.inference.predictor.WindowPredictor.__init__", "self.model = None"),
        ("semimtl_geo.inference.predictor.WindowPredictor.__init__",
         "self._mean = torch.as_tensor(mean, device=None).view(1, -1, 1, 1)"),
        ("semimtl_geo.inference.predictor.WindowPredictor.__init__",
         "self._mean = torch.as_tensor(mean, ).view(1, -1, 1, 1)"),
        ("semimtl_geo.inference.predictor.WindowPredictor.__init__",
         "self._std = torch.as_tensor(std, device=None).view(1, -1, 1, 1)"),
        ("semimtl_geo.inference.predictor.WindowPredictor.__init__",
         "self._std = torch.as_tensor(std, ).view(1, -1, 1, 1)"),
        ("semimtl_geo.inference.predictor.WindowPredictor.__init__",
         "self.model = self.model.to(memory_format=None)"),
    ]
} | {
    (f, line): "CUDA only: tests/test_gpu.py::test_predict_cuda_bf16_channels_last_matches_cpu_fp32"
    for f, line in [
        ("semimtl_geo.inference.engine._fill_tensor",
         "return torch.from_numpy(values.astype(dtype)).view(-1, 1, 1).to(None)"),
        ("semimtl_geo.inference.engine._upload", 'if device.type == "XXcudaXX":'),
        ("semimtl_geo.inference.engine._upload", 'if device.type == "CUDA":'),
        ("semimtl_geo.inference.engine._upload",
         "return tensor.pin_memory().to(None, non_blocking=True)"),
        ("semimtl_geo.inference.engine._upload",
         "return tensor.pin_memory().to(non_blocking=True)"),
        ("semimtl_geo.inference.engine._argmax_classes",
         "classes = torch.full(best.shape, sums.shape[0] - 1, dtype=torch.uint8, device=None)"),
        ("semimtl_geo.inference.engine._argmax_classes",
         "classes = torch.full(best.shape, sums.shape[0] - 1, dtype=torch.uint8, )"),
        *[("semimtl_geo.inference.predictor.WindowPredictor.__init__",
           f"self._{n} = torch.as_tensor({n}, dtype=torch.float32, {d}).view(")
          for n in ("scale", "shift") for d in ("device=None", "")],
        ("semimtl_geo.inference.predictor.resolve_device",
         'return torch.device("CUDA" if torch.cuda.is_available() else "cpu")'),
        ("semimtl_geo.inference.predictor.resolve_device",
         'return torch.device("XXcudaXX" if torch.cuda.is_available() else "cpu")'),
        ("semimtl_geo.inference.predictor.resolve_device",
         'return torch.device("cuda" if (torch.cuda.is_available()) and False else "cpu")'),
    ]
} | {
    (f, line): "CUDA only: tests/test_gpu.py::test_predict_cuda_bf16_channels_last_matches_cpu_fp32"
    for f, line in [
        ("semimtl_geo.inference.predictor.WindowPredictor.forward_windows",
         'y = torch.softmax(y, dim=1, out=_buffer(space, "softmax", y.shape, None))'),
    ]
} | {
    (f, line): "CUDA only: torch.autocast defaults to bfloat16 on the CPU but to float16 on "
    "CUDA (tests/test_predict_engines.py::test_cuda_pipeline_matches_cpu)"
    for f, line in [
        ("semimtl_geo.inference.engines.Engine.__call__",
         "with torch.autocast(self.device.type, dtype=None):"),
        ("semimtl_geo.inference.engines.Engine.__call__",
         "with torch.autocast(self.device.type, ):"),
    ]
} | {
    (
        "semimtl_geo.losses._domain_ce",
        "(logits.shape[0], *logits.shape[2:]), label, dtype=torch.long, device=None",
    ): "CUDA only: tests/test_gpu.py::test_bf16_generator_terms_match_fp32",
    (
        "semimtl_geo.losses._domain_ce",
        "(logits.shape[0], *logits.shape[2:]), label, dtype=torch.long, )",
    ): "CUDA only: tests/test_gpu.py::test_bf16_generator_terms_match_fp32",
}

CUDA_ONLY |= {
    (_RSW, "fill = _fill_tensor(predictor.fill_values, new_pixels.dtype, None)"): _GPU_PREDICT
    + " (its nodata block)",
    (_ACC + ".__init__", "dev = self.device = None"): _GPU_PREDICT,
}
CUDA_ONLY |= {
    **{("semimtl_geo.inference.predictor.macs_per_pixel", line): "CUDA only, and only with "
       "torch.set_default_device('cuda'): the probe runs for CPU predictors alone, so without "
       "its device it lands on torch's default device; the meta device runs a CPU network "
       "on a meta input, so the meta stand-in cannot show it (no GPU test sets a default "
       "device)"
       for line in ("model(torch.zeros(1, in_channels, size, size, dtype=torch.float32, "
                    "device=None))",
                    "model(torch.zeros(1, in_channels, size, size, dtype=torch.float32, ))")},
    (_ACC + ".__init__", "weight_1d = torch.from_numpy(hann_1d(win_w)).to(None)"):
        "CUDA only: the meta device accepts a CPU tensor added into a meta one in place, so "
        "the meta stand-in misses it; on CUDA the add fails (" + _GPU_PREDICT[11:] + ")",
}
for _line in ('if device.type == "XXcudaXX":', 'if device.type == "CUDA":'):
    CUDA_ONLY.pop((_ENG + "._upload", _line), None)  # equivalent since _upload moves to any device


# --------------------------------------------------------------------------- planted bugs


@dataclass
class Planted:
    """A hand-written bug: replace ``old`` by ``new`` in ``path``; ``tests`` must fail."""

    name: str
    path: str
    old: str
    new: str
    tests: list[str]


PLANTED = [
    Planted(
        "M2 inter-domain target: own domain instead of ground truth (class 0)",
        "semimtl_geo/losses.py",
        'if mode == "m2":\n        return _domain_ce(logits, 0)',
        'if mode == "m2":\n        return _domain_ce(logits, own_domain)',
        ADVERSARIAL_TESTS,
    ),
    Planted(
        "M1 inter-domain target: own domain instead of the labelled dataset's",
        "semimtl_geo/losses.py",
        "return _domain_ce(logits, labelled_domain)",
        "return _domain_ce(logits, own_domain)",
        ADVERSARIAL_TESTS,
    ),
    Planted(
        "ISPRS colours of low vegetation and tree swapped",
        "semimtl_geo/classes.py",
        "        (0, 255, 255),\n        (0, 255, 0),",
        "        (0, 255, 0),\n        (0, 255, 255),",
        ["tests/test_classes.py"],
    ),
    Planted(
        "ISPRS boundary colour mapped to a class instead of ignore",
        "semimtl_geo/classes.py",
        "ISPRS_BOUNDARY_COLOR = (0, 0, 0)",
        "ISPRS_BOUNDARY_COLOR = (255, 0, 0)",
        ["tests/test_classes.py"],
    ),
    Planted(
        "Cityscapes colours of car and truck swapped",
        "semimtl_geo/classes.py",
        "        (0, 0, 142),\n        (0, 0, 70),",
        "        (0, 0, 70),\n        (0, 0, 142),",
        ["tests/test_classes.py"],
    ),
    Planted(
        "pad mode crops the model output from the bottom-right corner",
        "semimtl_geo/inference/predictor.py",
        "y = y[..., :win_h, :win_w]",
        "y = y[..., y.shape[-2] - win_h:, y.shape[-1] - win_w:]",
        ["tests/test_predict_windows.py::test_pad_mode_keeps_content_in_place"],
    ),
    Planted(
        "nodata decided by the first band alone (not every band)",
        "semimtl_geo/inference/raster_io.py",
        "is_nodata &= pixels[i] == value",
        "is_nodata &= pixels[0] == value",
        ["tests/test_predict_raster.py::test_nodata_only_where_every_band_is_nodata"],
    ),
]


# --------------------------------------------------------------------------- helpers


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # one thread per process: the machine is shared, and forked torch must not use OpenMP
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def _copy_tree(dest: Path, keep_mutants: bool = False) -> None:
    """Copy the working tree's tracked and untracked-not-ignored files to ``dest``.

    With ``keep_mutants`` an earlier run's ``mutants/`` folder (mutmut's cache of
    verdicts, per function hash) is kept, so only changed functions are tested again.
    """
    if dest.exists():
        for child in dest.iterdir():
            if keep_mutants and child.name in ("mutants", "runs.json"):
                continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
        capture_output=True, text=True,
    ).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if not src.is_file() or rel.endswith((".png", ".tif", ".onnx")):
            continue
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out)


#: Decorators that make mutmut skip a function (it mutates undecorated functions only:
#: ``run_sliding_windows`` and ``forward_windows`` are under ``torch.inference_mode()``).
#: In the scratch copy the decorator is applied after the definition instead
#: (``f = deco(f)``): mutmut mutates the body and the function still runs decorated.
#: Not unwrapped: ``functools.lru_cache`` (a cache filled before the fork would hide the
#: mutants) and ``property``.
UNWRAP = ("torch.inference_mode()", "contextmanager")


def unwrap_decorators(source: str) -> str:
    """Move each :data:`UNWRAP` decorator of ``source`` below its function as ``f = deco(f)``."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and len(
                node.decorator_list) == 1:
            deco = ast.get_source_segment(source, node.decorator_list[0])
            if deco in UNWRAP:
                edits.append((node.decorator_list[0].lineno, node.end_lineno, node.col_offset,
                              node.name, deco))
    for deco_line, end, col, name, deco in sorted(edits, reverse=True):
        lines.insert(end, " " * col + f"{name} = {deco}({name})\n")
        del lines[deco_line - 1]
    return "".join(lines)


def _unwrapped_names(path: Path) -> list[str]:
    """Names of the functions :func:`unwrap_decorators` re-decorated in ``path``."""
    decorators = "|".join(map(re.escape, UNWRAP))
    return re.findall(rf"^\s*(\w+) = (?:{decorators})\(\1\)$", path.read_text(), flags=re.M)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def _record_run(dest: Path, group: Group, argv: list[str]) -> None:
    """Append when, on which commit and with which command the group ran (``runs.json``)."""
    dirty = _git("status", "--porcelain", "--", "semimtl_geo", "tests")
    entry = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(dirty),
        "command": "python benchmarks/mutation_testing.py " + " ".join(argv),
    }
    path = dest / "runs.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps([*runs, entry], indent=2) + "\n")


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _configure(dest: Path, group: Group, timeout_multiplier: float = 60.0) -> None:
    text = (dest / "pyproject.toml").read_text()
    text += (
        "\n[tool.mutmut]\n"
        'source_paths = ["semimtl_geo"]\n'
        f"only_mutate = {_toml_list(group.files)}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(group.tests)}\n"
        # --tb=no: a failing test's report (reprs of the tensors in its frames) took
        # longer than the test itself, and sometimes past mutmut's timeout
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q", "--tb=no"]\n'
        'process_isolation = "forkserver"\n'
        # mutmut stops a mutant's tests after 15 x (their measured time + 1 s) of wall
        # clock by default; on the shared, loaded cores that cut off tests that pass, and
        # counted whole functions as "killed" by timeout. 60 x leaves room for the load
        # (--timeout-multiplier: mutmut's wall limit is this x (tests' time + 1 s), its CPU
        # limit twice that).
        f"timeout_multiplier = {timeout_multiplier}\n"
        # a new commit (a rebase) made mutmut throw away every verdict of a group whose
        # sources had not changed; the function hashes decide what is stale
        "use_git_change_detection = false\n"
        'also_copy = ["cli", "configs"]\n'
    )
    (dest / "pyproject.toml").write_text(text)


def _mutmut() -> list[str]:
    exe = Path(sys.executable).with_name("mutmut")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mutmut"]


def _survivors(group: Group, timeouts_only: bool = False) -> list[str]:
    dest = WORK / group.name
    wanted = ("timeout",) if timeouts_only else ("survived", "timeout", "no tests", "skipped",
                                                 "not checked", "suspicious", "type check")
    names = []
    for rel in group.files:
        meta = dest / "mutants" / (rel + ".meta")
        if meta.exists():
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            # timeouts are re-run too: under load a passing test can overrun its limit
            names += [k for k, v in codes.items() if STATUS.get(v, "suspicious") in wanted]
    if group.mutants:
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in group.mutants)]
    return names


def _unchecked(group: Group) -> list[str]:
    """Mutants of an earlier run of the group that have no verdict yet."""
    names = []
    for rel in group.files:
        meta = WORK / group.name / "mutants" / (rel + ".meta")
        if meta.exists():
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            names += [k for k, v in codes.items() if v is None]
    if group.mutants:
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in group.mutants)]
    return names


def _sample(names: list[str], fraction: float, seed: int) -> list[str]:
    """A seeded random ``fraction`` of ``names``, drawn per function (at least one each)."""
    import random

    by_function: dict[str, list[str]] = {}
    for name in sorted(names):
        by_function.setdefault(re.sub(r"__mutmut_\d+$", "", name), []).append(name)
    rng = random.Random(seed)
    chosen = []
    for function in sorted(by_function):
        members = by_function[function]
        chosen += rng.sample(members, max(1, round(fraction * len(members))))
    return sorted(chosen)


def run_group(group: Group, max_children: int, timeout: float, incremental: bool,
              survivors_only: bool, argv: list[str], patterns: list[str] | None = None,
              sample: float | None = None, seed: int = 0,
              timeout_multiplier: float = 60.0, timeouts_only: bool = False) -> None:
    dest = WORK / group.name
    selection = list(group.mutants)
    if survivors_only:
        selection = _survivors(group, timeouts_only)
        if not selection:
            print(f"[{group.name}] no survivors to re-run", flush=True)
            return
    if sample is not None:
        # only mutants an earlier run of the group generated and left without a verdict
        selection = _sample(_unchecked(group), sample, seed)
    if patterns:
        if survivors_only or sample is not None:
            selection = [n for n in selection if any(fnmatch.fnmatch(n, p) for p in patterns)]
        else:  # mutmut matches the patterns itself, after generating the mutants
            selection = list(patterns)
    if (sample is not None or patterns) and not selection:
        print(f"[{group.name}] no mutants selected", flush=True)
        return
    keep = incremental or survivors_only
    if not keep and (dest / "runs.json").exists():
        (dest / "runs.json").unlink()  # a fresh run: earlier verdicts are dropped
    _copy_tree(dest, keep_mutants=keep)
    for rel in group.files:
        path = dest / rel
        text = path.read_text()
        if unwrap_decorators(text) != text:
            stat = path.stat()
            path.write_text(unwrap_decorators(text))
            # keep the source's time: mutmut regenerates a file's mutants (minutes for
            # engine.py) only when the source is newer than them
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _configure(dest, group, timeout_multiplier)
    # mutmut maps tests to functions once and, on a re-run, only for new tests: a function
    # that was not mutated before (a newly unwrapped one) would get no tests. Collect the
    # map afresh then (the verdicts of unchanged functions are kept all the same).
    stats = dest / "mutants" / "mutmut-stats.json"
    if stats.exists():
        mapped = json.loads(stats.read_text())["tests_by_mangled_function_name"]
        for rel in group.files:
            for name in _unwrapped_names(dest / rel):
                if not any(k.endswith(("x_" + name, "ǁ" + name)) for k in mapped):
                    stats.unlink(missing_ok=True)
    _record_run(dest, group, argv)
    cmd = [*_mutmut(), "run", "--max-children", str(max_children), *selection]
    shown = cmd[:4] + ([f"<{len(selection)} mutants>"] if selection else [])
    print(f"[{group.name}] {' '.join(shown)} (in {dest})", flush=True)
    t0 = time.time()
    with open(dest / "mutmut.log", "w") as log:
        proc = subprocess.run(cmd, cwd=dest, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout)
    print(f"[{group.name}] exit {proc.returncode} after {time.time() - t0:.0f} s", flush=True)


STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          34: "skipped", 36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout",
          255: "timeout", 37: "type check", None: "not checked"}


@functools.cache
def _mutant_functions(path: Path) -> dict[str, list[str]]:
    """Source lines of every function in a mutmut output file, by (mangled) name."""
    source = path.read_text()
    lines = source.splitlines()
    return {node.name: lines[node.lineno - 1:node.end_lineno]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _mutated_line(dest: Path, name: str) -> tuple[str, str]:
    """Return (original line, mutated line) of a mutant: its function diffed against the
    original copy mutmut keeps beside it (what ``mutmut show`` prints, without starting
    mutmut once per mutant)."""
    module, _, mangled = name.rpartition(".")
    path = dest / "mutants" / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = path.with_suffix("") / "__init__.py"
    funcs = _mutant_functions(path)
    base = re.sub(r"__mutmut_\d+$", "", mangled)
    plain = base.rpartition("ǁ")[2] if "ǁ" in base else base.removeprefix("x_")
    orig = [line.replace(base + "__mutmut_orig", plain, 1)
            for line in funcs.get(base + "__mutmut_orig", [])]
    mutated = [line.replace(mangled, plain, 1) for line in funcs.get(mangled, [])]
    diff = list(difflib.unified_diff(orig, mutated, n=0, lineterm=""))
    minus = [line[1:].strip() for line in diff
             if line.startswith("-") and not line.startswith("---")]
    plus = [line[1:].strip() for line in diff
            if line.startswith("+") and not line.startswith("+++")]
    return " / ".join(minus), " / ".join(plus)


#: a device argument (``device=dev``, ``.to(self.device)``) or its replacement by None
_DEVICE_ARG = re.compile(
    r"(,\s*)?\bdevice=(None|[\w.]*dev[\w.]*)|\.to\((None|[\w.]*dev[\w.]*)\)")


def _device_only(orig: str, mutated: str) -> str | None:
    """Why a mutant that only drops a device argument (or sets it to None) is CUDA-only.

    On the CPU a tensor made or moved without a device is on the CPU all the same; on a
    GPU it lands on the wrong device. Only tests/test_gpu.py (skipped without CUDA) can
    kill such a mutant.
    """
    def norm(text: str) -> str:
        return re.sub(r"\s+", "", _DEVICE_ARG.sub("", text)).replace(",)", ")")

    if orig and orig != mutated and norm(orig) == norm(mutated):
        return "CUDA only (a device argument dropped): tests/test_gpu.py"
    return None


def _function(name: str) -> str:
    base = re.sub(r"__mutmut_\d+$", "", name)
    module, _, func = base.rpartition(".")
    func = func.removeprefix("x_").replace("xǁ", "").replace("ǁ", ".")
    return f"{module}.{func}"


def read_group(group: Group) -> dict:
    dest = WORK / group.name
    codes: dict[str, int | None] = {}
    file_of: dict[str, str] = {}
    for rel in group.files:
        meta = dest / "mutants" / (rel + ".meta")
        if meta.exists():
            file_codes = json.loads(meta.read_text())["exit_code_by_key"]
            codes.update(file_codes)
            file_of.update(dict.fromkeys(file_codes, rel))
    if group.mutants:
        codes = {k: v for k, v in codes.items()
                 if any(fnmatch.fnmatch(k, p) for p in group.mutants)}
    per_file = {}
    for rel in group.files:
        mine = [STATUS.get(c, "suspicious") for k, c in codes.items() if file_of[k] == rel]
        killed_here = sum(1 for c in mine if c in ("killed", "timeout"))
        checked_here = sum(1 for c in mine if c != "not checked")
        per_file[rel] = {"total": len(mine), "checked": checked_here, "killed": killed_here,
                         "score": 100.0 * killed_here / checked_here if checked_here
                         else float("nan")}
    counts: dict[str, int] = {}
    survivors = []
    done = ("killed", "timeout")
    # `mutmut show` takes seconds to start: diffs only for mutants that ran and survived
    alive = [n for n, c in codes.items()
             if STATUS.get(c, "suspicious") not in (*done, "not checked")]
    with ThreadPoolExecutor(max_workers=4) as pool:  # `mutmut show` is slow to start
        diffs = dict(zip(alive, pool.map(lambda n: _mutated_line(dest, n), alive)))
    for name, code in sorted(codes.items()):
        status = STATUS.get(code, "suspicious")
        counts[status] = counts.get(status, 0) + 1
        if status not in ("killed", "timeout"):
            func = _function(name)
            orig, mutated = diffs.get(name, ("", ""))
            reason = EQUIVALENT.get((func, mutated))
            survivors.append({"mutant": name, "status": status, "function": func,
                              "original": orig, "mutated": mutated, "equivalent": reason,
                              "cuda_only": CUDA_ONLY.get((func, mutated))
                              or _device_only(orig, mutated)
                              or ("CUDA only: a device argument set to None"
                                  if (func, mutated) in CUDA_ONLY_EXTRA else None)})
    total = len(codes)
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    equivalent = sum(1 for s in survivors if s["equivalent"])
    cuda_only = sum(1 for s in survivors if s["cuda_only"] and not s["equivalent"])
    not_run = counts.get("not checked", 0)
    for s in survivors:
        file_stats = per_file[file_of[s["mutant"]]]
        file_stats["equivalent"] = file_stats.get("equivalent", 0) + bool(s["equivalent"])
        file_stats["cuda_only"] = file_stats.get("cuda_only", 0) + bool(
            s["cuda_only"] and not s["equivalent"])
    runs_file = dest / "runs.json"
    return {
        "group": group.name, "files": group.files, "tests": group.tests,
        "runs": json.loads(runs_file.read_text()) if runs_file.exists() else [],
        "per_file": per_file,
        "total": total, "killed": killed, "counts": counts,
        # over the mutants that ran: all of them, or a --sample of them
        "checked": total - not_run,
        "score": 100.0 * killed / (total - not_run) if total - not_run else float("nan"),
        "equivalent": equivalent,
        "cuda_only": cuda_only,
        "not_run": not_run,
        "gaps": len(survivors) - equivalent - cuda_only - not_run,
        "score_without_equivalent": (
            100.0 * killed / (total - not_run - equivalent) if total - not_run - equivalent
            else float("nan")
        ),
        "survivors": survivors,
    }


def run_planted(timeout: float) -> list[dict]:
    dest = WORK / "planted"
    _copy_tree(dest)
    results = []
    for bug in PLANTED:
        path = dest / bug.path
        original = path.read_text()
        if original.count(bug.old) != 1:
            results.append({"bug": bug.name, "result": "NOT PLANTED (snippet not found)"})
            continue
        path.write_text(original.replace(bug.old, bug.new))
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                 *bug.tests], cwd=dest, env=_env(), capture_output=True, text=True,
                timeout=timeout)
            tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
            caught = proc.returncode == 1
            results.append({"bug": bug.name, "file": bug.path, "tests": bug.tests,
                            "result": "caught" if caught else f"MISSED (exit {proc.returncode})",
                            "pytest": tail})
        finally:
            path.write_text(original)
        print(f"[planted] {bug.name}: {results[-1]['result']}", flush=True)
    return results


def write_report(groups: list[dict], planted: list[dict] | None) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"tool": "mutmut " + _version(), "groups": groups, "planted": planted}
    (RESULTS / "mutation.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [
        "# Mutation testing of the core",
        "",
        f"Tool: mutmut {_version()}, run by `python benchmarks/mutation_testing.py` "
        "(one group per row; each group runs only the tests listed). Score = mutants "
        "killed (a test failed or timed out) / mutants run: every mutant generated, or a "
        "seeded random sample of them where `run` is below `mutants` (`--sample`).",
        "",
        "| group | modules | mutants | run | killed | score | equivalent | CUDA only "
        "| gaps | score without equivalent |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for g in groups:
        lines.append(
            f"| {g['group']} | {', '.join('`' + f + '`' for f in g['files'])} | {g['total']} | "
            f"{g.get('checked', g['total'] - g['not_run'])} | {g['killed']} | "
            f"{g['score']:.1f} % | {g['equivalent']} | {g['cuda_only']} | "
            f"{g['gaps']} | {g['score_without_equivalent']:.1f} % |"
        )
    lines += ["", "Per module (score = killed / generated in that file):", "",
              "| module | group | mutants | run | killed | score | equivalent | CUDA only |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for g in groups:
        for rel, f in (g.get("per_file") or {}).items():
            lines.append(f"| `{rel}` | {g['group']} | {f['total']} | {f['checked']} | "
                         f"{f['killed']} | "
                         f"{f['score']:.1f} % | {f.get('equivalent', 0)} | "
                         f"{f.get('cuda_only', 0)} |")
    lines += ["", "When each group was measured (UTC; the commit the scratch copy was taken "
              "from, and whether sources or tests had uncommitted changes):", ""]
    for g in groups:
        runs = g.get("runs") or []
        if not runs:
            lines.append(f"- {g['group']}: {g.get('measured', 'not recorded')}")
        for r in runs:
            extra = " + uncommitted changes" if r["uncommitted_changes"] else ""
            lines.append(f"- {g['group']}: {r['date']}, commit {r['commit']}{extra}: "
                         f"`{r['command']}`")
    lines += ["", "Test selection per group:", ""]
    for g in groups:
        lines.append(f"- {g['group']}: " + ", ".join(f"`{t}`" for t in g["tests"]))
    for g in groups:
        lines += ["", f"## Surviving mutants: {g['group']}", ""]
        if not g["survivors"]:
            lines.append("None.")
            continue
        lines += ["| mutant | status | original | mutated | equivalent because |",
                  "| --- | --- | --- | --- | --- |"]
        for s in g["survivors"]:
            if s["status"] == "not checked" and g.get("checked", 0) < g["total"] - 20:
                continue  # outside the sample (counted as mutants - run)
            why = s["equivalent"] or (
                f"not equivalent; {s['cuda_only']}" if s["cuda_only"]
                else "not run (re-run cut short)" if s["status"] == "not checked"
                else "**not equivalent: a gap in the tests**"
            )
            lines.append(f"| `{s['mutant']}` | {s['status']} | `{_cell(s['original'])}` | "
                         f"`{_cell(s['mutated'])}` | {why} |")
    if planted:
        lines += ["", "## Planted bugs (module-level data included)", "",
                  "| bug | file | result |", "| --- | --- | --- |"]
        for p in planted:
            lines.append(f"| {p['bug']} | `{p.get('file', '')}` | {p['result']} |")
    (RESULTS / "mutation.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'mutation.md'}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")[:160]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("mutmut")
    except Exception:  # pragma: no cover - only for the report header
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", nargs="*", default=[g.name for g in GROUPS],
                        choices=[g.name for g in GROUPS])
    parser.add_argument("--max-children", type=int, default=1,
                        help="parallel mutant workers (default 1: the machine is shared)")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds allowed per group before it is stopped")
    parser.add_argument("--incremental", action="store_true",
                        help="keep earlier verdicts; mutmut re-tests only changed functions")
    parser.add_argument("--survivors-only", action="store_true",
                        help="re-run only the mutants not killed by a failing test "
                             "(survived, timed out, not checked)")
    parser.add_argument("--no-planted", action="store_true", help="skip the planted bugs")
    parser.add_argument("--report-only", action="store_true",
                        help="only re-read the scratch folders and write the report")
    parser.add_argument("--mutants", nargs="+", metavar="PATTERN",
                        help="run only the mutants matching these fnmatch patterns (among "
                             "--survivors-only / --sample when given), verdicts or not, e.g. "
                             "'semimtl_geo.inference.engine.x__ring_pieces*'")
    parser.add_argument("--sample", type=float, metavar="FRACTION",
                        help="run a seeded random FRACTION (per function) of the mutants an "
                             "earlier run left unchecked; the report scores checked mutants")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample")
    parser.add_argument("--timeout-multiplier", type=float, default=60.0,
                        help="mutmut's per-mutant wall limit is this x (the tests' measured "
                             "time + 1 s); a longer one re-checks timeouts (slow pass or hang)")
    parser.add_argument("--timeouts-only", action="store_true",
                        help="with --survivors-only: re-run only the mutants that timed out")
    args = parser.parse_args(argv)
    chosen = [g for g in GROUPS if g.name in args.groups]
    if not args.report_only:
        for group in chosen:
            run_group(group, args.max_children, args.timeout, args.incremental,
                      args.survivors_only, argv if argv is not None else sys.argv[1:],
                      args.mutants, args.sample, args.seed, args.timeout_multiplier,
                      args.timeouts_only)
    planted = None
    planted_file = RESULTS / "mutation_planted.json"
    if not args.no_planted and not args.report_only:
        planted = run_planted(args.timeout)
        RESULTS.mkdir(parents=True, exist_ok=True)
        planted_file.write_text(json.dumps(planted, indent=2) + "\n")
    elif planted_file.exists():
        planted = json.loads(planted_file.read_text())
    # keep earlier groups' results when only some groups were re-run; a group with no
    # scratch folder here keeps the figures (and measurement note) of the committed report
    done = {g.name: read_group(g) for g in GROUPS if (WORK / g.name / "mutants").exists()}
    previous = RESULTS / "mutation.json"
    if previous.exists():
        for old in json.loads(previous.read_text())["groups"]:
            if old["group"] not in done and old["group"] in {g.name for g in GROUPS}:
                done[old["group"]] = old
    write_report([done[g.name] for g in GROUPS if g.name in done], planted)
    bad = [g for g in done.values() if g["score"] < 90.0]
    return 1 if bad or any(p["result"] != "caught" for p in planted or []) else 0


if __name__ == "__main__":
    sys.exit(main())
