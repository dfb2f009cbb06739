"""A CUDA-trained checkpoint served: the paper's test protocols, prediction and export on
CUDA give what the same checkpoint gives on the CPU (fp32, TF32 off, within 1e-4)."""

from __future__ import annotations

import json

import pytest
import torch

from resnets.checkpoint import load_checkpoint
from resnets.cli import main
from resnets.data import Normalization, load_image_set
from resnets.eval.protocols import evaluate_protocol
from resnets.serve.export import export_checkpoint, sample_inputs
from resnets.serve.predict import Prediction, Predictor

TOL = 1e-4


@pytest.fixture(scope="module")
def colour_items(color_folder, gpu_config):
    """60 (uint8 image, label) pairs of the colour folder, every 4th image."""
    data = load_image_set(color_folder, split="train", cache_dir=gpu_config().cache_dir)
    return list(zip(data.images[::4], data.labels[::4].tolist(), strict=True))


@pytest.mark.parametrize("protocol", ["center", "ten_crop", "multi_scale"])
def test_protocols_on_cuda_equal_the_cpu(cuda_run, colour_items, protocol, no_tf32):
    best = cuda_run / "best.safetensors"
    results = {}
    for device in ("cuda", "cpu"):
        model, meta = load_checkpoint(best, device=device)
        results[device] = evaluate_protocol(
            model, colour_items, protocol, family="cifar",
            normalization=Normalization.from_dict(meta["normalization"]), batch_size=64,
            device=device, return_probs=True)
    gpu, cpu = results["cuda"], results["cpu"]
    assert gpu["n"] == cpu["n"] == 60 and gpu["views_per_image"] == cpu["views_per_image"]
    assert gpu["top1_error"] == cpu["top1_error"] and gpu["top5_error"] == cpu["top5_error"]
    assert gpu["top1_error"] < 0.5  # the net learned the colours; chance is 0.9
    assert gpu["loss"] == pytest.approx(cpu["loss"], abs=TOL)
    assert (gpu["probs"] - cpu["probs"]).abs().max().item() <= TOL
    assert torch.equal(gpu["labels"], cpu["labels"])


def test_predict_on_cuda_equals_the_cpu_and_the_cli_agrees(cuda_run, color_folder, no_tf32,
                                                           capsys):
    best = cuda_run / "best.safetensors"
    paths = sorted(color_folder.glob("c[0-9]/[0-3].png"))  # 4 images of each class
    assert len(paths) == 40
    on_gpu = list(Predictor.from_checkpoint(best, device="cuda", batch_size=16).predict(
        paths, topk=3))
    on_cpu = list(Predictor.from_checkpoint(best, device="cpu", batch_size=16).predict(
        paths, topk=3))
    assert all(isinstance(r, Prediction) for r in on_gpu + on_cpu)
    for a, b in zip(on_gpu, on_cpu, strict=True):
        assert a.path == b.path and [c for c, _ in a.topk] == [c for c, _ in b.topk]
        assert max(abs(p - q) for (_, p), (_, q) in zip(a.topk, b.topk, strict=True)) <= TOL
    right = sum(r.topk[0][0] == r.path.split("/")[-2] for r in on_gpu)
    assert right >= 20, right  # at least half of the 40 images

    code = main(["predict", "--checkpoint", str(best), *map(str, paths[:5]), "--topk", "2",
                 "--json", "--device", "cuda"])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and len(record["predictions"]) == 5 and record["failed"] == []
    assert [p["topk"][0]["class"] for p in record["predictions"]] == \
        [r.topk[0][0] for r in on_gpu[:5]]


def _eager_cuda_logits(checkpoint, n=5):
    model, meta = load_checkpoint(checkpoint, device="cuda")
    x = sample_inputs(meta, n, seed=7)
    with torch.no_grad():
        return x, model(x.cuda()).cpu()


def test_onnx_export_of_a_cuda_trained_checkpoint_matches_cuda(cuda_run, tmp_path, no_tf32):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    best = cuda_run / "best.safetensors"
    report = export_checkpoint(best, tmp_path / "r8.onnx", "onnx", batch_size=2)
    assert report.max_abs_diff <= TOL and report.max_abs_logit > 0.1
    session = ort.InferenceSession(str(tmp_path / "r8.onnx"),
                                   providers=["CPUExecutionProvider"])
    x, want = _eager_cuda_logits(best)
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    assert got.shape == want.shape == (5, 10)
    assert (got - want).abs().max().item() <= TOL


def test_torchscript_export_of_a_cuda_trained_checkpoint_runs_on_cuda(cuda_run, tmp_path,
                                                                      no_tf32):
    import warnings

    best = cuda_run / "best.safetensors"
    report = export_checkpoint(best, tmp_path / "r8.pt", "torchscript")
    assert report.max_abs_diff <= TOL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
        scripted = torch.jit.load(str(tmp_path / "r8.pt"), map_location="cuda")
    x, want = _eager_cuda_logits(best)
    with torch.no_grad():
        got = scripted(x.cuda())
    assert got.is_cuda and (got.cpu() - want).abs().max().item() <= TOL
