"""Model throughput on synthetic data, set against the device's measured matmul peak and,
for the ImageNet depths, against torchvision's implementation of the same network.

`run_benchmark` is what ``resnets bench`` prints. The numbers it reports:

- ``img_per_s``: images per second over ``steps`` timed steps after ``warmup`` untimed ones
  (CUDA events around the steps and a synchronize on GPU; ``time.perf_counter`` on CPU). A
  training step is forward, cross-entropy, backward and an SGD-with-momentum update. The
  compared models run their timed steps interleaved in ``rounds`` chunks, and each reports
  the median chunk, so that a shared machine's changing load does not favour one of them.
- ``peak_tflops``: the best of several timed square matmuls of ``peak_size`` in the
  benchmark's dtype on the same device, a practical ceiling rather than the datasheet figure.
- ``model_tflops`` and ``peak_fraction``: the model's useful FLOP/s, counting 2 FLOPs per
  multiply-add of `resnets.count_macs` at the input size (x3 for training: the backward pass
  costs about twice the forward), and its fraction of that peak.
- ``bytes_per_image`` and ``bandwidth_fraction``: the bytes one step's aten ops read and
  write at their boundaries (`resnets.roofline.record_ops`, eager, no reuse between ops)
  per image, and the share of the machine's copy bandwidth (``bandwidth_gbs``,
  `resnets.roofline.copy_bandwidth_gbs`) that this traffic takes at the measured speed. A
  step near 100% is bound by memory traffic; fusing ops is what lowers it.
- ``torchvision``: for resnet18/34/50/101/152, torchvision's model measured in the same run
  under the same settings, and ``ratio`` = ours / torchvision. The paper's ResNet-50/101/152
  stride in the bottleneck's 1x1 ("v1"); torchvision strides in the 3x3 ("v1.5", more MACs).
  For those the comparison also measures ours in torchvision's layout, so the ratio compares
  implementations of one architecture.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .device import autocast, cpu_model, device_name, resolve_device
from .errors import UserError
from .models import count_macs, create_model, model_info
from .roofline import copy_bandwidth_gbs, record_ops
from .train.precision import choose as choose_precision
from .train.precision import native_bf16
from .version import versions

__all__ = ["MODES", "PRECISIONS", "TORCHVISION_NAMES", "make_step", "matmul_peak_tflops",
           "run_benchmark", "time_interleaved"]

PRECISIONS = ("fp32", "bf16")
MODES = ("train", "infer")
TORCHVISION_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class _Timer:
    """Elapsed seconds of a block: CUDA events on GPU (queued work included), perf_counter
    on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds = 0.0

    def __enter__(self) -> _Timer:
        if self.cuda:
            torch.cuda.synchronize()
            self.start_event = torch.cuda.Event(enable_timing=True)
            self.end_event = torch.cuda.Event(enable_timing=True)
            self.start_event.record()
        else:
            self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.end_event.record()
            torch.cuda.synchronize()
            self.seconds = self.start_event.elapsed_time(self.end_event) / 1e3
        else:
            self.seconds = time.perf_counter() - self.start


@contextlib.contextmanager
def _tf32_like_convs():
    # On CUDA, fp32 convolutions use TF32 by default (cudnn.allow_tf32) while fp32 matmuls do
    # not; a peak measured without TF32 would understate what the convs can reach.
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


