"""`resnets eval`: top-1 / top-5 error (top-5 with more than 5 classes), per-class accuracy and
confusion matrix of a checkpoint, or of an ensemble of checkpoints (repeated --checkpoint)
beside each of its members."""

from __future__ import annotations

import json
import math
import sys

from ..errors import UserError, printable
from ..eval import checkpoint_eval
from ..eval.ensemble import evaluate_ensemble


def register(sub) -> None:
    p = sub.add_parser(
        "eval", help="measure a checkpoint on a dataset split",
        description="Evaluate a checkpoint. --split val re-creates the checkpoint run's "
                    "held-out split (same --val-split and seed) from the training images of "
                    "--data, which must be the images the run trained on, in the same order "
                    "(compared by the data fingerprint the run recorded); --split test needs "
                    "a source with a test split (the official release, or a folder with "
                    "test/). A checkpoint without a training config "
                    "(imported weights, e.g. from `resnets import`) needs --data, and --split "
                    "train means every training image of it. Several --checkpoint options "
                    "test their ensemble (the paper's Table 5): the members' softmax scores, "
                    "each from its own preprocessing, are averaged; every member's error is "
                    "shown beside the ensemble's.")
    p.add_argument("--checkpoint", required=True, action="append",
                   help="a .safetensors checkpoint or a shipped weight name (resnet20.cifar10); "
                        "repeat it to test an ensemble")
    p.add_argument("--weights", default=None, metavar="W1,W2,...",
                   help="ensemble weights, one positive number per --checkpoint in order "
                        "(normalized to sum to 1; default: equal)")
    p.add_argument("--data", default=None,
                   help="dataset source: for --split val/train the run's own data, checked "
                        "against the checkpoint's data fingerprint (a mismatch is refused). "
                        "Never a path read from the checkpoint; left out, nothing is "
                        "downloaded (only a run that used torchvision's CIFAR-10 copy reads "
                        "it from the cache). Required for imported weights")
    p.add_argument("--split", choices=["test", "val", "train"], default="val")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--protocol", choices=["center", "ten_crop", "multi_scale"], default=None,
                   help="test protocol of the paper (ImageNet: shorter side 256 + center 224 "
                        "crop; 10 crops; whole image at 5 scales with flips). For 32x32 CIFAR "
                        "nets the analogues: the image; pad-4 corner/center crops + flips; "
                        "scales 32/40/48 + flips. Default: center")
    p.add_argument("--workers", type=int, default=4, help="decoding processes (folders)")
    p.add_argument("--json", action="store_true",
                   help="end with one JSON line of the results (standard JSON: null for the "
                        "accuracy of a class without samples)")
    p.set_defaults(func=run)


def json_line(record) -> str:
    """``record`` as one line of standard JSON: NaN and inf (the accuracy of a class without
    samples) become null, and names that are not UTF-8 show their bytes as ``\\xNN``."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, str):
            return printable(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(record), allow_nan=False)


def _accuracy(acc: float) -> str:
    return f"{100 * acc:6.2f}%" if math.isfinite(acc) else "    - (no samples)"


def run(args) -> int:
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}. Leave it out for "
                        f"the default of 500, or lower it to save memory.")
    if args.workers < 0:
        # Checked for every data source: CIFAR sets ignore it, folders would fail in DataLoader.
        raise UserError(f"--workers must be >= 0 (0 decodes in this process), got "
                        f"{args.workers}.")
    if len(args.checkpoint) > 1 or args.weights is not None:
        return _run_ensemble(args)
    # Looked up on the module at call time: tests replace it there.
    res = checkpoint_eval.evaluate_checkpoint(
        args.checkpoint[0], data=args.data, split=args.split, batch_size=args.batch_size,
        device=args.device, cache_dir=args.cache_dir, protocol=args.protocol,
        workers=args.workers)
    if "warning" in res:
        print(f"warning: {printable(res['warning'])}", file=sys.stderr)
    print(f"{res['model']} on {res['split']} split of {printable(res['data_source'])}: "
          f"n={res['n']}")
    top5 = f"  top-5 error {100 * res['top5_error']:.2f}%" if _shows_top5(res) else ""
    print(f"top-1 error {100 * res['top1_error']:.2f}%{top5}  loss {res['loss']:.4f}")
    if "protocol" in res:
        print(_protocol_line(res, "per image"))
    if "confusion" in res:
        names, width = _per_class("per-class accuracy", res["classes"],
                                  res["per_class_accuracy"])
        print("confusion matrix (rows: true class, columns: predicted):")
        for name, row in zip(names, res["confusion"], strict=True):
            print(f"  {name:<{width}} " + " ".join(f"{v:5d}" for v in row))
    if args.json:
        print(json_line(res))
    return 0


def _shows_top5(res: dict) -> bool:
    """Top-5 error says something only with more than 5 classes (else it is always 0)."""
    return len(res["classes"]) > 5


def _protocol_line(res: dict, per: str) -> str:
    """The protocol a result used and its views; for multi_scale the sides it resized to
    (they follow the net's training size, e.g. 32, 37, 55, 69, 91 for 32-pixel crops)."""
    line = f"protocol {res['protocol']}: {res['views_per_image']} views {per}"
    if "scales" in res:
        flips = " (each with its mirror image)" if res["views_per_scale"] == 2 else ""
        line += (f": shorter side {', '.join(map(str, res['scales']))} px, "
                 f"{res['views_per_scale']} view(s) per scale{flips}")
    return line


def _per_class(title: str, classes: list[str], accuracies: list) -> tuple[list[str], int]:
    """Print each class's accuracy under ``title``; returns the printed names and their width."""
    names = [printable(c) for c in classes]
    width = max(len(c) for c in names)
    print(f"{title}:")
    for name, acc in zip(names, accuracies, strict=True):
        print(f"  {name:<{width}} {_accuracy(acc)}")
    return names, width


def _run_ensemble(args) -> int:
    res = evaluate_ensemble(args.checkpoint, weights=args.weights, data=args.data,
                            split=args.split, batch_size=args.batch_size, device=args.device,
                            cache_dir=args.cache_dir, protocol=args.protocol,
                            workers=args.workers)
    ens = res["ensemble"]
    print(f"ensemble of {len(res['members'])} on {res['split']} split of "
          f"{printable(res['data_source'])}: n={res['n']}")
    if res["note"]:
        print(f"note: {res['note']}")
    for member in res["members"]:
        if "warning" in member:
            print(f"warning: {printable(member['warning'])}", file=sys.stderr)
    if "protocol" in ens:
        print(_protocol_line(ens, "per image and member"))
        if "scales" not in ens:  # members trained at different sizes used their own sides
            for m in res["members"]:
                if "scales" in m:
                    print(f"  {printable(m['checkpoint'])}: " + _protocol_line(m, "per image"))
    rows = [(f"{m['model']} {printable(m['checkpoint'])}", f"{m['weight']:.3f}", m)
            for m in res["members"]]
    rows.append(("ensemble", "", ens))
    width = max(len(name) for name, _, _ in rows)
    top5 = _shows_top5(res)
    print(f"  {'':<{width}}  weight    top-1" + ("    top-5" if top5 else "") + "    loss")
    for name, weight, r in rows:
        print(f"  {name:<{width}}  {weight:>6}  {100 * r['top1_error']:6.2f}%  "
              + (f"{100 * r['top5_error']:6.2f}%  " if top5 else "") + f"{r['loss']:.4f}")
    if "confusion" in ens:
        _per_class("ensemble per-class accuracy", res["classes"], ens["per_class_accuracy"])
    if args.json:
        print(json_line(res))
    return 0
