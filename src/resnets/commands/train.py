"""`resnets train`: train a CIFAR ResNet with a recipe (default: the paper's CIFAR-10 recipe)."""

from __future__ import annotations

import argparse

from ..train.config import field_docs, list_recipes, resolve_config

# CLI flag -> TrainConfig field, for the options that map one to one.
FIELDS = {
    "model": str, "data": str, "cache_dir": str, "iterations": int, "batch_size": int,
    "lr": float, "warmup_lr": float, "momentum": float, "weight_decay": float,
    "val_split": int, "train_subset": int, "seed": int, "device": str, "precision": str,
    "log_every": int, "eval_every": int, "save_every": int, "max_nonfinite": int,
    "normalization": str, "init": str, "num_classes": int, "pipeline": str, "crop_size": int,
    "eval_resize": int, "lighting": float, "workers": int, "schedule": str,
}


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a network (CIFAR-10 recipes of the paper)",
        description="Train a registered network. Values come from --recipe, then from the "
                    "flags given. The resolved config is written to OUT/config.json and into "
                    "every checkpoint. Stop with Ctrl-C or SIGTERM at any time: the run saves "
                    "and can be continued with --resume auto.")
    p.add_argument("--recipe", default="cifar10-paper",
                   help=f"recipe name ({', '.join(list_recipes())}) or a .toml path "
                        f"(default: cifar10-paper)")
    p.add_argument("--out", default=None, help="run directory (default: runs/MODEL)")
    p.add_argument("--resume", metavar="auto|PATH", default=None,
                   help="continue a run: 'auto' takes the newest complete checkpoint in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds one: deletes its checkpoints, "
                        "metrics and logs first (without it, such a directory is refused)")
    p.add_argument("--quiet", action="store_true", help="log lines instead of a progress bar")
    g = p.add_argument_group("recipe overrides (default: the recipe's value)")
    docs = field_docs()
    for name, typ in FIELDS.items():
        g.add_argument("--" + name.replace("_", "-"), type=typ, default=None,
                       help=docs.get(name, "").replace("%", "%%"))
    g.add_argument("--milestones", type=lambda s: [int(v) for v in s.split(",")], default=None,
                   help="comma-separated iterations where lr is divided by 10 "
                        "(default: the recipe's, rescaled when --iterations is given)")
    g.add_argument("--shortcut", choices=["A", "B", "C"], help="shortcut option of the model")
    g.add_argument("--unit", help="residual-unit variant, e.g. full_preact")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--skip-bad-images", action=argparse.BooleanOptionalAction, default=None,
                   help="skip unreadable image files (counted) instead of stopping")
    g.add_argument("--freeze", type=lambda s: [v for v in s.split(",") if v], default=None,
                   help="fine-tuning: comma-separated parts kept fixed (stem,layer1,...)")
    g.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="with torchrun: BN statistics over all processes")
    g.add_argument("--scale-range", type=lambda s: [int(v) for v in s.split(",")],
                   default=None, help="folder pipeline: LO,HI of the random shorter side")
    p.set_defaults(func=run)


# Flags with their own argparse definitions (not in FIELDS) that also override the recipe.
OTHER_OVERRIDES = ("milestones", "channels_last", "compile", "deterministic", "skip_bad_images",
                   "freeze", "sync_bn", "scale_range")


def overrides_from_args(args) -> dict:
    """The recipe overrides the user actually gave (flags left out are absent)."""
    overrides = {name: getattr(args, name) for name in (*FIELDS, *OTHER_OVERRIDES)
                 if getattr(args, name) is not None}
    model_kwargs = {k: getattr(args, k) for k in ("shortcut", "unit") if getattr(args, k)}
    if model_kwargs:
        overrides["model_kwargs"] = model_kwargs
    return overrides


def run(args) -> int:
    from ..train.loop import Trainer

    overrides = overrides_from_args(args)
    cfg = resolve_config(args.recipe, **overrides)
    # On resume, only the options given here may change what the run used.
    trainer = Trainer(cfg, args.out or f"runs/{cfg.model}", resume=args.resume,
                      overwrite=args.overwrite, quiet=args.quiet, explicit=set(overrides))
    result = trainer.fit()
    return result.exit_code
