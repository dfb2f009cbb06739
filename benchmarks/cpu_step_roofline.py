"""The training step's roofline: per kind of op, its time, the bytes it moves and the FLOPs it
does, against this machine's copy bandwidth and matmul peak.

One process, the bench's synthetic step (forward, cross-entropy, backward, SGD with
momentum), recorded op by op with `resnets.roofline.record_ops` after a warm-up; each kind's
time is the median over ``--repeats`` recorded steps. The bound of a call is
``max(bytes / bandwidth, FLOPs / peak)``; "of limit" is the bound over the measured time
(above 100%: the op's operands came from cache, not memory). The step's own img/s is timed
without the recorder. Stop other work on the cores first. Usage:

    python benchmarks/cpu_step_roofline.py --models resnet20,resnet56 --threads 1 \
        --markdown benchmarks/results/cpu_step_roofline_amd_epyc.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from resnets import create_model
from resnets.bench import make_step, matmul_peak_tflops
from resnets.device import cpu_model
from resnets.roofline import copy_bandwidth_gbs, record_ops, summarize
from resnets.version import versions


def measure(name: str, *, batch: int, precision: str, channels_last: bool, repeats: int,
            bandwidth: float, peak: float) -> dict:
    torch.manual_seed(0)
    model = create_model(name)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step = make_step(model, batch_size=batch, input_size=(3, 32, 32),
                     device=torch.device("cpu"), mode="train", precision=precision,
                     channels_last=channels_last, num_classes=10)
    for _ in range(3):
        step()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    step_s = statistics.median(seconds)
    recorded = [record_ops(step) for _ in range(repeats)]
    # The median step by total op time stands for the kinds' numbers.
    records = sorted(recorded, key=lambda rs: sum(r.seconds for r in rs))[repeats // 2]
    kinds = summarize(records, bandwidth_gbs=bandwidth, peak_tflops=peak)
    total_bytes = sum(r.bytes for r in records)
    return {
        "model": name, "batch": batch, "precision": precision, "channels_last": channels_last,
        "step_seconds": step_s, "img_per_s": batch / step_s,
        "recorded_seconds": sum(r.seconds for r in records),
        "bytes_per_image": total_bytes / batch,
        "bandwidth_fraction": total_bytes / step_s / (bandwidth * 1e9),
        "flops_per_image": sum(r.flops for r in records) / batch,
        "bound_seconds": sum(k.bound_seconds for k in kinds),
        "kinds": [{"kind": k.kind, "calls": k.calls, "seconds": k.seconds, "bytes": k.bytes,
                   "flops": k.flops, "bound_seconds": k.bound_seconds,
                   "limit_fraction": k.limit_fraction, "bound_by": k.bound_by,
                   "ops": sorted(k.names)} for k in kinds],
    }


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# The CPU training step's roofline ({m['cpu']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['versions'].get('torch')}, "
             f"{m['threads']} thread(s). Copy bandwidth (STREAM-like, 256 MiB fp32 arrays, "
             f"read + write): **{m['bandwidth_gbs']:.1f} GB/s**; matmul peak "
             f"(2048^2, {result['runs'][0]['precision']}): "
             f"**{1e3 * m['peak_tflops']:.1f} GFLOP/s**. Bytes are counted at each aten op's "
             "boundary (every operand read once, every result written once: eager's traffic "
             "with no reuse between ops); FLOPs are 2 per multiply-add. The bound of a call is "
             "max(bytes / bandwidth, FLOPs / peak); 'of limit' = bound / time (over 100%: the "
             "operands came from cache).", ""]
    for run in result["runs"]:
        lines += [f"## {run['model']}, batch {run['batch']}, {run['precision']}"
                  f"{' channels_last' if run['channels_last'] else ''}", "",
                  f"Step {1e3 * run['step_seconds']:.0f} ms = **{run['img_per_s']:.1f} img/s** "
                  f"(recorded ops add up to {1e3 * run['recorded_seconds']:.0f} ms); "
                  f"{run['bytes_per_image'] / 1e6:.2f} MB and "
                  f"{run['flops_per_image'] / 1e9:.3f} GFLOP per image; the step moves "
                  f"{100 * run['bandwidth_fraction']:.1f}% of the copy bandwidth. The ops' bounds "
                  f"add up to {1e3 * run['bound_seconds']:.0f} ms: the step runs at "
                  f"**{100 * run['bound_seconds'] / run['step_seconds']:.0f}% of its roofline**.",
                  "",
                  "| kind | calls | ms | share | MB | GFLOP | GB/s | GFLOP/s | bound by "
                  "| of limit |", "|---|---|---|---|---|---|---|---|---|---|"]
        total = run["recorded_seconds"]
        for k in run["kinds"]:
            if k["seconds"] < 0.001 * total:
                continue
            s = k["seconds"]
            lines.append(
                f"| {k['kind']} | {k['calls']} | {1e3 * s:.1f} | {100 * s / total:.1f}% | "
                f"{k['bytes'] / 1e6:.0f} | {k['flops'] / 1e9:.2f} | {k['bytes'] / s / 1e9:.1f} | "
                f"{k['flops'] / s / 1e9:.1f} | {k['bound_by']} | "
                f"{100 * k['limit_fraction']:.0f}% |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet20,resnet56")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the runs use 1)")
    p.add_argument("--repeats", type=int, default=3, help="recorded and timed steps")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--markdown", default=None, help="write the table here")
    p.add_argument("--render", default=None,
                   help="only write the markdown of this earlier --json result")
    args = p.parse_args()
    if args.render:
        with open(args.render) as f:
            result = json.load(f)
    else:
        torch.set_num_threads(args.threads)
        bandwidth = copy_bandwidth_gbs("cpu")
        dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
        peak = matmul_peak_tflops("cpu", dtype)
        runs = [measure(name, batch=args.batch_size, precision=args.precision,
                        channels_last=args.channels_last, repeats=args.repeats,
                        bandwidth=bandwidth, peak=peak) for name in args.models.split(",")]
        result = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                              "threads": args.threads, "bandwidth_gbs": bandwidth,
                              "peak_tflops": peak, "versions": versions()},
                  "runs": runs}
    text = markdown(result)
    print(text)
    if args.json and not args.render:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")

if __name__ == "__main__":
    main()
