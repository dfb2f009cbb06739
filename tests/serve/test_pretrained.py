"""Pretrained weights: published from a finished run, loaded by name with their sha256 checked,
usable from Python, the CLI and torch.hub; shipped ones reproduce their validation error."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import resnets
from resnets.checkpoint import LAST, read_checkpoint
from resnets.cli import main
from resnets.config import resolve_config
from resnets.errors import UserError
from resnets.eval.checkpoint_eval import evaluate_checkpoint
from resnets.models import pretrained
from resnets.models.pretrained import REQUIRED_META, UnknownWeightsError
from resnets.serve.publish import publish_run
from resnets.train.loop import Trainer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def finished_run(color_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    cfg = resolve_config("cifar10-paper", model="resnet8", data=str(color_folder),
                         cache_dir=str(root / "cache"), iterations=6, milestones=[4],
                         batch_size=16, val_split=40, log_every=3, eval_every=3, save_every=3,
                         device="cpu")
    Trainer(cfg, root / "run", quiet=True).fit()
    return root


@pytest.fixture
def shipped(finished_run, tmp_path, monkeypatch):
    """The finished run published as ``resnet8.colors`` into a weights directory of its own."""
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "weights")
    return publish_run(finished_run / "run", name="resnet8.colors", data="colour squares",
                       dest=tmp_path / "weights")


def test_published_weights_carry_complete_metadata_and_their_sha256(shipped, finished_run,
                                                                    color_folder):
    assert resnets.list_weights() == ["resnet8.colors"]
    manifest = json.loads((shipped.root / "manifest.json").read_text())["weights"][0]
    assert manifest["sha256"] == hashlib.sha256(shipped.path.read_bytes()).hexdigest()
    meta = manifest["meta"]
    assert [k for k in REQUIRED_META if meta.get(k) is None] == []
    rows = [json.loads(line) for line in (finished_run / "run" / "metrics.jsonl").open()]
    last_val = [r for r in rows if r["kind"] == "val"][-1]
    # One number per net: the error logged by training at the last iteration, as in tables.
    assert (meta["iterations"], meta["val_error"]) == (6, last_val["val_error"])
    assert "logged by training at iteration 6 (fp32 autocast)" in meta["val_error_measurement"]
    # Beside it, what `resnets eval` measures on the run's split (fp32), for reproduction.
    measured = evaluate_checkpoint(str(shipped.path), data=str(color_folder), split="val",
                                   device="cpu", cache_dir=str(finished_run / "cache"))
    assert (meta["val_error_fp32"], meta["val_images"]) == (measured["top1_error"], 40)
    assert meta["val_top5_error_fp32"] == measured["top5_error"]
    # The training data's fingerprint, in the manifest and in the file's own record, whose
    # tensors are the run's.
    run_meta = read_checkpoint(finished_run / "run" / LAST).meta
    assert meta["data_fingerprint"] == run_meta["data_fingerprint"]
    assert meta["data_fingerprint"]["images"] == 240
    published = read_checkpoint(shipped.path)
    assert published.meta["data_fingerprint"] == run_meta["data_fingerprint"]
    assert published.meta["versions"] == run_meta["versions"]
    trained = read_checkpoint(finished_run / "run" / LAST).model_state
    assert published.model_state.keys() == trained.keys()
    assert all(torch.equal(published.model_state[k], trained[k]) for k in trained)
    assert meta["num_params"] == resnets.count_params(resnets.create_model("resnet8"))
    assert meta["normalization"]["kind"] == "per_pixel_mean" and meta["data"] == "colour squares"
    assert "never trained on" in meta["val_split"] and meta["device"][0].startswith("cpu (")


def test_weights_list_shows_the_data_fingerprint(shipped, capsys):
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    fp = shipped.meta["data_fingerprint"]
    assert f"data: image folder {fp['source']['name']} (240 files" in out
    assert f"240 images of 10 classes (c0, c1, c2, ...), sha256 {fp['sha256'][:12]}" in out
    assert main(["weights", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["data_fingerprint"] == fp


def test_create_model_loads_the_weights_of_the_run(shipped, finished_run):
    model = resnets.create_model("resnet8", weights="colors")
    same = resnets.create_model("resnet8", weights="resnet8.colors")
    trained = read_checkpoint(finished_run / "run" / LAST).model_state
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, trained[name]), name
        assert torch.equal(tensor, same.state_dict()[name]), name


def test_a_tampered_file_is_refused(shipped):
    data = bytearray(shipped.path.read_bytes())
    data[-1] ^= 0xFF
    shipped.path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="failed their sha256 check") as e:
        resnets.create_model("resnet8", weights="colors")
    assert str(shipped.path) in str(e.value)


def test_unknown_or_mismatched_names_list_what_exists(shipped):
    with pytest.raises(UnknownWeightsError, match=r"Did you mean: resnet8\.colors") as e:
        resnets.create_model("resnet8", weights="colours")
    assert "Available: resnet8.colors" in str(e.value)
    with pytest.raises(UserError, match="belong to 'resnet8', not 'resnet20'"):
        resnets.create_model("resnet20", weights="resnet8.colors")
    with pytest.raises(UserError, match="fix the net's options"):
        resnets.create_model("resnet8", weights="colors", shortcut="B")


def test_cli_accepts_a_weight_name_as_checkpoint(shipped, finished_run, color_folder, capsys):
    code = main(["eval", "--checkpoint", "resnet8.colors", "--data", str(color_folder),
                 "--cache-dir", str(finished_run / "cache"), "--split", "val", "--device",
                 "cpu", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["top1_error"] == pytest.approx(shipped.meta["val_error_fp32"], abs=1e-9)
    assert main(["models", "--family", "cifar", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["resnet8"]["weights"] == {"resnet8.colors": shipped.meta["val_error"]}
    assert rows["resnet20"]["weights"] == {}
    assert main(["eval", "--checkpoint", "resnet9.colors", "--device", "cpu"]) == 2
    assert "no pretrained weights named 'resnet9.colors'" in capsys.readouterr().err


def test_weights_json_is_accepted_and_holds_no_mean_image(shipped, capsys):
    assert main(["weights", "--json"]) == 0
    text = capsys.readouterr().out
    assert main(["weights", "list", "--json"]) == 0
    assert capsys.readouterr().out == text
    (listed,) = json.loads(text)
    norm = shipped.meta["normalization"]
    assert listed["normalization"] == {
        "kind": "per_pixel_mean", "mean_shape": [3, 32, 32], "std": None,
        "mean_sha256": hashlib.sha256(json.dumps(norm["mean"]).encode()).hexdigest()}
    # the image is in the weights file (what eval and predict read), not in the listing
    assert read_checkpoint(shipped.path).meta["normalization"] == norm
    assert len(text) < len(json.dumps(norm)) / 5
    assert listed["val_error"] == shipped.meta["val_error"] and listed["name"] == "resnet8.colors"


def test_torch_hub_loads_entry_points_with_weights(shipped):
    model = torch.hub.load(str(REPO), "resnet8", source="local", weights="colors")
    expected = resnets.create_model("resnet8", weights="colors")
    assert all(torch.equal(v, expected.state_dict()[k]) for k, v in model.state_dict().items())
    plain = torch.hub.load(str(REPO), "plain20", source="local")
    assert resnets.count_params(plain) == 269_722


@pytest.mark.parametrize("first", ["imported first", "not imported"])
def test_torch_hub_local_uses_the_checkouts_package(tmp_path, first):
    """Another `resnets` earlier on the path (an installed release): hubconf still builds the
    checkout's networks, whether or not the other copy was imported before."""
    other = tmp_path / "site" / "resnets"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("OTHER = True\n")
    script = "\n".join([
        "import sys, torch",
        "import resnets; assert resnets.OTHER" if first == "imported first" else "",
        f"model = torch.hub.load({str(REPO)!r}, 'plain20', source='local')",
        "print(sys.modules['resnets'].__file__)",
        "print(sum(p.numel() for p in model.parameters()))"])
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    file, params = out.stdout.split()
    assert Path(file) == REPO / "src" / "resnets" / "__init__.py" and int(params) == 269_722


