"""`resnets models`: the registered networks with their size and cost."""

from __future__ import annotations

import json

from ..models import (
    count_macs,
    count_params,
    create_model,
    get_weights,
    list_models,
    list_weights,
    model_info,
)


def register(sub) -> None:
    p = sub.add_parser("models", help="list the registered networks (params, GMACs)")
    p.add_argument("--family", choices=["cifar", "imagenet"], help="only one family")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    p.set_defaults(func=run)


def describe(name: str) -> dict:
    info = model_info(name)
    model = create_model(name)
    return {
        "name": name,
        "family": info.family,
        "depth": info.depth,
        "params": count_params(model),
        "macs": count_macs(model, info.input_size),
        "input_size": list(info.input_size),
        "description": info.description,
        "weights": {w: get_weights(w).meta["val_error"] for w in list_weights(name)},
    }


def run(args) -> int:
    rows = [describe(n) for n in list_models(args.family)]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'name':<20} {'family':<9} {'depth':>5} {'params':>10} {'GMACs':>8}  input    "
          f"pretrained weights (validation error)")
    for r in rows:
        c, h, w = r["input_size"]
        shipped = ", ".join(f"{n} ({100 * e:.2f}%)" for n, e in r["weights"].items())
        print(f"{r['name']:<20} {r['family']:<9} {r['depth']:>5} {r['params'] / 1e6:>9.2f}M "
              f"{r['macs'] / 1e9:>8.3f}  {c}x{h}x{w:<4} {shipped or '-'}")
    return 0
