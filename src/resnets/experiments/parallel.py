"""Several training runs at once on one device, one worker process per run.

Each worker is its own Python process with its own run directory and log file, so a run that
fails does not stop the others. On a CPU the cores are split between the workers (two
one-thread ResNet-20 runs on 2 cores train about 25% more images per second in total than one
two-thread run); on a GPU the workers share the device.

Run as a module, this file is the worker: ``python -m resnets.experiments.parallel CONFIG_JSON
RUN_DIR`` trains (or resumes) one run and exits with the trainer's exit code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import TrainConfig
from ..device import resolve_device
from ..errors import UserError
from ..train.loop import Trainer


def log_path(run_dir: Path) -> Path:
    """A worker's output, beside its run directory (which the trainer must find empty)."""
    return run_dir.with_name(run_dir.name + ".log")


@dataclass
class Job:
    label: str
    cfg: TrainConfig
    run_dir: Path
    process: subprocess.Popen | None = None
    log: object = None
    exit_code: int | None = None


GPU_BYTES_PER_RUN = 2 * 1024**3  # a CIFAR run: CUDA context, the uint8 set, activations


def default_parallel(device: str, runs: int) -> int:
    """Runs at once when ``--parallel`` is not given: 1 on a CPU (its cores are the limit:
    split them with --parallel N on purpose), and on a GPU as many as its free memory holds
    at `GPU_BYTES_PER_RUN` each, at most ``runs``."""
    dev = resolve_device(device)
    if dev.type != "cuda" or runs < 1:
        return 1
    free, _ = torch.cuda.mem_get_info(dev)
    return max(1, min(runs, int(0.8 * free) // GPU_BYTES_PER_RUN))


def threads_per_worker(parallel: int) -> int:
    return max(1, (os.cpu_count() or 1) // parallel)


def _start(job: Job, threads: int) -> None:
    job.run_dir.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    job.log = open(log_path(job.run_dir), "a")  # noqa: SIM115 (closed when the worker ends)
    job.process = subprocess.Popen(
        [sys.executable, "-m", "resnets.experiments.parallel",
         json.dumps(job.cfg.to_dict()), str(job.run_dir)],
        stdout=job.log, stderr=subprocess.STDOUT, env=env)


def run_jobs(jobs: list[Job], parallel: int) -> dict[str, int]:
    """Train ``jobs`` with at most ``parallel`` workers at a time; returns label -> exit code.

    SIGTERM/SIGINT to this process is passed on to the workers (which save and stop); no new
    worker starts after it."""
    threads = threads_per_worker(parallel)
    pending, running = list(jobs), []
    stop: list[int] = []

    def on_signal(signum, frame):  # noqa: ARG001
        stop.append(signum)
        for job in running:
            job.process.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    start = time.time()
    try:
        while pending or running:
            while pending and len(running) < parallel and not stop:
                job = pending.pop(0)
                _start(job, threads)
                running.append(job)
                print(f"  started {job.label} (pid {job.process.pid}, {threads} thread(s), "
                      f"log {log_path(job.run_dir)})", flush=True)
            if stop and not running:
                break
            time.sleep(0.5)
            for job in [j for j in running if j.process.poll() is not None]:
                running.remove(job)
                job.exit_code = job.process.returncode
                job.log.close()
                state = "finished" if job.exit_code == 0 else f"exit code {job.exit_code}"
                print(f"  {job.label}: {state} after {time.time() - start:.0f} s", flush=True)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return {job.label: job.exit_code for job in jobs if job.exit_code is not None}


def _worker(config_json: str, run_dir: str) -> int:
    cfg = TrainConfig.from_dict(json.loads(config_json))
    return Trainer(cfg, run_dir, resume="auto", quiet=True).fit().exit_code


if __name__ == "__main__":
    try:
        sys.exit(_worker(*sys.argv[1:3]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