@torch.no_grad()
def matmul_peak_tflops(device: torch.device | str, dtype: torch.dtype = torch.float32, *,
                       size: int | None = None, repeats: int | None = None) -> float:
    """The best TFLOP/s of ``repeats`` timed ``size`` x ``size`` matmuls (2 * size^3 FLOPs
    each) in ``dtype`` on ``device``, after one untimed warm-up."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    size = size or (8192 if cuda else 2048)
    repeats = repeats or (10 if cuda else 3)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    with _tf32_like_convs() if cuda else contextlib.nullcontext():
        torch.mm(a, b)
        for _ in range(repeats):
            with _Timer(device) as timer:
                torch.mm(a, b)
            best = min(best, timer.seconds)
    return 2 * size**3 / best / 1e12


def make_step(model: nn.Module, *, batch_size: int, input_size: tuple[int, int, int],
              device: torch.device, mode: str = "infer", precision: str = "fp32",
              channels_last: bool = False, num_classes: int = 1000) -> Callable[[], None]:
    """One benchmark step of ``model`` (already on ``device``) on a fixed synthetic batch:
    a forward pass (``infer``) or forward, cross-entropy, backward and SGD update
    (``train``)."""
    if mode not in MODES or precision not in PRECISIONS:
        raise UserError(f"mode must be one of {MODES} and precision one of {PRECISIONS}, got "
                        f"{mode!r}, {precision!r}")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *input_size, generator=generator).to(device)  # (B, C, H, W)
    y = torch.randint(0, num_classes, (batch_size,), generator=generator).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mixed = autocast(device, torch.bfloat16 if precision == "bf16" else None)

    if mode == "infer":
        model.eval()

        def step() -> None:
            with torch.inference_mode(), mixed:
                model(x)

        return step

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train_step() -> None:
        with mixed:
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return train_step


def time_interleaved(steps_by_name: dict[str, Callable[[], None]], *, device: torch.device,
                     steps: int, warmup: int, rounds: int) -> dict[str, float]:
    """Median seconds per step of each step function.

    Each runs ``warmup`` untimed steps, then the ``steps`` timed ones are split into
    ``rounds`` chunks taken in turn (A B A B ...), so that a change in the machine's load
    (a shared CPU, a GPU's clocks) affects every contender alike.
    """
    if steps < 1 or warmup < 0:
        raise UserError(f"need steps >= 1 and warmup >= 0, got {steps}, {warmup}")
    for step in steps_by_name.values():
        for _ in range(warmup):
            step()
    rounds = max(1, min(rounds, steps))
    chunks = [steps // rounds + (r < steps % rounds) for r in range(rounds)]
    per_step: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for n in chunks:
        for name, step in steps_by_name.items():
            with _Timer(device) as timer:
                for _ in range(n):
                    step()
            per_step[name].append(timer.seconds / n)
    return {name: statistics.median(times) for name, times in per_step.items()}


def _prepare(model: nn.Module, device: torch.device, channels_last: bool,
             compile: bool) -> nn.Module:
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile else model


def _classes(model: nn.Module) -> int:
    fc = getattr(model, "fc", None)
    return fc.out_features if isinstance(fc, nn.Linear) else 1000


def run_benchmark(
    name: str,
    *,
    batch_size: int | None = None,
    precision: str = "fp32",
    channels_last: bool | None = None,
    compile: bool = False,
    mode: str = "infer",
    steps: int = 20,
    warmup: int = 5,
    rounds: int = 4,
    device: str | torch.device = "auto",
    image_size: int | None = None,
    compare_torchvision: bool = True,
    peak_size: int | None = None,
) -> dict:
    """Measure the registered model ``name``; see the module docstring for every number.

    Args:
        batch_size: images per step; default 256 on CUDA, 16 on CPU.
        precision: ``fp32``, ``bf16`` autocast (the matmul peak is then measured in bf16), or
            ``auto``: the faster of the two for training this model (`resnets.train.precision`).
        channels_last: model and inputs in channels_last memory format; None: with bf16 where
            bf16 is native, as training does.
        compile: ``torch.compile`` the model(s); compilation happens in the warm-up.
        mode: ``infer`` (eval mode, inference_mode) or ``train`` (full SGD step).
        steps, warmup: timed and untimed steps per model.
        rounds: the timed steps of the compared models run interleaved in this many chunks;
            each model's speed is the median over its chunks (see `time_interleaved`).
        image_size: square input side; default the model's (224 ImageNet, 32 CIFAR).
        compare_torchvision: for `TORCHVISION_NAMES`, also time torchvision's model.
        peak_size: matmul size for the peak (default 8192 on CUDA, 2048 on CPU).

    Returns:
        A JSON-ready dict; ``peak_fraction`` = ``model_tflops / peak_tflops``.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    info = model_info(name)
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch must be at least 1, got {batch_size}")
    side = image_size or info.input_size[1]
    input_size = (info.input_size[0], side, side)
    batch = batch_size or (256 if dev.type == "cuda" else 16)
    choice = None
    if precision == "auto":
        choice = choose_precision(dev, name, {}, batch, input_size)
        precision = "bf16" if choice.bf16 else "fp32"
        channels_last = choice.channels_last if channels_last is None else channels_last
    elif channels_last is None:
        channels_last = precision == "bf16" and native_bf16(dev)
    flops_factor = 3 if mode == "train" else 1

    torch.manual_seed(0)
    models = {"ours": create_model(name)}
    if compare_torchvision and name in TORCHVISION_NAMES:
        import torchvision  # about a second to import; only this comparison needs it

        models["torchvision"] = getattr(torchvision.models, name)(weights=None)
    macs = {key: count_macs(model, input_size) for key, model in models.items()}
    if "torchvision" in models and macs["torchvision"] != macs["ours"]:
        # Bottleneck nets: also time ours in torchvision's "v1.5" layout, one architecture.
        models["ours_tv_layout"] = create_model(name, stride_in_1x1=False)
        macs["ours_tv_layout"] = count_macs(models["ours_tv_layout"], input_size)
    step_fns = {}
    for key, model in models.items():
        step_fns[key] = make_step(_prepare(model, dev, channels_last, compile),
                                  batch_size=batch, input_size=input_size, device=dev,
                                  mode=mode, precision=precision,
                                  channels_last=channels_last, num_classes=_classes(model))
    seconds = time_interleaved(step_fns, device=dev, steps=steps, warmup=warmup,
                               rounds=rounds)
    img_per_s = {key: batch / sec for key, sec in seconds.items()}
    peak = matmul_peak_tflops(dev, _DTYPES[precision], size=peak_size)
    bandwidth = copy_bandwidth_gbs(dev)
    # The traffic of the eager ops (of the uncompiled module even under --compile).
    eager_step = make_step(models["ours"], batch_size=batch, input_size=input_size, device=dev,
                           mode=mode, precision=precision, channels_last=channels_last,
                           num_classes=_classes(models["ours"]))
    bytes_per_image = sum(r.bytes for r in record_ops(eager_step, dev)) / batch
    model_tflops = img_per_s["ours"] * 2 * macs["ours"] * flops_factor / 1e12
    result = {
        "model": name,
        "mode": mode,
        "precision": precision,
        "channels_last": channels_last,
        "compile": compile,
        "batch_size": batch,
        "input_size": list(input_size),
        "steps": steps,
        "warmup": warmup,
        "rounds": rounds,
        "img_per_s": img_per_s["ours"],
        "macs_per_image": macs["ours"],
        "flops_per_image": 2 * macs["ours"] * flops_factor,
        "model_tflops": model_tflops,
        "peak_tflops": peak,
        "peak_dtype": precision,
        "peak_fraction": model_tflops / peak,
        "bytes_per_image": bytes_per_image,
        "bandwidth_gbs": bandwidth,
        "bandwidth_fraction": img_per_s["ours"] * bytes_per_image / (bandwidth * 1e9),
        "torchvision": None,
        "device": str(dev),
        "device_name": device_name(dev),
        "cpu_model": cpu_model(),
        "precision_choice": choice.reason if choice else None,
        "torch_threads": torch.get_num_threads(),
        "versions": versions(),
    }
    if "torchvision" in models:
        key = "ours_tv_layout" if "ours_tv_layout" in models else "ours"
        layout = "torchvision (stride_in_1x1=False)" if key != "ours" else "paper"
        result["torchvision"] = {
            "img_per_s": img_per_s["torchvision"],
            "macs_per_image": macs["torchvision"],
            "ours": {"img_per_s": img_per_s[key], "macs_per_image": macs[key],
                     "layout": layout},
            "ratio": img_per_s[key] / img_per_s["torchvision"],
        }
    return result
