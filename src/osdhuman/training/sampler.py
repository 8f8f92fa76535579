"""Data order that can be resumed at any position, on any number of processes.

The order is a pure function of (seed, epoch): epoch ``e`` visits the dataset in the
permutation drawn by ``torch.Generator().manual_seed(seed + e)``. The global position (how
many samples all processes together have consumed) is the only data state a checkpoint
needs; resuming rebuilds the sampler at that position without reading a single image.
Process ``rank`` of ``world`` takes every ``world``-th sample of each global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["ResumableBatchSampler", "epoch_permutation"]


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """(n,) indices of epoch ``epoch``."""
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g)


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Infinite batches of ``batch_size`` (dataset index, global position) pairs for this
    process, starting at global ``position``. The position names the sample uniquely across
    epochs, so per-sample randomness (crop, flip, degradation) can be seeded from it.

    Global batch = ``batch_size * world``; an epoch ends where the permutation ends and the
    next one continues (a batch may span two epochs, so no sample is dropped or repeated).
    """

    def __init__(self, n: int, batch_size: int, seed: int, position: int = 0, rank: int = 0, world: int = 1, shuffle: bool = True):
        if n <= 0:
            raise ValueError("the training set is empty")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.position, self.rank, self.world, self.shuffle = position, rank, world, shuffle

    def global_index(self, pos: int) -> tuple[int, int]:
        """(dataset index, epoch) of global sample ``pos``."""
        epoch, i = divmod(pos, self.n)
        return int(epoch_permutation(self.n, self.seed, epoch, self.shuffle)[i]), epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        pos = self.position
        cache: dict[int, torch.Tensor] = {}
        gb = self.batch_size * self.world
        while True:
            batch = []
            for j in range(self.rank, gb, self.world):
                epoch, i = divmod(pos + j, self.n)
                if epoch not in cache:
                    cache.clear()
                    cache[epoch] = epoch_permutation(self.n, self.seed, epoch, self.shuffle)
                batch.append((int(cache[epoch][i]), pos + j))
            pos += gb
            yield batch

    def __len__(self) -> int:  # infinite; DataLoader only needs it for len()
        return 2**31 - 1
