"""`--precision auto`: the faster of fp32 and bf16 for this model on this machine, measured.

Native bf16 alone does not say which is faster on a CPU: ResNet-20 training ran 1213 vs 529
img/s (bf16 vs fp32) on an AMD EPYC with AVX512-BF16 and 1006 vs ~600 on an Intel Xeon with
AMX, but 429-481 vs 657-678 on an Intel Xeon with AVX512-BF16 and no AMX. So on a CPU with
native bf16, the first run of a (CPU, threads, versions, model, batch) times a few training
steps in each candidate and keeps the faster; the result is cached in the user cache
(``$RESNETS_CACHE`` or ``~/.cache/resnets``, file ``precision-probe.json``) and logged. CUDA
always takes bf16 + channels_last; CPUs without native bf16 take fp32.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..device import autocast, cpu_model
from ..models import create_model, model_info

PROBE_FILE = "precision-probe.json"
WARMUP_STEPS, TIMED_STEPS = 2, 5


@dataclass(frozen=True)
class Choice:
    bf16: bool
    channels_last: bool
    reason: str  # one line for the log: how the choice was made, with the numbers


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` has bf16 arithmetic in hardware (CUDA; AVX512-BF16 / AMX CPUs)."""
    if device.type == "cuda":
        return True
    try:
        return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def probe_key(model: str, model_kwargs: dict, batch: int, size: tuple[int, ...]) -> str:
    return json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(),
                       "threads": torch.get_num_threads(), "torch": torch.__version__,
                       "model": model, "model_kwargs": model_kwargs, "batch": batch,
                       "size": list(size)}, sort_keys=True)


def step_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 bf16: bool) -> float:
    """Median wall time of one SGD training step (forward, backward, update)."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    times = []
    for i in range(WARMUP_STEPS + TIMED_STEPS):
        t0 = time.perf_counter()
        with autocast("cpu", torch.bfloat16 if bf16 else None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= WARMUP_STEPS:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(model_name: str, model_kwargs: dict, batch: int,
            size: tuple[int, ...]) -> dict[str, float]:
    """Seconds per training step of fp32 NCHW and of bf16 channels_last, on the CPU."""
    rng_state = torch.get_rng_state()  # the probe must not shift the run's random streams
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, *size, generator=g)
        y = torch.randint(0, model_kwargs.get("num_classes", 10), (batch,), generator=g)
        result = {}
        for name, bf16 in (("fp32", False), ("bf16", True)):
            model = create_model(model_name, **model_kwargs).train()
            xs = x
            if bf16:
                model = model.to(memory_format=torch.channels_last)
                xs = x.contiguous(memory_format=torch.channels_last)
            result[name] = step_seconds(model, xs, y, bf16=bf16)
        return result
    finally:
        torch.set_rng_state(rng_state)


def choose(device: torch.device, model_name: str, model_kwargs: dict, batch: int,
           size: tuple[int, ...] | None = None, cache_dir: Path | None = None) -> Choice:
    """The fast path for training ``model_name`` at ``batch`` images per step on ``device``."""
    if device.type == "cuda":
        return Choice(True, True, "CUDA: bf16 autocast + channels_last")
    if not native_bf16(device):
        return Choice(False, False, "CPU without native bf16: fp32")
    size = tuple(size or model_info(model_name).input_size)
    key = probe_key(model_name, model_kwargs, batch, size)
    path = (cache_dir or _user_cache()) / PROBE_FILE
    cached = _read(path)
    how = "cached probe"
    if key not in cached:
        cached[key] = measure(model_name, model_kwargs, batch, size)
        _write(path, cached)
        how = "measured now"
    t = cached[key]
    bf16 = t["bf16"] < t["fp32"]
    return Choice(bf16, bf16, f"auto on {cpu_model()}: {'bf16' if bf16 else 'fp32'} "
                              f"(training step {1000 * t['bf16']:.0f} ms in bf16 + "
                              f"channels_last vs {1000 * t['fp32']:.0f} ms in fp32, {how}; "
                              f"{path})")


def _user_cache() -> Path:
    env = os.environ.get("RESNETS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "resnets"


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only means probing again next time
