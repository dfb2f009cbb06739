"""torch.hub entry points: ``torch.hub.load("<repo or local dir>", "resnet20", weights="cifar10")``.

Every registered network is an entry point with the keyword-only signature of
`resnets.create_model`; ``weights`` names shipped pretrained weights (`resnets weights`).
"""

import importlib
import sys
from pathlib import Path

dependencies = ["torch", "torchvision", "safetensors"]


def _checkout_package():
    """The `resnets` package of this checkout (its ``src/``), not whichever one is installed
    or was imported first: torch.hub.load(checkout, ..., source="local") must build the
    checkout's networks."""
    src = Path(__file__).resolve().parent / "src"
    if not (src / "resnets" / "__init__.py").is_file():  # no source tree: the installed one
        return importlib.import_module("resnets")
    loaded = getattr(sys.modules.get("resnets"), "__file__", None)
    if loaded is not None and not Path(loaded).resolve().is_relative_to(src):
        # another copy is imported: this process's later `import resnets` gets the checkout's
        for name in [n for n in sys.modules if n == "resnets" or n.startswith("resnets.")]:
            del sys.modules[name]
    sys.path.insert(0, str(src))
    try:
        return importlib.import_module("resnets")
    finally:
        sys.path.remove(str(src))


resnets = _checkout_package()


def _entry(name):
    def build(*, weights=None, **kwargs):
        return resnets.create_model(name, weights=weights, **kwargs)

    build.__name__ = name
    build.__doc__ = f"{resnets.model_info(name).description} (`resnets.create_model({name!r})`)."
    return build


# One entry per registered network, named as in `resnets models`.
for _name in resnets.list_models():
    globals()[_name] = _entry(_name)
