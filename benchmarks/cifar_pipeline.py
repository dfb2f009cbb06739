"""End-to-end CIFAR training throughput: resnets' pipeline against a straightforward reference.

Reference: torchvision transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor,
Normalize) in a DataLoader with worker processes, and the same network eager, NCHW, fp32.
resnets: the device-resident uint8 pipeline (batched crop / flip / mean subtraction, no
workers) in fp32 NCHW and, where the CPU has native bf16, in bf16 + channels_last; then the
trainer's `--precision auto`, which measures the two on first use and keeps the faster: the
JSON says whether auto lands within 10% of the fastest row.

Every config runs in this one process, on the same decoded images, timing only training steps
after a warm-up. Usage:

    python benchmarks/cifar_pipeline.py --data ../shared/data/cifar10-jpg-train.tar.xz \
        --json benchmarks/results/cifar_pipeline_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from resnets import create_model
from resnets.data import DeviceLoader, Normalization, channel_stats, load_image_set
from resnets.device import cpu_model
from resnets.train.precision import choose, native_bf16
from resnets.version import versions


class UInt8Images(Dataset):
    """The decoded images as PIL images, the way a typical CIFAR script feeds torchvision."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images = images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C) for PIL
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def time_steps(model, batches, steps: int, warmup: int, amp: bool, channels_last: bool) -> float:
    """Images per second over ``steps`` training steps after ``warmup`` untimed ones."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    seen, start = 0, None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            seen += y.numel()
        if i + 1 == warmup + steps:
            break
    return seen / (time.perf_counter() - start)


def reference(images, labels, args) -> float:
    mean, std = channel_stats(images)
    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize((mean / 255).tolist(), (std / 255).tolist()),
    ])
    loader = DataLoader(UInt8Images(images, labels, tf), batch_size=args.batch_size,
                        shuffle=True, num_workers=args.workers, drop_last=True,
                        persistent_workers=args.workers > 0)
    torch.manual_seed(0)
    model = create_model(args.model)
    return time_steps(model, iter(loader), args.steps, args.warmup, amp=False,
                      channels_last=False)


def ours(images, labels, args, amp: bool, channels_last: bool) -> float:
    norm = Normalization.fit(images, "per_pixel_mean")
    loader = DeviceLoader(images, labels, batch_size=args.batch_size, device="cpu",
                          normalization=norm, train=True, seed=0, channels_last=channels_last)
    torch.manual_seed(0)
    model = create_model(args.model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def forever():
        epoch = 0
        while True:
            yield from loader.epoch_batches(epoch)
            epoch += 1

    return time_steps(model, forever(), args.steps, args.warmup, amp=amp,
                      channels_last=channels_last)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="CIFAR source (see `resnets train --data`)")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps per config")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()

    data = load_image_set(args.data, split="train")
    images, labels = data.images[:10000], data.labels[:10000]
    native = native_bf16(torch.device("cpu"))
    fp32, bf16 = "resnets pipeline, fp32 NCHW", "resnets pipeline, bf16 channels_last"
    rows = {"reference (torchvision DataLoader, fp32 NCHW)": reference(images, labels, args),
            fp32: ours(images, labels, args, False, False)}
    if native:
        rows[bf16] = ours(images, labels, args, True, True)
    auto = choose(torch.device("cpu"), args.model, {}, args.batch_size)
    rows["resnets pipeline, --precision auto (trainer default)"] = ours(
        images, labels, args, auto.bf16, auto.channels_last)
    base = rows["reference (torchvision DataLoader, fp32 NCHW)"]
    default = rows["resnets pipeline, --precision auto (trainer default)"]
    fastest = max(rows[fp32], rows.get(bf16, 0.0))
    for name, ips in rows.items():
        print(f"{name:<62} {ips:8.1f} img/s  {ips / base:5.2f}x")
    print(f"auto chose {'bf16' if auto.bf16 else 'fp32'}: {auto.reason}")
    result = {
        "benchmark": "cifar_pipeline",
        "model": args.model, "batch_size": args.batch_size, "steps": args.steps,
        "warmup": args.warmup, "reference_workers": args.workers,
        "data": data.source, "images_used": len(labels),
        "img_per_s": rows, "speedup_default_vs_reference": default / base,
        "auto_choice": {"bf16": auto.bf16, "reason": auto.reason,
                        "fraction_of_fastest": default / fastest,
                        "within_10pct_of_fastest": default >= 0.9 * fastest},
        "cpu_native_bf16": native,
        "hardware": {"cpu": cpu_model(), "cores": os.cpu_count(),
                     "torch_threads": torch.get_num_threads()},
        "versions": versions(),
    }
    print(f"speed-up of the trainer's default over the reference: {default / base:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
