"""`resnets train`: train a CIFAR ResNet with a recipe (default: the paper's CIFAR-10 recipe).

Every flag of the "recipe overrides" group is derived from a `TrainConfig` field (its help,
choices and how a value is spelled are declared there, once); `--shortcut`, `--unit` and
`--init-mode` fill ``model_kwargs``.
"""

from __future__ import annotations

import argparse
import re

from ..config import (
    CHOICES,
    DEVICE_PATTERN,
    OPTIONS,
    field_docs,
    list_recipes,
    read_recipe,
    resolve_config,
    value_type,
)
from ..errors import UserError
from ..models.resnet import INIT_MODES
from ..train.loop import Trainer

DEFAULT_RECIPE = "cifar10-paper"


def argparse_type(name: str):
    """How argparse reads a value of field ``name``: the field's own parser (its ValueError
    becomes argparse's message), else its type (int, float, str)."""
    parse = OPTIONS[name].metadata["parse"]
    if parse is None:
        return value_type(name)

    def read(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    read.__name__ = parse.__name__  # argparse names the type in some messages
    return read


# Fields with a flag of their own; FIELDS: those whose value is one number or word.
FLAG_FIELDS = tuple(name for name, f in OPTIONS.items() if f.metadata["flag"])
FIELDS = {name: argparse_type(name) for name in FLAG_FIELDS
          if value_type(name) in (int, float, str)}


def _shown(value) -> str:
    """A recipe value as the help shows it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _default_help(name: str, defaults, per_model: dict, by_depth: dict | None = None) -> str:
    """'(default: V)' from the default recipe, with the values it sets for some models (by
    name, or by depth: its ``[depth_overrides]`` table)."""
    value = getattr(defaults, name)
    shown = "auto" if name == "channels_last" and value is None else _shown(value)
    if name == "milestones":
        shown += (f" for {_shown(defaults.iterations)} iterations, rescaled when --iterations "
                  f"is given for a new run; a resumed run keeps its own")
    special = {}
    for model, table in per_model.items():
        if name in table:
            special.setdefault(_shown(table[name]), []).append(model)
    extra = "".join(f"; {v} for {', '.join(models)}" for v, models in special.items())
    if by_depth and name in by_depth:
        extra += (f"; {_shown(by_depth[name])} for {by_depth['family']} nets of "
                  f"{by_depth['min_depth']} layers or more")
    return f"(default: {shown}{extra})"


def option_help(name: str, default: str = "") -> str:
    """The field's help text for argparse, followed by ``default``."""
    doc = field_docs()[name]
    if name in CHOICES:  # "auto | fp32 | bf16" repeats what argparse lists: keep the rest
        doc = re.sub(r"\s*\|\s*", ", ", doc)
    return f"{doc} {default}".strip().replace("%", "%%")


def add_option(group, name: str, default_help: str = "") -> None:
    """Add the flag of `TrainConfig` field ``name`` (``--name-with-dashes``) to ``group``;
    left out, it is None (the recipe's value stands)."""
    flag = "--" + name.replace("_", "-")
    kwargs = ({"action": argparse.BooleanOptionalAction} if value_type(name) is bool else
              {"type": argparse_type(name), "choices": CHOICES.get(name)})
    group.add_argument(flag, default=None, help=option_help(name, default_help), **kwargs)


def _group_description(recipe: str) -> str:
    what = (f"the default recipe, {recipe} (the paper's CIFAR-10 recipe)"
            if recipe == DEFAULT_RECIPE else f"the recipe {recipe}")
    return (f"Each flag overrides one value of the recipe. The defaults shown are those of "
            f"{what}; another --recipe has its own (`resnets train --recipe "
            f"NAME --help` shows them; see src/resnets/recipes/).")


def show_recipe_defaults(parser: argparse.ArgumentParser, recipe: str) -> None:
    """Make ``parser``'s help show ``recipe``'s values as the defaults of the override flags."""
    defaults = resolve_config(recipe)
    per_model = read_recipe(recipe).get("model_overrides", {})
    for group in parser._action_groups:
        if group.title == "recipe overrides":
            group.description = _group_description(recipe)
    for action in parser._actions:
        if action.dest in FLAG_FIELDS:
            action.help = option_help(action.dest,
                                      _default_help(action.dest, defaults, per_model))


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a network (CIFAR-10 recipes of the paper)", add_help=False,
        description="Train a registered network. Values come from --recipe, then from the "
                    "flags given. The resolved config is written to OUT/config.json and into "
                    "every checkpoint. Stop with Ctrl-C or SIGTERM at any time: the run saves "
                    "and can be continued with --resume auto.")
    # Help is printed after parsing, so that it shows the values of the --recipe given
    # (before or after --help), not only the default recipe's.
    p.add_argument("-h", "--help", action="store_true",
                   help="show this help, with the defaults of --recipe, and exit")
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
    g = p.add_argument_group("recipe overrides", _group_description(DEFAULT_RECIPE))
    defaults = resolve_config(DEFAULT_RECIPE)
    table = read_recipe(DEFAULT_RECIPE)
    per_model, by_depth = table.get("model_overrides", {}), table.get("depth_overrides", {})
    for name in FLAG_FIELDS:
        add_option(g, name, _default_help(name, defaults, per_model, by_depth))
    # model_kwargs, one flag per keyword
    g.add_argument("--shortcut", choices=["A", "B", "C"],
                   help="shortcut option of the model: A zero-padding identity, B projections "
                        "where dimensions change, C projections everywhere (default: the "
                        "model's)")
    g.add_argument("--unit", help="residual-unit variant, e.g. full_preact (default: the "
                                  "model's)")
    g.add_argument("--init-mode", choices=list(INIT_MODES),
                   help="He normal init of the convs: fan_out counts a conv's outputs "
                        "(fb.resnet.torch, torchvision), fan_in its inputs (He et al. 2015's "
                        "derivation); they differ where a conv changes the width (default: "
                        "fan_out)")
    p.set_defaults(func=run, parser=p)


