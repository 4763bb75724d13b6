"""Where a Jano cache keeps its entries between uses: on the compute device, or offloaded with per-layer prefetch.

An entry is the tuple of tensors one level of one layer caches ((K, V), or one attention-input tensor). With
``OffloadedEntries`` the entries live on a storage device (host memory, pinned when the compute device is a GPU) and
come back one layer at a time: asking for layer l's entries also starts copying layer l+1's, so that copy overlaps
layer l's compute, and the copies are dropped once the attention has read them. The compute device then holds at most
two layers of one branch at a time instead of every layer of every branch. The first layer of each forward has no
layer before it to hide behind and is fetched when asked for.

The official code (notes ``jano-official-code.md`` §10) preallocates one pinned pool per guidance branch sized for the
whole sequence and fetches through fixed staging slots; here entries are ordinary tensors of their real size, and the
CUDA caching allocator and its pinned-host allocator do the pooling.

CUDA ordering, all on one side stream (so a prefetch can never overtake the store it reads):

* store: the side stream waits for the compute stream (the entry has been computed), copies device -> host, and the
  source is marked as used by the side stream (``record_stream``) so its memory is not reused before the copy ran.
  The compute stream goes on only once the previous store's copy is done, so at most two entries wait on the device
  for their copy however slow the copies are;
* fetch: the side stream copies host -> device and records an event; the compute stream waits for that event before
  the attention reads the copy, and the copy is marked as used by the compute stream.

Off CUDA there are no streams: a fetch is a plain ``.to(device)`` (on the CPU, where storage and compute are the same,
it returns the stored tensor), but the same bookkeeping (which layer was prefetched, when it is taken) runs, so CPU
tests exercise it. Not measured on a GPU in this project: the overlap and the memory saving there are by design only.
"""

from __future__ import annotations

import bisect

import torch
from torch import Tensor

Entry = tuple[Tensor, ...]


class DeviceEntries:
    """Entries kept where they were computed (the default)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, int], Entry] = {}

    def put(self, level: str, layer: int, entry: Entry) -> None:
        self.entries[(level, layer)] = entry

    def has(self, level: str, layer: int) -> bool:
        return (level, layer) in self.entries

    def get(self, levels: tuple[str, ...], layer: int) -> list[Entry]:
        return [self.entries[(level, layer)] for level in levels]

    def items(self):
        return self.entries.items()


class OffloadedEntries(DeviceEntries):
    """Entries kept on ``storage`` and brought to ``compute`` one layer ahead of use (module docstring).

    ``fetches`` counts host -> device copies, ``prefetched`` those that were started a layer early and then used."""

    def __init__(self, storage: torch.device, compute: torch.device) -> None:
        super().__init__()
        self.storage, self.compute = torch.device(storage), torch.device(compute)
        on_gpu = self.compute.type == "cuda" and self.storage != self.compute
        self.pin = on_gpu and self.storage.type == "cpu"
        self.stream = torch.cuda.Stream(self.compute) if on_gpu else None
        self.layers: list[int] = []  # stored layers, ascending (= execution order in both models)
        self.ahead: dict[tuple[str, int], tuple[Entry, object]] = {}  # prefetched copies and their ready events
        self.stored = None  # the event of the last device -> host copy
        self.fetches = self.prefetched = 0

    def put(self, level: str, layer: int, entry: Entry) -> None:
        self.ahead.pop((level, layer), None)  # a copy of the previous entry is stale now
        if layer not in self.layers:
            bisect.insort(self.layers, layer)
        self.entries[(level, layer)] = tuple(self._store(t) for t in entry)

    def get(self, levels: tuple[str, ...], layer: int) -> list[Entry]:
        """Layer ``layer``'s entries of ``levels`` on the compute device; starts copying the next layer's."""
        out = [self._take(level, layer) for level in levels]
        i = bisect.bisect_right(self.layers, layer)
        if i < len(self.layers):
            for level in levels:
                key = (level, self.layers[i])
                if key in self.entries and key not in self.ahead:
                    self.ahead[key] = self._fetch(key)
        return out

    def _store(self, t: Tensor) -> Tensor:
        if self.stream is None:
            return t.to(self.storage, copy=True)
        host = torch.empty(t.shape, dtype=t.dtype, device=self.storage, pin_memory=self.pin)
        current = torch.cuda.current_stream(self.compute)
        if self.stored is not None:
            current.wait_event(self.stored)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            host.copy_(t, non_blocking=True)
            self.stored = torch.cuda.Event()
            self.stored.record(self.stream)
        t.record_stream(self.stream)
        return host

    def _fetch(self, key: tuple[str, int]) -> tuple[Entry, object]:
        self.fetches += 1
        if self.stream is None:
            return tuple(t.to(self.compute) for t in self.entries[key]), None
        with torch.cuda.stream(self.stream):
            entry = tuple(t.to(self.compute, non_blocking=True) for t in self.entries[key])
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return entry, ready

    def _take(self, level: str, layer: int) -> Entry:
        key = (level, layer)
        if key in self.ahead:
            entry, ready = self.ahead.pop(key)
            self.prefetched += 1
        else:
            entry, ready = self._fetch(key)
        if ready is not None:
            current = torch.cuda.current_stream(self.compute)
            current.wait_event(ready)
            for t in entry:
                t.record_stream(current)
        return entry


def offload_note(offload: str | None, device: torch.device | str) -> str | None:
    """One line for the user when ``offload`` cannot save anything on ``device`` (None when it can, or is off)."""
    if offload is None or torch.device(offload).type != torch.device(device).type:
        return None
    return (f"--kv-offload {offload}: the model runs on {torch.device(device).type}, where the cache already lives; "
            "offloading changes nothing here (it moves a GPU's cache to host memory)")


def offloads(offload: str | None, device: torch.device | str) -> bool:
    """Whether ``offload`` moves the cache off ``device`` (then only a window of two layers stays on it)."""
    return offload is not None and torch.device(offload).type != torch.device(device).type
