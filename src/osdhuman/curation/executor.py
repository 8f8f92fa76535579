"""The local backend: shards and crop writes on a pool of spawned worker processes.

Each process is made a curation worker once (``worker.init_process``); with one worker the
functions run in this process. At most four tasks per process are in flight, so the memory
of a run over millions of images stays bounded.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from osdhuman.config import to_dict
from osdhuman.curation import records, worker
from osdhuman.curation.config import CurationConfig
from osdhuman.curation.shard import ShardWorker


class LocalExecutor:
    """Runs functions in ``exec.workers`` spawned processes (or in this process when it is 1)."""

    def __init__(self, cfg: CurationConfig, shard_worker: ShardWorker):
        self.cfg = cfg
        self.n = cfg.exec.workers or os.cpu_count() or 1
        self.worker = shard_worker  # used in this process when n == 1
        self.pool: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor | None:
        if self.pool is None and self.n > 1:
            self.pool = ProcessPoolExecutor(self.n, mp_context=mp.get_context("spawn"),
                                            initializer=worker.init_process, initargs=(to_dict(self.cfg),))
        return self.pool

    def _windowed(self, fn: Callable, payloads: Iterable, tags: Iterable) -> Iterator[tuple]:
        """(tag, fn(payload)) as tasks finish, at most 4 per process submitted at a time."""
        pool = self._pool()
        it = iter(zip(tags, payloads))
        running = {}
        for tag, p in it:
            running[pool.submit(fn, p)] = tag
            if len(running) >= 4 * self.n:
                break
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                tag = running.pop(f)
                yield tag, f.result()
                nxt = next(it, None)
                if nxt is not None:
                    running[pool.submit(fn, nxt[1])] = nxt[0]

    def shards(self, jobs: list) -> Iterator[tuple[str, tuple[bytes, bytes, int, int]]]:
        """(shard key, its result bytes) as shards finish."""
        if self._pool() is None:
            for job in jobs:
                yield job.key, worker.run_shard_to_bytes(self.worker, records.read_items(*job.payload()))
            return
        yield from self._windowed(worker.run_shard, (j.payload() for j in jobs), [j.key for j in jobs])

    def map_unordered(self, fn: Callable, payloads: list) -> Iterator:
        if self._pool() is None:
            for p in payloads:
                yield fn(p)
            return
        for _, r in self._windowed(fn, payloads, range(len(payloads))):
            yield r

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
