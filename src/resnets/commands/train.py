"""`resnets train`: train a CIFAR ResNet with a recipe (default: the paper's CIFAR-10 recipe)."""

from __future__ import annotations

import argparse
import re

from ..config import field_docs, list_recipes, read_recipe, resolve_config
from ..errors import UserError

# CLI flag -> TrainConfig field, for the options that map one to one.
FIELDS = {
    "model": str, "data": str, "cache_dir": str, "iterations": int, "batch_size": int,
    "lr": float, "warmup_lr": float, "momentum": float, "weight_decay": float,
    "val_split": int, "train_subset": int, "seed": int, "device": str, "precision": str,
    "log_every": int, "eval_every": int, "save_every": int, "max_nonfinite": int,
    "normalization": str, "init": str, "num_classes": int, "pipeline": str, "crop_size": int,
    "eval_resize": int, "lighting": float, "workers": int, "schedule": str,
}

# Fields with a fixed set of values: argparse refuses anything else before a run starts, and
# the help lists them. (TrainConfig checks them again for values that come from recipes.)
CHOICES = {
    "precision": ("auto", "fp32", "bf16"),
    "normalization": ("per_pixel_mean", "channel_mean_std"),
    "pipeline": ("auto", "device", "folder"),
    "schedule": ("steps", "plateau"),
}

# Help where a field's comment in TrainConfig is too terse to stand alone on the command line.
HELP = {
    "normalization": "per_pixel_mean: subtract the training split's mean image (the paper); "
                     "channel_mean_std: per-channel mean and std",
    "pipeline": "device: the decoded uint8 set lives on the device (CIFAR); folder: files "
                "decoded by DataLoader workers (ImageNet); auto: device for the CIFAR family, "
                "folder for ImageNet nets",
    "device": "auto (CUDA when there is one, else cpu) | cpu | cuda | cuda:N",
    "channels_last": "channels_last memory format for the net and its inputs; auto: on "
                     "wherever bf16 is native (CUDA, AVX512-BF16 CPUs)",
    "data": "dataset: a CIFAR-10 python release (.tar.gz or folder), an image folder "
            "ROOT/<class>/<image>, or a .tar archive of one; none: download CIFAR-10 into "
            "the cache",
    "cache_dir": "decoded-data cache (none: $RESNETS_CACHE, else ~/.cache/resnets)",
    "seed": "seeds init, split, data order and augmentation; 0 to 2**63-1",
}

DEFAULT_RECIPE = "cifar10-paper"
_MAX_SEED = 2**63 - 1  # torch and the data order take seeds as 64-bit integers


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= _MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is out of range: a seed is a whole number "
                                         f"from 0 to 2**63-1 ({_MAX_SEED})")
    return value


