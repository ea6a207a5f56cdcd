"""Checkpoints that run code when unpickled: what every checkpoint reader must refuse.

Each file is a genuine ``torch.save`` pickle whose ``__reduce__`` payload calls
``os.system("touch MARKER")``; :func:`build_malicious` checks that unpickling each one
really creates the marker (so a test asserting that the marker is absent can fail).
"""

import os
import shlex
from pathlib import Path

import torch

from semimtl_geo.checkpoint import CHECKPOINT_KEY, ModelMeta, checkpoint_payload
from semimtl_geo.models import MultiTaskNet

KINDS = ("top_level", "in_payload", "in_lightning")


class Payload:
    """Pickles as a call to ``os.system`` that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def valid_payload() -> dict:
    """A real two-task model payload (resnet18, output stride 32: small and fast)."""
    torch.manual_seed(0)
    model = MultiTaskNet("resnet18", 3, 6, ("seg", "height"), None, 32)
    return checkpoint_payload(model, ModelMeta(bands=["R", "G", "B"], patch_size=64), {})


def build_malicious(folder: Path, marker: Path) -> dict[str, Path]:
    """Write the three attacks of issue 17 into ``folder``; returns ``{kind: path}``.

    * ``top_level``: the whole file is the payload object;
    * ``in_payload``: a complete, valid model checkpoint whose ``meta`` hides the payload;
    * ``in_lightning``: a Lightning training checkpoint (the keys ``trainer.fit`` reads,
      a valid model payload) with the payload in its callback state.
    """
    folder.mkdir(parents=True, exist_ok=True)
    payload = valid_payload()
    paths = {kind: folder / f"{kind}.ckpt" for kind in KINDS}
    torch.save(Payload(marker), paths["top_level"])
    nested = {**payload, "meta": {**payload["meta"], "gsd": Payload(marker)}}
    torch.save({CHECKPOINT_KEY: nested}, paths["in_payload"])
    lightning = {
        "epoch": 0,
        "global_step": 2,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": {f"generator.{k}": v for k, v in payload["state_dict"].items()},
        "loops": {"fit_loop": {"state_dict": {}}},
        "callbacks": {"EpochCheckpoint": {"state": Payload(marker)}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.01, "params": [0]}]}],
        "lr_schedulers": [{"last_epoch": 2, "_step_count": 3}],
        CHECKPOINT_KEY: payload,
    }
    torch.save(lightning, paths["in_lightning"])
    for kind, path in paths.items():  # the attacks are live: plain unpickling runs them
        torch.load(path, weights_only=False)
        assert marker.exists(), f"the {kind} payload did not run under plain torch.load"
        marker.unlink()
    return paths
