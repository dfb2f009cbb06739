"""`resnets bench`: images/s of a model on synthetic data, its fraction of the device's
matmul peak and of its memory bandwidth, and torchvision's model beside it for the ImageNet
depths."""

from __future__ import annotations

import argparse
import json

from ..bench import run_benchmark


def register(sub) -> None:
    p = sub.add_parser(
        "bench", help="measure a model's images/s, FLOP/s, memory traffic and torchvision ratio",
        description="Time a registered model on synthetic data after a warm-up, set its FLOP/s "
                    "against a matmul timed on the same device and its memory traffic "
                    "against a timed copy, and for resnet18/34/50/101/152 "
                    "time torchvision's model in the same run.")
    p.add_argument("--model", required=True, help="a registered name (`resnets models`)")
    p.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=None,
                   help="images per step (default: 256 on CUDA, 16 on CPU)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="as for `resnets train`: auto (the faster of fp32 and bf16 on this "
                        "device, measured once and cached), fp32, or bf16 autocast "
                        "(default: auto)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="model and inputs in channels_last memory format (default: with "
                        "bf16 where it is native, as for `resnets train`)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model(s)")
    p.add_argument("--mode", choices=["train", "infer"], default="infer",
                   help="infer: forward only; train: forward, backward and SGD step")
    p.add_argument("--steps", type=int, default=20, help="timed steps (default: 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default: 5)")
    p.add_argument("--rounds", type=int, default=4,
                   help="chunks in which the compared models' timed steps alternate; each "
                        "reports its median chunk (default: 4)")
    p.add_argument("--image-size", type=int, default=None,
                   help="square input side (default: 224 ImageNet, 32 CIFAR)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-torchvision", action="store_true",
                   help="skip the torchvision comparison")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    p.set_defaults(func=run)


def run(args) -> int:
    res = run_benchmark(
        args.model, batch_size=args.batch_size, precision=args.precision,
        channels_last=args.channels_last, compile=args.compile, mode=args.mode,
        steps=args.steps, warmup=args.warmup, rounds=args.rounds, device=args.device,
        image_size=args.image_size, compare_torchvision=not args.no_torchvision)
    c, h, w = res["input_size"]
    print(f"{res['model']} {res['mode']} {res['precision']}"
          f"{' channels_last' if res['channels_last'] else ''}"
          f"{' compiled' if res['compile'] else ''}, batch {res['batch_size']}, {c}x{h}x{w}, "
          f"{res['device_name']}")
    if res.get("precision_choice"):
        print(f"  precision: {res['precision_choice']}")
    print(f"  {res['img_per_s']:10.1f} img/s   {res['model_tflops']:.3f} TFLOP/s of model work "
          f"({res['flops_per_image'] / 1e9:.2f} GFLOP/image)")
    print(f"  matmul peak {res['peak_tflops']:.3f} TFLOP/s ({res['peak_dtype']}): the model "
          f"reaches {100 * res['peak_fraction']:.1f}%")
    print(f"  memory traffic {res['bytes_per_image'] / 1e6:.2f} MB/image between ops; copy "
          f"bandwidth {res['bandwidth_gbs']:.1f} GB/s: the model moves "
          f"{100 * res['bandwidth_fraction']:.1f}% of it")
    tv = res["torchvision"]
    if tv is not None:
        print(f"  torchvision {tv['img_per_s']:10.1f} img/s; ours ({tv['ours']['layout']}) "
              f"{tv['ours']['img_per_s']:.1f} img/s: ratio {tv['ratio']:.2f}")
    if args.json:
        print(json.dumps(res))
    return 0
