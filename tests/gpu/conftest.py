"""The `gpu` test subset: what the CPU tests exercise, run on CUDA.

Every test in this folder carries the `gpu` marker and is skipped where CUDA is absent, so the
default test run (CI, CPU machines) collects and skips them. Run them with
``pytest -m gpu tests/gpu`` on a machine with a GPU; ``benchmarks/gpu_session.sh`` does that on
a lent one and keeps the log. ``$RESNETS_GPU_OUT`` names a folder for the records worth keeping
(the bench JSON); by default a temporary one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# cuBLAS reads this when it creates its first handle; deterministic training on CUDA needs it
# set before any CUDA work in this process (the exact-resume test).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

HERE = Path(__file__).resolve().parent
NO_CUDA = "needs a CUDA device (torch.cuda.is_available() is False)"


@pytest.hookimpl(tryfirst=True)  # before -m selects on markers
def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.gpu)
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_global_torch_flags():
    """Trainer(deterministic=True) switches deterministic algorithms on for the process, and
    some tests turn TF32 off: put both back so that tests do not depend on their order."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


@pytest.fixture
def no_tf32():
    """Full fp32 convolutions and matmuls on CUDA (TF32 convolutions are PyTorch's default),
    for comparisons with the CPU at 1e-4."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


@pytest.fixture(scope="session")
def gpu_out(tmp_path_factory) -> Path:
    """$RESNETS_GPU_OUT (created), else a temporary folder: where records to keep go."""
    env = os.environ.get("RESNETS_GPU_OUT")
    out = Path(env) if env else tmp_path_factory.mktemp("gpu-out")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="session")
def gpu_config(color_folder, tmp_path_factory):
    """``gpu_config(**overrides)``: resnet8 on the colour folder on CUDA, 30 iterations, fp32,
    not deterministic (the fast path); one decoded-data cache for the session."""
    from resnets.config import resolve_config

    cache = tmp_path_factory.mktemp("gpu-cache")

    def make(**overrides):
        values = dict(model="resnet8", data=str(color_folder), cache_dir=str(cache),
                      iterations=30, milestones=[1000], batch_size=16, val_split=40, lr=0.05,
                      log_every=5, eval_every=30, save_every=10, device="cuda",
                      precision="fp32", channels_last=False, deterministic=False)
        values.update(overrides)
        return resolve_config("cifar10-paper", **values)

    return make


@pytest.fixture(scope="session")
def cuda_run(gpu_config, tmp_path_factory) -> Path:
    """The run directory of a 40-iteration fp32 CUDA training (the CUDA-trained checkpoint
    that eval, predict and export read)."""
    from resnets.train.loop import Trainer

    out = tmp_path_factory.mktemp("cuda-run") / "run"
    result = Trainer(gpu_config(iterations=40, milestones=[30], eval_every=10), out,
                     quiet=True).fit()
    assert (result.iteration, result.exit_code) == (40, 0)
    return out
