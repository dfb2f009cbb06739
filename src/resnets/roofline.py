"""Where a step's time goes, set against the machine's two limits: memory bandwidth and
matmul throughput.

- `copy_bandwidth_gbs`: a STREAM-like copy in torch (bytes read plus bytes written per
  second) over arrays far larger than the caches, on the threads torch uses.
- `record_ops`: runs a step once under a dispatch mode that sees every aten op the step
  runs (forward, autograd's backward, the optimizer), times each, and counts its bytes at
  the op boundary (every tensor operand read once, every result written once) and its FLOPs
  (torch's own formulas for convolutions and matmuls). The bytes are the traffic of eager
  execution with no reuse between ops: what fusing ops would remove.
- `summarize`: groups the records by kind of op (conv forward, BN backward, ...) and gives
  each its lower bound ``max(bytes / bandwidth, FLOPs / peak)`` and the fraction of that
  bound the op reaches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

__all__ = ["OpKind", "OpRecord", "copy_bandwidth_gbs", "kind_of", "record_ops", "summarize"]

_aten = torch.ops.aten


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def copy_bandwidth_gbs(device: torch.device | str = "cpu", *, mib: int = 256,
                       repeats: int = 5) -> float:
    """The best GB/s (1e9 bytes) of ``repeats`` copies of a ``mib`` MiB fp32 array into
    another, counting the bytes read and the bytes written, after one untimed copy."""
    device = torch.device(device)
    n = mib * 2**20 // 4
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best / 1e9


@dataclass
class OpRecord:
    """One aten op as a step ran it."""

    name: str  # e.g. "convolution_backward"
    phase: str  # "forward", "backward" (autograd's) or "optimizer" (inside a step())
    seconds: float
    bytes: int
    flops: int


def _tensors(tree) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(tree)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


class _Recorder(TorchDispatchMode):
    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.records: list[OpRecord] = []
        self.in_optimizer = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.in_optimizer:
            phase = "optimizer"
        elif torch._C._current_autograd_node() is not None:
            phase = "backward"
        else:
            phase = "forward"
        _sync(self.device)
        start = time.perf_counter()
        out = func(*args, **kwargs)
        _sync(self.device)
        seconds = time.perf_counter() - start
        if func.is_view:  # a view moves no data
            return out
        inputs = {id(t): t for t in _tensors((args, kwargs))}
        moved = sum(t.numel() * t.element_size() for t in inputs.values())
        moved += sum(t.numel() * t.element_size() for t in _tensors(out))
        formula = flop_registry.get(func.overloadpacket)
        flops = int(formula(*args, **kwargs, out_val=out)) if formula else 0
        self.records.append(OpRecord(func.overloadpacket.__name__, phase, seconds, moved, flops))
        return out


def record_ops(step: Callable[[], None], device: torch.device | str = "cpu") -> list[OpRecord]:
    """Run ``step`` once and return every aten op it ran, in order, with its seconds, bytes
    and FLOPs. Run the step a few times before, so that the records show a warm step."""
    recorder = _Recorder(torch.device(device))

    def entering(*_):
        recorder.in_optimizer = True

    def leaving(*_):
        recorder.in_optimizer = False

    hooks = [register_optimizer_step_pre_hook(entering),
             register_optimizer_step_post_hook(leaving)]
    try:
        with recorder:
            step()
    finally:
        for hook in hooks:
            hook.remove()
    return recorder.records


# Op names (the overload packet's) by kind; anything else is "other".
_KINDS = {
    "conv": ("convolution", "_convolution", "convolution_backward"),
    "batch norm": ("native_batch_norm", "_native_batch_norm_legit",
                   "_native_batch_norm_legit_no_training", "native_batch_norm_backward",
                   "batch_norm_backward", "_batch_norm_with_update",
                   "_batch_norm_no_update"),
    "ReLU": ("relu", "relu_", "threshold_backward"),
    "add": ("add", "add_"),
    "fc": ("mm", "addmm", "t"),
    "pool": ("mean", "avg_pool2d", "avg_pool2d_backward", "adaptive_avg_pool2d",
             "_adaptive_avg_pool2d", "_adaptive_avg_pool2d_backward", "max_pool2d_with_indices",
             "max_pool2d_with_indices_backward", "expand", "div"),
    "loss": ("_log_softmax", "_log_softmax_backward_data", "nll_loss_forward",
             "nll_loss_backward", "ones_like"),
    "shortcut": ("constant_pad_nd", "slice_backward", "new_zeros"),
}
_KIND_OF = {name: kind for kind, names in _KINDS.items() for name in names}


def kind_of(record: OpRecord) -> str:
    """A record's kind with its pass, e.g. ``"conv backward"``; every op of an optimizer's
    step is ``"optimizer"``."""
    if record.phase == "optimizer":
        return "optimizer"
    return f"{_KIND_OF.get(record.name, 'other')} {record.phase}"


@dataclass
class OpKind:
    """The records of one kind added up, with their roofline bound."""

    kind: str
    calls: int = 0
    seconds: float = 0.0
    bytes: int = 0
    flops: int = 0
    bound_seconds: float = 0.0  # sum over the calls of max(bytes / bw, flops / peak)
    compute_bound_seconds: float = 0.0  # the part of it where FLOPs / peak is the larger
    names: set[str] = field(default_factory=set)

    @property
    def limit_fraction(self) -> float:
        """How close the kind runs to its bound: 1.0 is at the limit."""
        return self.bound_seconds / self.seconds if self.seconds else 0.0

    @property
    def bound_by(self) -> str:
        """``"compute"`` or ``"memory"``: the limit behind most of its bound."""
        return "compute" if self.compute_bound_seconds > self.bound_seconds / 2 else "memory"


def summarize(records: list[OpRecord], *, bandwidth_gbs: float,
              peak_tflops: float) -> list[OpKind]:
    """The records grouped by `kind_of`, largest time first; each call's bound is the larger
    of its bytes at ``bandwidth_gbs`` and its FLOPs at ``peak_tflops``."""
    kinds: dict[str, OpKind] = {}
    for r in records:
        k = kinds.setdefault(kind_of(r), OpKind(kind_of(r)))
        k.calls += 1
        k.seconds += r.seconds
        k.bytes += r.bytes
        k.flops += r.flops
        k.names.add(r.name)
        memory_s = r.bytes / (bandwidth_gbs * 1e9)
        compute_s = r.flops / (peak_tflops * 1e12)
        k.bound_seconds += max(memory_s, compute_s)
        if compute_s > memory_s:
            k.compute_bound_seconds += compute_s
    return sorted(kinds.values(), key=lambda k: -k.seconds)