def overrides_from_args(args) -> dict:
    """The recipe overrides the user actually gave (flags left out are absent)."""
    overrides = {name: getattr(args, name) for name in FLAG_FIELDS
                 if getattr(args, name) is not None}
    model_kwargs = {k: getattr(args, k) for k in ("shortcut", "unit", "init_mode")
                    if getattr(args, k)}
    if model_kwargs:
        overrides["model_kwargs"] = model_kwargs
    return overrides


# Why some torch devices are refused: "mps" or "meta" are torch devices too, but they would
# fail deep inside the run with a traceback.
_DEVICE_NOTES = {
    "mps": " Apple GPUs (mps) are not supported; --device cpu runs on this machine.",
    "meta": " 'meta' tensors hold no data: nothing can be trained on them.",
}


def check_device(name: str | None) -> None:
    """Refuse a --device that no run can use, before anything is built."""
    if name is not None and not DEVICE_PATTERN.fullmatch(name):
        note = _DEVICE_NOTES.get(name.split(":")[0], "")
        raise UserError(f"unknown device {name!r} for --device: use auto, cpu, cuda or "
                        f"cuda:N.{note}")


def run(args) -> int:
    if args.help:
        if args.recipe != DEFAULT_RECIPE:
            show_recipe_defaults(args.parser, args.recipe)
        args.parser.print_help()
        return 0
    check_device(args.device)
    overrides = overrides_from_args(args)
    cfg = resolve_config(args.recipe, **overrides)
    # On resume, only the options given here may change what the run used.
    trainer = Trainer(cfg, args.out or f"runs/{cfg.model}", resume=args.resume,
                      overwrite=args.overwrite, quiet=args.quiet, explicit=set(overrides))
    result = trainer.fit()
    return result.exit_code
