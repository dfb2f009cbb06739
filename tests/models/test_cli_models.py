"""`resnets models`: the table, the JSON list and the console entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from resnets import list_models
from resnets.cli import main


def test_models_json(capsys):
    assert main(["models", "--json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out)  # exactly one JSON document
    assert isinstance(rows, list)
    assert [r["name"] for r in rows] == list_models()
    for r in rows:
        assert {"name", "family", "params", "macs", "input_size"} <= set(r)
        assert r["params"] > 0 and r["macs"] > 0
    by_name = {r["name"]: r for r in rows}
    assert by_name["resnet50"]["params"] == 25_557_032
    assert by_name["resnet50"]["family"] == "imagenet"
    assert by_name["resnet50"]["input_size"] == [3, 224, 224]
    assert 40e6 <= by_name["resnet20"]["macs"] <= 42e6
    assert by_name["resnet20"]["input_size"] == [3, 32, 32]


def test_models_table_for_one_family(capsys):
    assert main(["models", "--family", "cifar"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["name", "family"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(list_models("cifar"))
    assert rows["resnet20"][1] == "cifar"
    assert rows["resnet20"][3] == "0.27M"


def test_console_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "resnets", "models", "--family", "cifar"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # see conftest.single_thread
    )
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines()[1:]]
    assert "resnet110" in names
    assert "resnet50" not in names


def test_models_lists_from_the_stored_table_without_building_nets(capsys, monkeypatch):
    """`resnets models` took 28 s for the ImageNet family: it built every net to count MACs."""
    from resnets.commands import models as command

    def refuse(name, **kwargs):
        raise AssertionError(f"built {name} to list it")

    monkeypatch.setattr(command, "create_model", refuse)
    assert main(["models", "--family", "imagenet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "description"
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(list_models("imagenet"))
    assert rows["resnet50"].split()[3] == "25.56M"
    assert rows["resnet34_a"].endswith("ResNet-34 of Table 2 / Fig. 4: option A, no extra "
                                       "parameters (same count as plain-34)")
    assert main(["models", "--json"]) == 0
    by_name = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert by_name["resnet50"]["params"] == 25_557_032
    assert set(by_name["resnet50"]) == {"name", "family", "depth", "params", "macs",
                                        "input_size", "description", "weights"}


def test_stored_costs_match_every_built_net():
    """The table `resnets models` reads: every registered net, rebuilt and counted. After a
    change to the zoo, regenerate it with the command in the assertion message."""
    from resnets.commands.models import measure_cost
    from resnets.models.costs import COSTS

    measured = {name: measure_cost(name) for name in list_models()}
    stale = {name: (COSTS.get(name), now) for name, now in measured.items()
             if COSTS.get(name) != now}
    assert not stale and set(COSTS) == set(measured), (
        f"resnets/models/costs.py is out of date (stored, measured): {stale}; extra: "
        f"{sorted(set(COSTS) - set(measured))}. Regenerate it: python -c 'from "
        f"resnets.commands.models import write_cost_table; write_cost_table()'")


def test_a_net_missing_from_the_table_is_measured(monkeypatch):
    from resnets.commands import models as command

    monkeypatch.setattr(command, "COSTS", {})
    assert command.cost("resnet8") == command.measure_cost("resnet8")
    assert command.describe("resnet20")["params"] == 269_722
