"""torch.hub entry points: ``torch.hub.load("<repo or local dir>", "resnet20", weights="cifar10")``.

Every registered network is an entry point with the keyword-only signature of
`resnets.create_model`; ``weights`` names shipped pretrained weights (`resnets weights`).
"""

import sys
from pathlib import Path

dependencies = ["torch", "torchvision", "safetensors"]

try:
    import resnets
except ImportError:  # a plain checkout (torch.hub's download or source="local"): use src/
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    import resnets


def _entry(name):
    def build(*, weights=None, **kwargs):
        return resnets.create_model(name, weights=weights, **kwargs)

    build.__name__ = name
    build.__doc__ = f"{resnets.model_info(name).description} (`resnets.create_model({name!r})`)."
    return build


# One entry per registered network, named as in `resnets models`.
for _name in resnets.list_models():
    globals()[_name] = _entry(_name)
