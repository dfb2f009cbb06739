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
