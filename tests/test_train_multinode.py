"""`train --num-nodes 2 --devices 1` under torchrun: two "machines" on 127.0.0.1, one CPU
process each, train one model with DDP and end with identical parameters.

Each "node" is its own ``torchrun --nnodes 2 --node-rank R`` launcher (static
rendezvous at 127.0.0.1), as on two real machines. The ranks draw different batches
(their loaders are seeded with the rank), so identical parameters at the end show that
Lightning's DDP averaged the gradients of both the generator and the discriminators.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import _toy_kind as toy
import pytest
import torch
import yaml
from safetensors.torch import load_file

from semimtl_geo.checkpoint import load_model_checkpoint

DRIVER = Path(__file__).with_name("ddp_driver.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is absent")
def test_two_nodes_end_with_identical_parameters(tmp_path):
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(toy.toy_config_dict("semimtl", max_steps=3,
                                                         steps_per_epoch=3)))
    run_dir = tmp_path / "run"
    port = _free_port()
    env_drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in env_drop and not k.startswith("SLURM")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
             "--nproc-per-node", "1", "--node-rank", str(rank), "--master-addr", "127.0.0.1",
             "--master-port", str(port), str(DRIVER), str(tmp_path),
             "train", "-c", str(config), "-o", str(run_dir), "--num-nodes", "2",
             "--devices", "1", "--accelerator", "cpu"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=540)[0])
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    for node, out in zip(nodes, outputs):
        assert node.returncode == 0, out[-4000:]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, state in enumerate(ranks):
        assert state["rank"] == r and state["world_size"] == 2 and state["num_nodes"] == 2
        assert state["environment"] == "TorchElasticEnvironment"
        assert len(state["batches"]) == 3
    # Different data on each rank, yet the same weights: the gradients were all-reduced.
    assert ranks[0]["batches"] != ranks[1]["batches"]
    params0, params1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert params0.keys() == params1.keys()
    assert any(k.startswith("discriminators.") for k in params0)
    for key in params0:
        torch.testing.assert_close(params0[key], params1[key], rtol=0, atol=0, msg=key)
    # Rank 0 wrote the model, and it is the trained (shared) generator.
    saved = load_model_checkpoint(run_dir / "model.pt").model.state_dict()
    trained = {k.removeprefix("generator."): v for k, v in params0.items()
               if k.startswith("generator.")}
    for key, value in trained.items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0, msg=key)
