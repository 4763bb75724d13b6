"""Timing and memory measurement shared by ``jano bench``, ``jano generate`` and the micro-benchmarks."""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, Hashable, Mapping, TypeVar

import torch

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class PeakMemory:
    """Extra memory a block of code needed at its peak, in MiB: CUDA allocator peak on GPUs; on CPUs the peak
    resident set size (sampled every millisecond from /proc/self/statm, so Linux only; None elsewhere) above the
    resident size at entry."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mb = device, None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif os.path.exists("/proc/self/statm"):
            self._page = os.sysconf("SC_PAGE_SIZE")
            self._base = self._peak = self._rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._peak = max(self._peak, self._rss())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self.peak_mb = (max(self._peak, self._rss()) - self._base) / 2**20


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings cover it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_runs(run: Callable[[], T], warmup: int, repeats: int, device: torch.device) -> tuple[T, list[float], float | None]:
    """``warmup`` untimed calls (the first one measured by ``PeakMemory``), then ``repeats`` timed ones:
    (last result, [seconds of each timed call], peak extra memory in MiB of the first call)."""
    with PeakMemory(device) as memory:
        result = run()
    for _ in range(warmup - 1):
        run()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = run()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return result, seconds, memory.peak_mb


def interleaved_rounds(runs: Mapping[K, Callable[[], T]], rounds: int, device: torch.device,
                       on_run: Callable[[int], None] | None = None) -> dict[K, tuple[T, list[float]]]:
    """Time each of ``runs`` once per round, ``rounds`` times, in the same order every round, so that a slow stretch of
    the machine lands on all of them alike. Returns {key: (last result, seconds per round)}; ``on_run(k)`` is called
    after each timed call of round k. Warm the runs up first (``timed_runs`` with repeats 0)."""
    out: dict[K, tuple[T, list[float]]] = {}
    seconds: dict[K, list[float]] = {key: [] for key in runs}
    for k in range(rounds):
        for key, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            result = run()
            synchronize(device)
            seconds[key].append(time.perf_counter() - start)
            out[key] = (result, seconds[key])
            if on_run is not None:
                on_run(k)
    return out
