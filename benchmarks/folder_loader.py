"""CPU images/s of the folder pipeline (`resnets.data.folder`) against a plain torchvision one.

Both read the same image files and apply the same augmentation (shorter side random in a
range, random square crop, flip, PCA lighting, per-channel normalization):

- resnets: `FolderDataset` (decode through the shared PIL path into a uint8 tensor) +
  `train_transform` (resize / crop / flip on uint8 tensors, float only for the crop) +
  `make_loader` (seeded per-sample augmentation, persistent workers).
- reference: ``torchvision.datasets.ImageFolder`` (PIL loader) + torchvision transforms on
  PIL images (``v2.RandomShortestSize`` over the integer sizes, ``RandomCrop``,
  ``RandomHorizontalFlip``, ``ToTensor``, the same `Lighting`, ``Normalize``) + a shuffling
  DataLoader with the same worker count.

Two data sets:

- ``cifar32``: the first ``--images`` images of the shared CIFAR-10 JPEG archive extracted to
  a temporary folder (or, without it, generated 32x32 JPEGs), at the reduced sizes crop 32,
  scale (32, 60): per-sample overhead dominates.
- ``imagenet_size``: ``--large-images`` generated 500x375 JPEGs (ImageNet's typical size,
  smooth random content so they compress like photos) at the paper's sizes, crop 224, scale
  (256, 480): decoding and resizing dominate.

Each configuration runs ``--repeats`` full epochs, timed from the first batch on (worker
start-up excluded); the median is reported. Usage:

    python benchmarks/folder_loader.py --json benchmarks/results/folder_loader_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.transforms import v2

from resnets.data.folder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FolderDataset,
    Lighting,
    make_loader,
    train_transform,
)
from resnets.version import versions

SHARED_TAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / (
    "cifar10-jpg-train.tar.xz")
CROP, SCALE = 32, (32, 60)


def extract_images(tar_path: Path, out: Path, n: int) -> str:
    """The first ``n`` images of the archive as out/<class>/<name>; returns a description."""
    taken = 0
    with tarfile.open(tar_path, "r:*") as tar:
        for member in tar:
            if not (member.isfile() and member.name.lower().endswith((".jpg", ".png"))):
                continue
            target = out / Path(member.name).parent.name / Path(member.name).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            taken += 1
            if taken == n:
                break
    return f"first {taken} images of {tar_path}"


def generate_images(out: Path, n: int, size: tuple[int, int]) -> str:
    """``n`` JPEGs of ``size`` (width, height) in 10 classes: bicubic-upsampled 8x6 noise,
    smooth like photographs, so that they decode at realistic file sizes."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = out / f"c{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        coarse.resize(size, Image.Resampling.BICUBIC).save(folder / f"{i}.jpg", quality=90)
    return f"{n} generated {size[0]}x{size[1]} JPEGs"


def reference_loader(root: Path, crop: int, scale: tuple[int, int], batch_size: int,
                     workers: int) -> DataLoader:
    tf = transforms.Compose([
        v2.RandomShortestSize(list(range(scale[0], scale[1] + 1))),
        transforms.RandomCrop(crop),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        Lighting(0.1),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    return DataLoader(datasets.ImageFolder(str(root), transform=tf), batch_size=batch_size,
                      shuffle=True, num_workers=workers, drop_last=True,
                      persistent_workers=workers > 0)


def resnets_loader(root: Path, crop: int, scale: tuple[int, int], batch_size: int,
                   workers: int) -> DataLoader:
    ds = FolderDataset(root, transform=train_transform(crop, scale))
    return make_loader(ds, batch_size, train=True, seed=0, workers=workers)


def epoch_img_per_s(loader: DataLoader) -> float:
    """Images/s over one epoch, timed from the arrival of the first batch."""
    seen, start = 0, None
    for x, _ in loader:
        if start is None:
            start = time.perf_counter()
            continue
        seen += x.shape[0]
    return seen / (time.perf_counter() - start)


def compare(root: Path, crop: int, scale: tuple[int, int], batch_size: int,
            workers_list: list[int], repeats: int) -> dict:
    rows: dict[str, dict] = {}
    for workers in workers_list:
        loaders = {"reference": reference_loader(root, crop, scale, batch_size, workers),
                   "resnets": resnets_loader(root, crop, scale, batch_size, workers)}
        runs: dict[str, list[float]] = {name: [] for name in loaders}
        for _ in range(repeats):  # alternate, so that both see the same machine load
            for name, loader in loaders.items():
                runs[name].append(epoch_img_per_s(loader))
        for name, values in runs.items():
            key = f"{name}, workers={workers}"
            rows[key] = {"median_img_per_s": statistics.median(values), "runs": values}
            print(f"  {key:<24} {statistics.median(values):9.1f} img/s  "
                  f"(runs: {', '.join(f'{v:.0f}' for v in values)})")
        del loaders
    speedups = {}
    for workers in workers_list:
        ours = rows[f"resnets, workers={workers}"]["median_img_per_s"]
        ref = rows[f"reference, workers={workers}"]["median_img_per_s"]
        speedups[f"workers={workers}"] = ours / ref
        print(f"  workers={workers}: resnets / reference = {ours / ref:.2f}x")
    return {"crop": crop, "scale": list(scale), "batch_size": batch_size, "img_per_s": rows,
            "speedup_resnets_vs_reference": speedups}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000, help="CIFAR JPEGs (cifar32)")
    p.add_argument("--large-images", type=int, default=320,
                   help="generated 500x375 JPEGs (imagenet_size); 0 skips it")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per configuration")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the main process (workers always use 1)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--note", default="", help="free text saved with the results (e.g. load)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "cifar32"
        if SHARED_TAR.is_file():
            data = extract_images(SHARED_TAR, small, args.images)
        else:
            data = generate_images(small, args.images, (32, 32))
        print(f"cifar32: {data}")
        results["cifar32"] = {"data": data, **compare(small, 32, (32, 60), 128, args.workers,
                                                      args.repeats)}
        if args.large_images:
            large = Path(tmp) / "imagenet_size"
            data = generate_images(large, args.large_images, (500, 375))
            print(f"imagenet_size: {data}")
            results["imagenet_size"] = {"data": data, **compare(
                large, 224, (256, 480), 32, args.workers, args.repeats)}

    record = {
        "benchmark": "folder_loader",
        "note": args.note,
        "configs": results,
        "augmentation": "shorter side random in scale, random crop, flip, PCA lighting 0.1, "
                        "ImageNet per-channel mean/std",
        "repeats": args.repeats,
        "main_torch_threads": args.threads,
        "timing": "one epoch per run, from the first batch (worker start-up excluded); median "
                  "of the runs, alternating the two pipelines",
        "hardware": {"cpu": platform.processor() or platform.machine(),
                     "cores": os.cpu_count(),
                     "load_average_1_5_15min_before": [round(v, 2) for v in load_before],
                     "load_average_1_5_15min_after": [round(v, 2) for v in os.getloadavg()]},
        "versions": versions(),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
