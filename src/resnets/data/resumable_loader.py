"""A DataLoader over a map-style dataset (e.g. `FolderDataset`) whose order resumes exactly.

`ResumableSampler` gives each epoch a seeded permutation, sliced per rank in distributed runs,
that can start at any batch; `make_loader` runs every sample's transform under a seed of its
own, so a batch is a pure function of (seed, epoch, batch index) whatever the number of
workers or the resume point.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .device_loader import mix_seed

__all__ = ["ResumableSampler", "make_loader", "set_loader_epoch"]


class ResumableSampler(Sampler):
    """Sample indices of one epoch: a seeded permutation that can start anywhere.

    Training (``shuffle=True``): epoch e visits ``randperm(n)`` drawn from a generator seeded
    with mix(seed, e), a hash (as in `DeviceLoader`; ``seed + e`` would make run 1's epoch 0
    run 0's epoch 1). With ``world_size`` > 1 the permutation is first padded with its own
    head to a multiple of ``world_size`` (as DistributedSampler does, so every rank runs the
    same number of steps) and rank r takes positions ``r::world_size``. Evaluation
    (``shuffle=False``): ``range(n)`` in order, sliced the same way but not padded by default,
    so that no image is counted twice.

    ``start`` skips the first ``start`` indices of this rank's sequence: a run resumed at batch
    k passes ``start = k * batch_size`` and sees exactly the tail of the uninterrupted epoch.

    With ``with_seeds=True`` each item is ``(index, sample_seed)``, where the seed belongs to
    the position in the global (padded) permutation and is drawn from mix(seed, e, 1); a
    `make_loader` loader runs the transform of that sample under this seed, which makes the
    augmentation independent of worker count, world size and resume point.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pad: bool | None = None,
        with_seeds: bool = False,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad = shuffle if pad is None else pad
        self.with_seeds = with_seeds
        self.set_epoch(epoch, start)

    @property
    def rank_length(self) -> int:
        """Indices of this rank in a whole epoch (before `start` is skipped)."""
        if self.pad:
            return -(-self.num_samples // self.world_size)
        return len(range(self.rank, self.num_samples, self.world_size))

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Move to ``epoch``, skipping its first ``start`` indices (of this rank)."""
        if epoch < 0 or not 0 <= start <= self.rank_length:
            raise ValueError(f"need epoch >= 0 and 0 <= start <= {self.rank_length}, got "
                             f"epoch {epoch}, start {start}")
        self.epoch, self.start = epoch, start

    def global_order(self) -> torch.Tensor:
        """All ranks' indices of the current epoch, int64, padded when ``pad``."""
        n = self.num_samples
        if self.shuffle:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        if self.pad and n % self.world_size:
            extra = self.world_size - n % self.world_size
            order = torch.cat([order, order.repeat(-(-extra // n))[:extra]])
        return order

    def rank_order(self) -> torch.Tensor:
        """This rank's indices of the current epoch, before `start` is skipped."""
        return self.global_order()[self.rank::self.world_size]

    def sample_seeds(self) -> torch.Tensor:
        """This rank's per-sample augmentation seeds, aligned with `rank_order`."""
        total = self.rank_length * self.world_size if self.pad else self.num_samples
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 1))
        seeds = torch.randint(0, 2**62, (total,), generator=generator)
        return seeds[self.rank::self.world_size]

    def __iter__(self) -> Iterator:
        order = self.rank_order()[self.start:].tolist()
        if not self.with_seeds:
            return iter(order)
        return zip(order, self.sample_seeds()[self.start:].tolist(), strict=True)

    def __len__(self) -> int:
        return self.rank_length - self.start


class _Seeded(Dataset):
    """Serve ``dataset[index]`` for keys ``(index, seed)``, running it under ``seed``.

    torch's default CPU generator (the one every v2 random transform draws from) is seeded
    per sample and restored afterwards, so with ``workers=0`` the caller's random state is
    left untouched. Only that generator is touched: ``torch.manual_seed`` would also seed
    every accelerator and costs 50 times more per sample.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker with base_seed + worker_id (base_seed drawn from the loader's
    # generator, itself seeded from (seed, epoch)); numpy is not seeded by torch, so do it here
    # for user transforms that draw from numpy.
    np.random.seed(torch.initial_seed() % 2**32)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    start_batch: int = 0,
    workers: int = 4,
    distributed: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    prefetch_factor: int = 4,
    drop_last: bool | None = None,
) -> DataLoader:
    """A DataLoader over a map-style dataset (e.g. `FolderDataset`) with exact resume.

    Order: a `ResumableSampler` (shuffled per epoch in training, in order otherwise),
    starting at batch ``start_batch`` of ``epoch``. Randomness: sample i of the epoch runs its
    transform under its own seed (see `ResumableSampler`), so a batch is a pure function of
    (seed, epoch, batch index) for any ``workers`` and resume point; worker processes are
    also seeded from (seed, epoch, worker id) through the loader's generator.

    Args:
        dataset: items ``(image, label)``; transforms must draw from torch's generator.
        batch_size: images per batch (per rank when distributed).
        train: shuffle and drop the last incomplete batch (True), or keep order and every
            image (False).
        seed, epoch, start_batch: where the order starts; ``start_batch`` counts this
            loader's batches, so a resumed run passes the number of steps done in the epoch.
        workers: decoding processes (0: decode in the calling process).
        distributed: slice the epoch per rank; ``rank`` / ``world_size`` default to those of
            the initialized torch.distributed process group.
        prefetch_factor: batches loaded ahead per worker.
        drop_last: override the default (= ``train``).

    Pinned memory is used when CUDA is available; workers persist across epochs. To go on to
    the next epoch with the same loader (and workers), call `set_loader_epoch`.
    """
    if batch_size < 1 or workers < 0:
        raise ValueError(f"need batch_size >= 1 and workers >= 0, got {batch_size}, {workers}")
    if distributed:
        if rank is None or world_size is None:
            if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
                raise ValueError("distributed=True needs rank and world_size, or an "
                                 "initialized torch.distributed process group")
            rank = torch.distributed.get_rank() if rank is None else rank
            world_size = torch.distributed.get_world_size() if world_size is None else world_size
    else:
        rank, world_size = 0, 1
    sampler = ResumableSampler(len(dataset), shuffle=train, seed=seed, epoch=epoch,
                               start=0, rank=rank, world_size=world_size, with_seeds=True)
    loader = DataLoader(
        _Seeded(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=train if drop_last is None else drop_last,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch_factor if workers > 0 else None,
        worker_init_fn=_seed_worker if workers > 0 else None,
        generator=torch.Generator().manual_seed(mix_seed(seed, epoch, 2)),
    )
    set_loader_epoch(loader, epoch, start_batch)
    return loader


def set_loader_epoch(loader: DataLoader, epoch: int, start_batch: int = 0) -> None:
    """Point a `make_loader` loader at batch ``start_batch`` of ``epoch`` (call before
    iterating it again); the persistent workers are reused."""
    sampler = loader.sampler
    if not isinstance(sampler, ResumableSampler):
        raise TypeError("set_loader_epoch needs a loader built by make_loader")
    batches = (sampler.rank_length // loader.batch_size if loader.drop_last
               else -(-sampler.rank_length // loader.batch_size))
    if not 0 <= start_batch <= batches:
        raise ValueError(f"start_batch must be in 0..{batches} (batches per epoch), got "
                         f"{start_batch}")
    sampler.set_epoch(epoch, min(start_batch * loader.batch_size, sampler.rank_length))
