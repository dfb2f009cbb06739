"""`--precision auto`: the fastest of the CPU's training paths for this model, measured.

Neither native bf16 nor the memory layout says which path is fastest on a CPU. ResNet-20
training ran 1213 vs 529 img/s (bf16 vs fp32) on an AMD EPYC with AVX512-BF16 and 1006 vs
~600 on an Intel Xeon with AMX, but 429-481 vs 657-678 on an Intel Xeon with AVX512-BF16
and no AMX; and on an AMD EPYC without bf16 (AVX2 only) ResNet-56 trains at 80 img/s in
fp32 channels_last against 64 in fp32 NCHW (one thread). So on every CPU the first run of a
(CPU, threads, versions, model, batch) times a few training steps of each candidate path
(fp32 NCHW, fp32 channels_last, and bf16 channels_last where bf16 is native), interleaved
in rounds, and keeps the fastest by its median step. A probe whose candidates differ by
more than the CPU class allows (`PLAUSIBLE_RATIO`: a loaded machine once cached "bf16 5335
ms vs fp32 141 ms") is measured once more; if it stays implausible the CPU-class default is
taken and nothing is cached. Results are cached in the user cache (``$RESNETS_CACHE`` or
``~/.cache/resnets``, file ``precision-probe.json``); ``RESNETS_REPROBE=1`` measures again
and replaces the cached entry. CUDA always takes bf16 + channels_last.
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
PROBE_VERSION = 2  # 2: three candidates timed in interleaved rounds (1: fp32 vs bf16)
WARMUP_STEPS, ROUNDS, STEPS_PER_ROUND = 2, 3, 2
# The widest gap between two paths seen on a quiet CPU is 2.4x (bf16 + AMX vs fp32 NCHW,
# ResNet-56); beyond this factor a probe measured load, not the paths.
PLAUSIBLE_RATIO = 4.0
REPROBE_ENV = "RESNETS_REPROBE"


@dataclass(frozen=True)
class Candidate:
    name: str  # the key in the probe cache and the log
    bf16: bool
    channels_last: bool


FP32 = Candidate("fp32", False, False)
FP32_CL = Candidate("fp32+channels_last", False, True)
BF16_CL = Candidate("bf16+channels_last", True, True)


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


def candidates(device: torch.device) -> tuple[Candidate, ...]:
    """The training paths worth timing on this CPU."""
    return (FP32, FP32_CL, BF16_CL) if native_bf16(device) else (FP32, FP32_CL)


def default_candidate(device: torch.device) -> Candidate:
    """What the CPU class usually favours, taken when a probe cannot be trusted."""
    return BF16_CL if native_bf16(device) else FP32


def probe_key(model: str, model_kwargs: dict, batch: int, size: tuple[int, ...]) -> str:
    return json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(),
                       "threads": torch.get_num_threads(), "torch": torch.__version__,
                       "model": model, "model_kwargs": model_kwargs, "batch": batch,
                       "size": list(size), "probe": PROBE_VERSION}, sort_keys=True)


class _Stepper:
    """One candidate's model, batch and optimizer, stepped on demand."""

    def __init__(self, cand: Candidate, model: torch.nn.Module, x: torch.Tensor,
                 y: torch.Tensor):
        self.cand, self.y = cand, y
        fmt = torch.channels_last if cand.channels_last else torch.contiguous_format
        self.model = model.to(memory_format=fmt).train()
        self.x = x.contiguous(memory_format=fmt)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)

    def step(self) -> float:
        t0 = time.perf_counter()
        with autocast("cpu", torch.bfloat16 if self.cand.bf16 else None):
            loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0


def measure(model_name: str, model_kwargs: dict, batch: int, size: tuple[int, ...],
            paths: tuple[Candidate, ...]) -> dict[str, float]:
    """Median seconds per SGD training step of each path, timed in interleaved rounds.

    Rounds alternate the paths so that a load that comes and goes hits all of them alike.
    """
    rng_state = torch.get_rng_state()  # the probe must not shift the run's random streams
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, *size, generator=g)
        y = torch.randint(0, model_kwargs.get("num_classes", 10), (batch,), generator=g)
        steppers = [_Stepper(c, create_model(model_name, **model_kwargs), x, y)
                    for c in paths]
        for s in steppers:
            for _ in range(WARMUP_STEPS):
                s.step()
        times: dict[str, list[float]] = {s.cand.name: [] for s in steppers}
        for _ in range(ROUNDS):
            for s in steppers:
                times[s.cand.name] += [s.step() for _ in range(STEPS_PER_ROUND)]
        return {name: statistics.median(ts) for name, ts in times.items()}
    finally:
        torch.set_rng_state(rng_state)


def plausible(times: dict[str, float]) -> bool:
    """Whether the paths' step times are within the factor a quiet CPU shows."""
    return max(times.values()) <= PLAUSIBLE_RATIO * min(times.values())


def choose(device: torch.device, model_name: str, model_kwargs: dict, batch: int,
           size: tuple[int, ...] | None = None, cache_dir: Path | None = None) -> Choice:
    """The fast path for training ``model_name`` at ``batch`` images per step on ``device``."""
    if device.type == "cuda":
        return Choice(True, True, "CUDA: bf16 autocast + channels_last")
    paths = candidates(device)
    size = tuple(size or model_info(model_name).input_size)
    key = probe_key(model_name, model_kwargs, batch, size)
    path = (cache_dir or _user_cache()) / PROBE_FILE
    cached = _read(path)
    how = "cached probe"
    known = cached.get(key)
    if (not isinstance(known, dict) or not any(c.name in known for c in paths)
            or os.environ.get(REPROBE_ENV) == "1"):
        t = measure(model_name, model_kwargs, batch, size, paths)
        if not plausible(t):
            t = measure(model_name, model_kwargs, batch, size, paths)
        if not plausible(t):
            best = default_candidate(device)
            return Choice(best.bf16, best.channels_last,
                          f"auto on {cpu_model()}: {best.name}, the CPU class's default: "
                          f"the probe was implausible twice ({_listing(t)}; a busy machine?), "
                          f"not cached; {REPROBE_ENV}=1 measures again")
        cached[key] = t
        _write(path, cached)
        how = "measured now"
    t = cached[key]
    best = min((c for c in paths if c.name in t), key=lambda c: t[c.name])
    return Choice(best.bf16, best.channels_last,
                  f"auto on {cpu_model()}: {best.name} (training step {_listing(t)}, {how}; "
                  f"{path}; {REPROBE_ENV}=1 measures again)")


def _listing(times: dict[str, float]) -> str:
    return ", ".join(f"{1000 * s:.0f} ms in {name}" for name, s in times.items())


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
