"""`resnets weights`: the pretrained weights shipped with the package, and publishing new ones."""

from __future__ import annotations

import hashlib
import json

from ..data import describe_data
from ..models import get_weights, list_weights
from ..serve.publish import SHARED_CIFAR10, publish_run


def register(sub) -> None:
    p = sub.add_parser(
        "weights", help="list the shipped pretrained weights, or publish a finished run",
        description="list: every shipped weight with its validation error and training "
                    "record. publish: copy a finished run's final (last-iteration) weights into "
                    "the package as <model>.<dataset> with their sha256 and metadata (a "
                    "developer command; commit the result).")
    json_help = ("the metadata as JSON (a per-pixel mean image as its shape and the sha256 of "
                 "its JSON: the image itself is stored once, in the weights file)")
    p.add_argument("--json", action="store_true", help=json_help)  # `weights --json` lists
    cmds = p.add_subparsers(dest="action", metavar="ACTION")
    ls = cmds.add_parser("list", help="the shipped weights (default)")
    # its own dest: a subcommand's default would overwrite `weights --json list`
    ls.add_argument("--json", dest="list_json", action="store_true", help=json_help)
    pub = cmds.add_parser("publish", help="publish a finished run's final weights")
    pub.add_argument("run_dir", help="a finished run directory (final.safetensors or last)")
    pub.add_argument("--name", required=True, help="<model>.<dataset>, e.g. resnet20.cifar10")
    pub.add_argument("--data", default=None,
                     help="one line describing the training data (default: the shared JPEG "
                          "CIFAR-10 copy)")
    pub.add_argument("--source", default=None, metavar="DATA",
                     help="where to read the run's validation split, on which the published "
                          "weights are measured in fp32 (default: the run's --data)")
    pub.add_argument("--cache-dir", default=None, help="decoded-data cache for --source")
    p.set_defaults(func=run, action="list", list_json=False)


def json_normalization(norm: dict) -> dict:
    """A normalization record for listing: a per-pixel mean image (3 x 32 x 32 numbers, the
    bulk of the metadata) becomes its shape and sha256, so that equal images show as equal;
    a per-channel one (3 numbers) stays as it is."""
    if norm.get("kind") != "per_pixel_mean":
        return norm
    mean, shape = norm["mean"], []
    while isinstance(mean, list):  # the nested lists' lengths: (3, H, W)
        shape.append(len(mean))
        mean = mean[0] if mean else None
    digest = hashlib.sha256(json.dumps(norm["mean"]).encode()).hexdigest()
    return {"kind": norm["kind"], "mean_shape": shape, "mean_sha256": digest,
            "std": norm.get("std")}


def run(args) -> int:
    if args.action == "publish":
        w = publish_run(args.run_dir, name=args.name, data=args.data or SHARED_CIFAR10,
                        source_data=args.source, cache_dir=args.cache_dir)
        print(f"published {w.name}: {w.path} (sha256 {w.sha256[:16]}..., validation error "
              f"{100 * w.meta['val_error']:.2f}% logged in training, "
              f"{100 * w.meta['val_error_fp32']:.2f}% measured now by `resnets eval` in fp32; "
              f"data {describe_data(w.meta['data_fingerprint'])}). Commit {w.path.parent}.")
        return 0
    weights = [get_weights(n) for n in list_weights()]
    if args.json or args.list_json:
        print(json.dumps([{"name": w.name, "file": w.file, "sha256": w.sha256, **w.meta,
                           "normalization": json_normalization(w.meta["normalization"])}
                          for w in weights]))
        return 0
    if not weights:
        print("no pretrained weights shipped yet (they come from `make reproduce`).")
        return 0
    print(f"{'name':<22} {'val error':>9} {'iterations':>10} {'train h':>8}  recipe, device")
    for w in weights:
        m = w.meta
        print(f"{w.name:<22} {100 * m['val_error']:>8.2f}% {m['iterations']:>10} "
              f"{m['train_time_s'] / 3600:>8.2f}  {m['recipe']}, {'; '.join(m['device'])}")
        fp = m.get("data_fingerprint")
        print(f"{'':<22} data: {describe_data(fp) if fp else 'no fingerprint recorded'}")
    print("val error: logged by training at the last iteration on the held-out split (the "
          "tables' and README's number); --json also gives val_error_fp32, what `resnets "
          "eval` measures.")
    return 0
