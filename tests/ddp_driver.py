"""One process of the multi-node test (tests/test_train_multinode.py), started by torchrun.

Not a test module. It registers the tiny in-memory ``toy`` dataset kind, runs the real
``semimtl-geo train`` command line with the arguments it is given, and afterwards saves
what this rank ended with: every parameter of the generator and the discriminators
(``OUT_DIR/rank<RANK>.safetensors``) and, in ``OUT_DIR/rank<RANK>.json``, its rank, the
cluster environment Lightning detected and a checksum of each training batch it saw
(ranks draw different batches; identical parameters then show that gradients were
averaged).

Usage::

    torchrun ... tests/ddp_driver.py OUT_DIR train -c CONFIG -o RUN_DIR --num-nodes 2 ...
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _toy_kind as toy  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from semimtl_geo.cli.main import main  # noqa: E402
from semimtl_geo.training import engine  # noqa: E402


class BatchChecksums(Callback):
    """Records the sum of every dataset's images in each training batch of this rank."""

    def __init__(self) -> None:
        self.sums: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: D102
        self.sums.append(sum(float(b["image"].double().sum()) for b in batch.values()))


def run() -> int:
    out_dir = Path(sys.argv[1])
    argv = sys.argv[2:]
    toy.register()
    torch.set_num_threads(1)
    checksums = BatchChecksums()
    train = engine.train

    def train_and_record(*args, **kwargs):  # noqa: ANN202
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), checksums]
        result = train(*args, **kwargs)
        module = result.module
        rank = os.environ["RANK"]
        save_file({k: v.detach().cpu().contiguous() for k, v in module.named_parameters()},
                  str(out_dir / f"rank{rank}.safetensors"))
        (out_dir / f"rank{rank}.json").write_text(json.dumps({
            "rank": int(rank),
            "world_size": module.trainer.world_size,
            "num_nodes": module.trainer.num_nodes,
            "environment": type(module.trainer.strategy.cluster_environment).__name__,
            "batches": checksums.sums,
        }))
        return result

    engine.train = train_and_record
    return main(argv)


if __name__ == "__main__":
    sys.exit(run())