def _int_list(what: str, count: int | None = None):
    """An argparse type: comma-separated whole numbers (exactly ``count`` when given)."""

    def parse(text: str) -> list[int]:
        parts = [p.strip() for p in text.split(",")]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = None
        if values is None or (count is not None and len(values) != count):
            n = f"{count} " if count is not None else ""
            raise argparse.ArgumentTypeError(f"expected {what} ({n}comma-separated whole "
                                             f"numbers), got {text!r}")
        return values

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def _shown(value) -> str:
    """A recipe value as the help shows it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _default_help(name: str, defaults, per_model: dict) -> str:
    """'(default: V)' from the default recipe, with the values it sets for some models."""
    value = getattr(defaults, name)
    shown = "auto" if name == "channels_last" and value is None else _shown(value)
    special = {}
    for model, table in per_model.items():
        if name in table:
            special.setdefault(_shown(table[name]), []).append(model)
    extra = "".join(f"; {v} for {', '.join(models)}" for v, models in special.items())
    return f"(default: {shown}{extra})"


def _help(name: str, docs: dict[str, str], defaults, per_model: dict) -> str:
    doc = HELP.get(name) or docs.get(name, "")
    if name in CHOICES:  # "auto | fp32 | bf16" repeats what argparse lists: keep the rest
        doc = re.sub(r"\s*\|\s*", ", ", doc)
    return f"{doc} {_default_help(name, defaults, per_model)}".strip().replace("%", "%%")


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a network (CIFAR-10 recipes of the paper)",
        description="Train a registered network. Values come from --recipe, then from the "
                    "flags given. The resolved config is written to OUT/config.json and into "
                    "every checkpoint. Stop with Ctrl-C or SIGTERM at any time: the run saves "
                    "and can be continued with --resume auto.")
    p.add_argument("--recipe", default=DEFAULT_RECIPE,
                   help=f"recipe name ({', '.join(list_recipes())}) or a .toml path "
                        f"(default: {DEFAULT_RECIPE})")
    p.add_argument("--out", default=None, help="run directory (default: runs/MODEL)")
    p.add_argument("--resume", metavar="auto|PATH", default=None,
                   help="continue a run: 'auto' takes the newest complete checkpoint in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds one: deletes its checkpoints, "
                        "metrics and logs first (without it, such a directory is refused)")
    p.add_argument("--quiet", action="store_true", help="log lines instead of a progress bar")
    g = p.add_argument_group(
        "recipe overrides",
        f"Each flag overrides one value of the recipe. The defaults shown are those of the "
        f"default recipe, {DEFAULT_RECIPE} (the paper's CIFAR-10 recipe); another --recipe "
        f"has its own (see src/resnets/recipes/).")
    docs = field_docs()
    defaults = resolve_config(DEFAULT_RECIPE)
    per_model = read_recipe(DEFAULT_RECIPE).get("model_overrides", {})

    def helped(name: str, **kwargs) -> None:
        flag = "--" + name.replace("_", "-")
        g.add_argument(flag, default=None, help=_help(name, docs, defaults, per_model),
                       **kwargs)

    for name, typ in FIELDS.items():
        helped(name, type=_seed if name == "seed" else typ, choices=CHOICES.get(name))
    g.add_argument("--milestones", type=_int_list("iterations"), default=None,
                   help=f"comma-separated iterations where lr is multiplied by gamma "
                        f"(default: {_shown(defaults.milestones)} for "
                        f"{_shown(defaults.iterations)} iterations, rescaled when "
                        f"--iterations is given)")
    g.add_argument("--shortcut", choices=["A", "B", "C"],
                   help="shortcut option of the model: A zero-padding identity, B projections "
                        "where dimensions change, C projections everywhere (default: the "
                        "model's)")
    g.add_argument("--unit", help="residual-unit variant, e.g. full_preact (default: the "
                                  "model's)")
    for name in ("channels_last", "compile", "deterministic", "skip_bad_images", "sync_bn"):
        helped(name, action=argparse.BooleanOptionalAction)
    g.add_argument("--freeze", type=lambda s: [v for v in s.split(",") if v], default=None,
                   help="fine-tuning: comma-separated parts kept fixed (stem,layer1,...) "
                        "(default: none)")
    g.add_argument("--scale-range", type=_int_list("LO,HI", 2), default=None,
                   help=f"folder pipeline: LO,HI of the random shorter side "
                        f"(default: {_shown(defaults.scale_range)})")
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


# What torch can train on here: "mps" or "meta" are torch devices too, but they would fail
# deep inside the run with a traceback.
_TRAINING_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
_DEVICE_NOTES = {
    "mps": " Apple GPUs (mps) are not supported; --device cpu runs on this machine.",
    "meta": " 'meta' tensors hold no data: nothing can be trained on them.",
}


def check_device(name: str | None) -> None:
    """Refuse a --device that no run can use, before anything is built."""
    if name is not None and not _TRAINING_DEVICE.fullmatch(name):
        note = _DEVICE_NOTES.get(name.split(":")[0], "")
        raise UserError(f"unknown device {name!r} for --device: use auto, cpu, cuda or "
                        f"cuda:N.{note}")


def run(args) -> int:
    from ..train.loop import Trainer

    check_device(args.device)
    overrides = overrides_from_args(args)
    cfg = resolve_config(args.recipe, **overrides)
    # On resume, only the options given here may change what the run used.
    trainer = Trainer(cfg, args.out or f"runs/{cfg.model}", resume=args.resume,
                      overwrite=args.overwrite, quiet=args.quiet, explicit=set(overrides))
    result = trainer.fit()
    return result.exit_code
