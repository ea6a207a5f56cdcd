r"""Throughput and peak memory of one SemiMTL training iteration (Algorithm 1).

One iteration = a mini-batch from each of the two datasets (Potsdam-like with seg labels,
Vaihingen-like with height labels), the G step (D frozen) and the D step (G frozen), at
the paper's ISPRS crop size (384 px). Data are random tensors, so this measures the model
and the optimisers only (loading is benchmarked by the data benchmarks).

Variants (each in its own process, so that peak memory is its own: on CUDA
``torch.cuda.max_memory_allocated``, on CPU the process's peak RSS):

* ``fp32``: one backward pass of the summed G objective;
* ``bf16``: bf16 autocast with the adversarial terms backpropagated in their own passes
  (what ``trainer.precision=bf16-mixed`` runs; semimtl_geo/training/backward.py);
* ``bf16_channels_last``: the same with channels_last tensors;
* ``fp16``: float16 autocast, separate passes (``16-mixed``, without the loss scaler);
* ``bf16_summed``: bf16 with ONE summed backward pass, the broken path that rounds the
  adversarial gradient away; shown only to price the separate passes.

Usage::

    python benchmarks/train_throughput.py --encoder resnet101 --batch 2 --iters 3
    # the CPU demo's networks (README, sixth round), JTL and SemiMTL, fp32, one thread:
    python benchmarks/train_throughput.py --encoder resnet18 --output-stride 32 --crop 96 \
        --batch 4 --seg-skip --seg-channels 128 --height-channels 128 \
        --discriminator-width 32 --threads 1 --iters 20 --warmup 3 --variants fp32 \
        --method jtl
    python benchmarks/train_throughput.py --device cuda --encoder resnet101 --batch 8
"""

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time

from semimtl_geo.checkpoint import ModelMeta


def run_variant(args: argparse.Namespace, variant: str, queue) -> None:
    import torch

    from semimtl_geo.training.config import config_from_dict
    from semimtl_geo.training.engine import SemiMTLModule

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import semimtl_geo.training.engine as engine_mod

    channels_last = variant == "bf16_channels_last"
    if variant == "bf16_summed":
        split_backward = engine_mod.backward_terms
        engine_mod.backward_terms = lambda *a, **k: split_backward(*a, **{**k, "split": False})
    cfg = config_from_dict({
        "method": args.method,
        "model": {"encoder": args.encoder, "encoder_weights": None,
                  "output_stride": args.output_stride, "seg_skip": args.seg_skip,
                  "seg_channels": args.seg_channels, "height_channels": args.height_channels,
                  "discriminator_width": args.discriminator_width},
        "data": {"datasets": [
            {"name": "potsdam", "kind": "isprs", "root": "-", "tasks": ["seg"]},
            {"name": "vaihingen", "kind": "isprs", "root": "-", "tasks": ["height"]},
        ], "crop_size": args.crop, "batch_size": args.batch},
        "trainer": {"max_steps": 1000, "channels_last": channels_last,
                    "grad_diagnostics": False},
    })
    device = torch.device(args.device)
    module = SemiMTLModule(cfg, ModelMeta()).to(device)
    opt_g, opt_d, sched = module.build_optimizers()
    b, s = args.batch, args.crop

    def batches():
        return {
            "potsdam": {"image": torch.randn(b, 3, s, s, device=device),
                        "mask": torch.randint(0, 6, (b, s, s), device=device)},
            "vaihingen": {"image": torch.randn(b, 3, s, s, device=device),
                          "height": torch.rand(b, s, s, device=device)},
        }

    dtype = torch.float16 if variant == "fp16" else torch.bfloat16
    autocast = torch.autocast(device.type, dtype=dtype, enabled=variant != "fp32")

    def iteration():
        data = batches()
        with autocast:
            _, preds = module.generator_step(data, opt_g)
            sched.step()
            if opt_d is not None:  # methods without discriminators (JTL, STL)
                module.discriminator_step(data, preds, opt_d)
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        iteration()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.iters):
        iteration()
    seconds = (time.perf_counter() - start) / args.iters
    images = 2 * b  # one mini-batch per dataset
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        kind = "GPU max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MiB on Linux
        kind = "process peak RSS"
    queue.put({
        "variant": variant, "seconds_per_iteration": seconds, "images_per_second": images / seconds,
        "peak_memory_mib": peak, "memory_kind": kind, "threads": torch.get_num_threads(),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", default="resnet101")
    parser.add_argument("--output-stride", type=int, default=8)
    parser.add_argument("--crop", type=int, default=384)
    parser.add_argument("--method", default="semimtl", help="semimtl, jtl, semisd, ...")
    parser.add_argument("--seg-skip", action="store_true", help="model.seg_skip (the demo's)")
    parser.add_argument("--seg-channels", type=int, default=512, help="model.seg_channels")
    parser.add_argument("--height-channels", type=int, default=256,
                        help="model.height_channels")
    parser.add_argument("--discriminator-width", type=int, default=64,
                        help="model.discriminator_width")
    parser.add_argument("--batch", type=int, default=2, help="crops per dataset")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--variants", nargs="*",
                        default=["fp32", "bf16", "bf16_channels_last", "bf16_summed"])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    results = []
    for variant in args.variants:
        queue = ctx.Queue()
        proc = ctx.Process(target=run_variant, args=(args, variant, queue))
        proc.start()
        results.append(queue.get())
        proc.join()
    cpu = platform.processor() or platform.machine()
    header = (f"{args.method} iteration, {args.encoder} OS{args.output_stride}, "
              f"seg_skip {args.seg_skip}, seg_channels {args.seg_channels}, "
              f"height_channels {args.height_channels}, "
              f"discriminator_width {args.discriminator_width}, {args.crop} px, "
              f"{args.batch} crops x 2 datasets, device {args.device} ({cpu})")
    print(header)
    print("| variant | s / iteration | images / s | peak memory (MiB) |")
    print("| --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['variant']} | {r['seconds_per_iteration']:.2f} | {r['images_per_second']:.2f} "
              f"| {r['peak_memory_mib']:.0f} ({r['memory_kind']}) |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"setup": vars(args), "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
