"""`resnets weights`: the pretrained weights shipped with the package, and publishing new ones."""

from __future__ import annotations

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
    cmds = p.add_subparsers(dest="action", metavar="ACTION")
    ls = cmds.add_parser("list", help="the shipped weights (default)")
    ls.add_argument("--json", action="store_true", help="the full metadata as JSON")
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
    p.set_defaults(func=run, action="list", json=False)


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
    if args.json:
        print(json.dumps([{"name": w.name, "file": w.file, "sha256": w.sha256, **w.meta}
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
