"""`resnets analyze responses`: the layer-response analysis of the paper's Fig. 7."""

from __future__ import annotations

import json
from pathlib import Path

from ..analysis.responses import layer_response_std, plot_responses, responses_undefined
from ..checkpoint import load_checkpoint
from ..data import DeviceLoader, Normalization
from ..device import resolve_device
from ..errors import DataError, UserError, printable
from ..eval.checkpoint_eval import checkpoint_split


def register(sub) -> None:
    p = sub.add_parser("analyze", help="analyses of trained nets (Fig. 7 layer responses)")
    what = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    r = what.add_parser(
        "responses", help="std of each 3x3 layer's response (Fig. 7)",
        description="For each checkpoint, the standard deviation of every 3x3 layer's output "
                    "after BN and before the ReLU / addition, on the test split of --data "
                    "(the paper's Fig. 7: trained nets on test data), or, where the data has "
                    "none, the checkpoint run's held-out validation split (or --split). Give "
                    "the final weights (a finished run's last.safetensors, an experiment's "
                    "final.safetensors), as the paper does. Writes responses.json and "
                    "responses.png, both labelled with the split, to --out.")
    r.add_argument("--checkpoint", action="append", required=True,
                   help="a checkpoint, the net's final weights (repeat for several nets)")
    r.add_argument("--data", default=None,
                   help="dataset source: the run's own data for --split val/train (checked "
                        "against the checkpoint's data fingerprint; never a path read from "
                        "the checkpoint, never a download unless the run itself used "
                        "torchvision's copy); required for imported weights, whose --split "
                        "train is every training image)")
    r.add_argument("--split", choices=["val", "train", "test"], default=None,
                   help="default: test where --data has a test split, else val (said in the "
                        "output)")
    r.add_argument("--out", required=True, help="folder for responses.json and responses.png")
    r.add_argument("--overwrite", action="store_true",
                   help="replace responses.json / responses.png already in --out (without it, "
                        "they are refused)")
    r.add_argument("--batch-size", type=int, default=500)
    r.add_argument("--device", default="auto")
    r.add_argument("--cache-dir", default=None)
    r.set_defaults(func=run_responses)


OUTPUTS = ("responses.json", "responses.png")


def run_responses(args) -> int:
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}. Leave it out for "
                        f"the default of 500, or lower it to save memory.")
    device = resolve_device(args.device)
    # Every input is read and checked, and then the output, before the first net is run.
    nets = []
    for path in args.checkpoint:
        model, meta = load_checkpoint(path, device=device)
        why = responses_undefined(model)
        if why is not None:
            raise UserError(f"--checkpoint {path} holds {meta['model']}: {why}.")
        split, *images = _images(meta, args, str(path))
        nets.append((path, model, meta, split, *images))
    out = Path(args.out)
    _check_out(out, args.overwrite)
    results = []
    for path, model, meta, split, images, labels, source in nets:
        loader = DeviceLoader(images, labels, batch_size=args.batch_size, device=device,
                              normalization=Normalization.from_dict(meta["normalization"]),
                              train=False)
        layers = layer_response_std(model, loader.epoch_batches(0))
        results.append({"checkpoint": str(path), "model": meta["model"],
                        "model_kwargs": meta.get("model_kwargs", {}), "split": split,
                        "data_source": source, "n": len(labels), "layers": layers})
        stds = [layer["std"] for layer in layers]
        print(f"{meta['model']}: {len(stds)} layers, mean std {sum(stds) / len(stds):.4f} "
              f"on {len(labels)} {split} images")
    out.mkdir(parents=True, exist_ok=True)
    png = plot_responses({r["model"]: [layer["std"] for layer in r["layers"]] for r in results},
                         out / "responses.png",
                         data=f"the {results[0]['split']} split "
                              f"({', '.join(str(r['n']) for r in results)} images)")
    (out / "responses.json").write_text(json.dumps({"analysis": "responses",
                                                    "results": results}, indent=2) + "\n")
    print(f"wrote {printable(out / 'responses.json')} and {printable(png)}")
    return 0


def _images(meta: dict, args, name: str) -> tuple:
    """``(split, images, labels, source)``: ``--split``, or without it the test split, else
    (the data has none) the run's held-out val split, said in the output."""
    split = args.split or "test"
    try:
        return (split, *checkpoint_split(meta, data=args.data, split=split,
                                         cache_dir=args.cache_dir, name=name))
    except DataError as e:
        if args.split is not None or "no test" not in str(e):
            raise
    print("split: val (the data has no test split; the paper's Fig. 7 is on test data): the "
          "checkpoint run's held-out validation images")
    return ("val", *checkpoint_split(meta, data=args.data, split="val",
                                     cache_dir=args.cache_dir, name=name))


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that is not a folder, or that holds results, unless ``overwrite``."""
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            raise UserError(f"--out {out}: {parent} is a file, not a folder. Choose a folder "
                            f"for responses.json and responses.png, e.g. --out results/fig7.")
        if parent.exists():
            break
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not overwrite:
        raise UserError(f"--out {out} already holds {' and '.join(existing)} of an earlier "
                        f"analysis. Pass --overwrite to replace them, or choose another --out.")