def test_publish_refuses_unfinished_runs_and_wrong_names(finished_run, tmp_path):
    with pytest.raises(UserError, match="resnet8.colors, not 'resnet20.colors'"):
        publish_run(finished_run / "run", name="resnet20.colors", dest=tmp_path)
    with pytest.raises(UserError, match="<model>.<dataset>"):
        publish_run(finished_run / "run", name="resnet8", dest=tmp_path)
    with pytest.raises(UserError, match="nothing to publish"):
        publish_run(tmp_path, name="resnet8.colors", dest=tmp_path)


# ------------------------------------------------------------- the weights that ship
@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("name", resnets.list_weights())
def test_shipped_weights_reproduce_their_validation_error(name, shared_cifar_tar,
                                                          data_cache_dir, capsys):
    w = resnets.get_weights(name)
    assert [k for k in REQUIRED_META if w.meta.get(k) is None] == []
    code = main(["eval", "--checkpoint", name, "--data", str(shared_cifar_tar), "--split",
                 "val", "--cache-dir", str(data_cache_dir), "--device", "cpu", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == w.meta["val_images"] == w.meta["config"]["val_split"]
    # Recorded by the same fp32 evaluation; another CPU's kernels (AMX, AVX-512, AVX2) may
    # round differently and flip an image whose two best logits nearly tie: allow two.
    assert abs(result["top1_error"] - w.meta["val_error_fp32"]) * result["n"] <= 2 + 1e-6
    # The number logged in training (bf16 here) is close but not the same measurement.
    assert result["top1_error"] == pytest.approx(w.meta["val_error"], abs=0.005)
    # The archive given is the one the weights record (else eval would have refused it).
    assert w.meta["data_fingerprint"]["images"] == 50_000
