"""`resnets predict`: top-k classes of image files and folders with a checkpoint, or with an
ensemble of checkpoints (repeated --checkpoint: averaged softmax scores)."""

from __future__ import annotations

import json
import sys

from ..device import resolve_device
from ..errors import UserError, printable
from ..eval.ensemble import ensemble_weights
from ..serve.predict import EnsemblePredictor, Failure, Predictor, find_images


def register(sub) -> None:
    p = sub.add_parser(
        "predict", help="classify image files with a checkpoint",
        description="Print the top-k classes of each image. Folders are searched recursively "
                    "for files Pillow reads. Images are resized and normalized as the "
                    "checkpoint records (CIFAR: the whole image to 32x32; imported ImageNet "
                    "weights: resize and center crop). An unreadable file is reported with "
                    "its path and the others go on; the exit status is 1 when any failed. "
                    "Several --checkpoint options predict as an ensemble: each member "
                    "prepares the image as its own checkpoint records, their softmax scores "
                    "are averaged, and each line ends with every member's top class.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders")
    p.add_argument("--checkpoint", required=True, action="append",
                   help="a .safetensors checkpoint (resnets train or resnets import) or a "
                        "shipped weight name (resnet20.cifar10); repeat it for an ensemble")
    p.add_argument("--weights", default=None, metavar="W1,W2,...",
                   help="ensemble weights, one positive number per --checkpoint in order "
                        "(normalized to sum to 1; default: equal)")
    p.add_argument("--topk", type=int, default=5, help="classes shown per image")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true",
                   help='end with one JSON line: {"predictions": [{"path", "topk": [{"class", '
                        '"prob"}], "members": [{"class", "prob"}] (ensembles only)}], '
                        '"failed": [{"path", "error"}]}; bytes of names that are not UTF-8 '
                        'appear as \\xNN')
    p.set_defaults(func=run)


def run(args) -> int:
    if args.topk < 1:
        raise UserError(f"--topk must be at least 1, got {args.topk}.")
    device = resolve_device(args.device)
    if len(args.checkpoint) > 1 or args.weights is not None:
        weights = ensemble_weights(args.weights, len(args.checkpoint))  # before any loading
        predictor = EnsemblePredictor.from_checkpoints(args.checkpoint, device=device,
                                                       batch_size=args.batch_size,
                                                       weights=weights)
    else:
        predictor = Predictor.from_checkpoint(args.checkpoint[0], device=device,
                                              batch_size=args.batch_size)
    paths, failed = find_images(args.inputs)
    if not paths and not failed:
        raise UserError(f"no image files found in {' '.join(map(printable, args.inputs))} "
                        f"(searched for extensions Pillow reads, e.g. .png .jpg .webp).")
    for f in failed:
        print(f.line(), file=sys.stderr)
    predictions = []
    for result in predictor.predict(paths, topk=args.topk):
        if isinstance(result, Failure):
            failed.append(result)
            print(result.line(), file=sys.stderr)
            continue
        predictions.append(result)
        print(result.line())  # names that are not UTF-8 are escaped, never a crash midway
    print(f"{len(predictions) + len(failed)} images: {len(predictions)} ok, "
          f"{len(failed)} failed")
    if args.json:
        print(json.dumps({"predictions": [p.to_dict() for p in predictions],
                          "failed": [f.to_dict() for f in failed]}))
    return 1 if failed else 0
