"""`resnets export`: a checkpoint's network as ONNX, TorchScript or a torch.export program."""

from __future__ import annotations

import argparse

from ..errors import printable
from ..serve.export import export_checkpoint


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX, TorchScript or torch.export",
        description="Export the network of a checkpoint (input: float32 images (B, 3, H, W) "
                    "with a dynamic batch axis, pixels scaled to [0, 1], then the recorded mean "
                    "subtracted; output: logits) with the "
                    "preprocessing record embedded, reload the file, and print its largest "
                    "difference to the eager model on image-like inputs. ONNX needs the "
                    "export extra: pip install \"resnets[export]\".")
    p.add_argument("--checkpoint", required=True,
                   help="a .safetensors checkpoint or a shipped weight name (resnet20.cifar10)")
    p.add_argument("--format", dest="fmt", required=True,
                   choices=["onnx", "torchscript", "exported-program"])
    p.add_argument("--out", required=True,
                   help="file to write: .onnx (onnx), .pt (torchscript), .pt2 (exported-program); "
                        "a suffix of another format is refused")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file (without it, one is refused)")
    p.add_argument("--batch-size", type=int, default=2, help="example batch (>= 2)")
    # Checked (finite, >= 0) by export_model, which gives the same error to the API.
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest accepted |exported - eager| logit difference (finite, >= 0)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="reload the export and compare it with the eager model")
    p.set_defaults(func=run)


def run(args) -> int:
    report = export_checkpoint(args.checkpoint, args.out, args.fmt, batch_size=args.batch_size,
                               verify=args.verify, tolerance=args.tolerance,
                               overwrite=args.overwrite)
    print(f"wrote {printable(report.path)} ({report.format})")
    if args.verify:
        sizes = ", ".join(str(n) for n in report.batch_sizes)
        print(f"max abs difference vs eager: {report.max_abs_diff:.3g} (batch sizes {sizes}; "
              f"logits up to {report.max_abs_logit:.3g}; tolerance {report.tolerance:g})")
    return 0
