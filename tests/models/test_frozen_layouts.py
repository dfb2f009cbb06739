"""What a refactor of models/ must not change, recorded before the blocks were rewritten
(issue #13): the registry, every registered net's state-dict layout, and exact outputs.

The fixtures are JSON files beside this module. They were written by running this file as a
script (``python tests/models/test_frozen_layouts.py``) on the code before the change; rerun
it only for a change that is meant to alter a layout or an output, and say so in the commit.

* ``frozen_registry.json``: name, family, depth, input size and description of every name.
* ``frozen_state_dicts.json``: every registered net's state-dict keys with their shapes, in
  order. The order matters as well as the names: optimizer state in a checkpoint is matched
  to parameters by position, so a reordered module would resume with the wrong momentum.
* ``frozen_logits.json``: eval-mode logits at a fixed seed with randomized BN statistics,
  (a) for every registered net with one block per stage (each builder's defaults: shortcut
  option, unit, stem, stride placement) and (b) for a few full-depth nets and unit variants.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from resnets import create_model, list_models, model_info

HERE = Path(__file__).resolve().parent
REGISTRY_FILE = HERE / "frozen_registry.json"
STATE_DICTS_FILE = HERE / "frozen_state_dicts.json"
LOGITS_FILE = HERE / "frozen_logits.json"
MAX_STORED_KEYS = 700

UNITS = ["original", "bn_after_add", "relu_before_add", "relu_preact", "full_preact"]
# name, overrides (JSON-friendly), input size
FULL_DEPTH_CASES: dict[str, tuple[str, dict, int]] = {
    "resnet20": ("resnet20", {}, 32),
    "plain20": ("plain20", {}, 32),
    "resnet20-C": ("resnet20", {"shortcut": "C"}, 32),
    "preact_resnet110": ("preact_resnet110", {}, 32),
    "resnet18-v1.5": ("resnet18", {"stride_in_1x1": False}, 32),
    "resnet50-v1.5": ("resnet50", {"stride_in_1x1": False}, 64),
    "preact_resnet50": ("preact_resnet50", {}, 64),
    **{f"resnet8-{u}": ("resnet8", {"unit": u}, 32) for u in UNITS},
    **{f"resnet8-{u}-B": ("resnet8", {"unit": u, "shortcut": "B"}, 32) for u in UNITS},
    **{f"resnet8-{u}-plain": ("resnet8", {"unit": u, "residual": False}, 32) for u in UNITS},
    **{f"resnet8-{u}-zero": ("resnet8", {"unit": u, "zero_init_last": True}, 32)
       for u in UNITS},
    **{f"resnet164-{u}": ("resnet164", {"unit": u, "layers": (2, 2, 2)}, 32) for u in UNITS},
    **{f"resnet164-{u}-A": ("resnet164", {"unit": u, "layers": (2, 1, 1), "shortcut": "A"}, 32)
       for u in UNITS},
}


def registry_rows() -> list[dict]:
    return [{"name": n, "family": (i := model_info(n)).family, "depth": i.depth,
             "input_size": list(i.input_size), "description": i.description}
            for n in list_models()]


def state_dict_layout(name: str) -> list[list]:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = create_model(name)
    return [[k, list(v.shape)] for k, v in model.state_dict().items()]


def frozen_form(layout: list[list]) -> list[list] | dict:
    """The layout itself, or for the deepest nets (thousands of keys, a repetition of what
    the shallower twins show in full) its length and sha256, to keep the fixture small."""
    if len(layout) <= MAX_STORED_KEYS:
        return layout
    text = json.dumps(layout, separators=(",", ":"))
    return {"keys": len(layout), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN statistics (a fresh BN is the identity in eval mode); as tests/conftest."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return model


def logits_of(name: str, overrides: dict, size: int) -> list[list[float]]:
    torch.manual_seed(0)
    model = create_model(name, **overrides)
    if not overrides.get("zero_init_last"):  # keep the zeroed weights of zero_init_last
        randomize_bn(model, seed=1)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        # The first 10 classes: every feature feeds each of them, so a slice checks the whole net.
        return model.eval()(x)[:, :10].double().tolist()


def one_block_overrides(name: str) -> dict:
    return {"layers": (1,) * (3 if model_info(name).family == "cifar" else 4)}


def all_logit_cases() -> dict[str, tuple[str, dict, int]]:
    cases = {f"{n}-1block": (n, one_block_overrides(n), 32) for n in list_models()}
    return {**cases, **FULL_DEPTH_CASES}


def write_fixtures() -> None:
    REGISTRY_FILE.write_text(json.dumps(registry_rows(), indent=1) + "\n")
    compact = {"separators": (",", ":")}
    lines = [f"{json.dumps(n)}: {json.dumps(frozen_form(state_dict_layout(n)), **compact)}"
             for n in list_models()]  # one net per line
    STATE_DICTS_FILE.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    logits = {case: logits_of(*args) for case, args in all_logit_cases().items()}
    LOGITS_FILE.write_text(json.dumps(logits, indent=0) + "\n")


def load(path: Path):
    return json.loads(path.read_text())


def test_registry_is_unchanged():
    assert registry_rows() == load(REGISTRY_FILE)


@pytest.mark.parametrize("name", list_models())
def test_state_dict_keys_and_shapes_are_unchanged(name):
    want = load(STATE_DICTS_FILE)[name]
    got = state_dict_layout(name)
    if isinstance(want, dict):  # a deep net stored as its hash: order and names at once
        assert frozen_form(got) == want
        return
    assert sorted(map(tuple, [(k, tuple(s)) for k, s in got])) == sorted(
        (k, tuple(s)) for k, s in want)
    assert [k for k, _ in got] == [k for k, _ in want]  # and the order (optimizer state)


def test_every_registered_name_is_frozen():
    assert sorted(load(STATE_DICTS_FILE)) == sorted(list_models())
    assert set(load(LOGITS_FILE)) == set(all_logit_cases())


@pytest.mark.parametrize("case", list(all_logit_cases()))
def test_logits_are_unchanged(case):
    name, overrides, size = all_logit_cases()[case]
    got = torch.tensor(logits_of(name, overrides, size), dtype=torch.float64)
    want = torch.tensor(load(LOGITS_FILE)[case], dtype=torch.float64)
    assert want.abs().max() > 1e-3  # not a degenerate comparison
    # rtol as well as atol: a 110-layer net with random BN statistics reaches logits of ~900.
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


if __name__ == "__main__":
    torch.set_num_threads(1)
    write_fixtures()
