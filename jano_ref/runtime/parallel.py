"""One generation over several processes with ``torch.distributed``, launched by ``torchrun`` (gloo on CPU, NCCL
on GPU).

    torchrun --nproc-per-node 2 -m jano_ref generate "PROMPT" --model tiny-wan --parallel cfg
    torchrun --nproc-per-node 2 -m jano_ref generate "PROMPT" --model tiny-wan --parallel seq

Both wrappers are velocity fields (and layouts) themselves, so every sampler runs them unchanged; every rank runs
the same sampler on the same latent and gets the same velocity each step, so the ranks never drift apart.

**CFG-parallel** (``CFGParallel``, 2 ranks). Rank 0 runs the conditional branch and rank 1 the unconditional one,
each with its own per-branch caches (the field reports one branch, so the sampler builds caches for that branch
only). Each step they all-gather the branch output [B, n, C] and both apply the single-process ``guidance_mix``.
Each branch runs the same kernels on the same inputs as in one process, so the result is the single-process one
bit for bit (tested on CPU; there, tiny-wan's results did not depend on the thread count either).

**Sequence-parallel** (``SequenceParallel``, P ranks; Ulysses: Jacobs et al. 2023, "DeepSpeed Ulysses"). The
video / image tokens are cut into P contiguous shards; rank r computes the tokens of shard r that the sampler
asks for (Jano's computed subset differs per rank) and keeps the KV cache of shard r only (``token_shard`` tells
the sampler which tokens to cache). Everything but self-attention is per token, so it runs on the shard alone.
Self-attention (``UlyssesAttention``, given to the model as its ``attention_op``) trades heads for sequence: an
all-to-all turns each rank's [B, H, n_r, d] queries and [B, H, k_r, d] keys/values (fresh + cached, after RoPE)
into [B, H/P, sum n, d] and [B, H/P, sum k, d], attention runs locally over every key, and a second all-to-all
brings each rank its own queries' output with all heads. Shards differ in length (Jano's subsets, a sequence that
P does not divide, Flux text on rank 0): each attention all-gathers the ranks' (queries, keys) counts, 16 bytes a
rank, and the all-to-alls use those variable split sizes; no padding, no masks. Keys arrive grouped by rank
instead of in the one-process order; attention does not depend on key order, so outputs agree to rounding
(the tests check 1e-5 relative). Flux's text tokens belong to rank 0 (the other ranks run with an empty text
sequence: text is computed once and its keys cross the wire once); Wan's text is cross-attention context,
replicated on every rank (no traffic). At the end of each step the computed rows are all-gathered (padded to
the longest shard) so every rank holds the whole velocity. Because each rank owns its tokens' cache, cached keys
and values cross the all-to-all every step: Jano saves compute here, not traffic (caching after the all-to-all,
each rank's head group of every token, would save both; not done, it would tie the cache to the attention op).

What each rank holds: the whole model, the whole latent [B, L, C] and its velocity (replicated; small next to
activations), its own shard's activations, and the cache of its shard (CFG: of its branch).
What crosses the wire is counted by ``WireMeter``: payload bytes a rank sends to other ranks per field call
(one sampler step), by kind; the bytes the backend puts on the network may differ with its algorithm.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor

from models.layers import Hooks, KVCache, attention

from .fields import FluxVelocity
from .sampling import guidance_mix

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class PeerFailure(RuntimeError):
    """A collective failed: another rank raised, was killed, or did not answer within the timeout."""


class SettingsMismatch(ValueError):
    """The ranks were started with different settings."""


@dataclass(frozen=True)
class Group:
    """This process's place in the job: its rank, the number of ranks and the device it computes on."""

    rank: int
    world_size: int
    device: torch.device


def missing_torchrun_env() -> list[str]:
    """The torchrun variables this process lacks (empty under torchrun)."""
    return [k for k in TORCHRUN_ENV if k not in os.environ]


@contextmanager
def distributed(device: str = "cpu", *, timeout: timedelta = timedelta(minutes=10)) -> Iterator[Group]:
    """Join the job torchrun started (its ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``)
    and leave it on exit. NCCL when ``device`` is CUDA (each rank takes ``cuda:LOCAL_RANK``), else gloo. A
    collective that waits longer than ``timeout`` fails instead of hanging."""
    missing = missing_torchrun_env()
    if missing:
        raise RuntimeError(
            f"no torch.distributed job to join: {', '.join(missing)} not set. Launch with torchrun, for example "
            "torchrun --nproc-per-node 2 -m jano_ref generate \"PROMPT\" --parallel cfg"
        )
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timeout)
    try:
        yield Group(dist.get_rank(), dist.get_world_size(), dev)
    finally:
        dist.destroy_process_group()


def _collective(what: str, fn: Callable[[], Any]) -> Any:
    """Run a collective; turn a backend error (a peer died or timed out) into a ``PeerFailure`` that says so."""
    try:
        return fn()
    except RuntimeError as error:  # gloo and NCCL raise DistBackendError / RuntimeError subclasses
        raise PeerFailure(f"{what} failed: another rank raised, was killed or timed out (its own output says why; "
                          f"the backend said: {error})") from error


def check_same_settings(settings: dict[str, Any], group: Group) -> None:
    """Refuse to start when the ranks' settings differ: every rank all-gathers a hash of its settings (as JSON)
    and, on a mismatch, the settings themselves, and raises ``SettingsMismatch`` naming the keys that differ."""
    text = json.dumps(settings, sort_keys=True, default=str)
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)
    mine = torch.tensor([digest], dtype=torch.int64, device=group.device)
    everyone = [torch.empty_like(mine) for _ in range(group.world_size)]
    _collective("the settings check", lambda: dist.all_gather(everyone, mine))
    if all(torch.equal(d, everyone[0]) for d in everyone):
        return
    texts: list[Any] = [None] * group.world_size
    _collective("the settings check", lambda: dist.all_gather_object(texts, text))
    first = json.loads(texts[0])
    lines = []
    for rank, other in enumerate(texts[1:], start=1):
        theirs = json.loads(other)
        for key in sorted(set(first) | set(theirs)):
            if first.get(key) != theirs.get(key):
                lines.append(f"{key}: rank 0 has {first.get(key)!r}, rank {rank} has {theirs.get(key)!r}")
    raise SettingsMismatch("the ranks were started with different settings (" + "; ".join(lines)
                           + "); give every rank the same command line")


@dataclass
class WireMeter:
    """Payload bytes this rank sends to other ranks, one entry per field call (one sampler step), by kind."""

    steps: list[Counter] = field(default_factory=list)

    def new_step(self) -> None:
        self.steps.append(Counter())

    def add(self, kind: str, nbytes: int) -> None:
        self.steps[-1][kind] += int(nbytes)

    def reset(self) -> None:
        self.steps.clear()

    def per_step(self) -> dict[str, float]:
        """Mean bytes per step by kind, plus ``total``; empty before the first step."""
        if not self.steps:
            return {}
        kinds = sorted({k for s in self.steps for k in s})
        out = {k: sum(s[k] for s in self.steps) / len(self.steps) for k in kinds}
        out["total"] = sum(out.values())
        return out


def gather_per_step(meter: WireMeter, group: Group) -> list[dict[str, float]]:
    """Every rank's ``meter.per_step()``, in rank order (for rank 0's report)."""
    out: list[Any] = [None] * group.world_size
    _collective("gathering the wire counts", lambda: dist.all_gather_object(out, meter.per_step()))
    return out


class _FieldView:
    """What a sampler reads from a layout, passed through to the wrapped field."""

    def __init__(self, field_, group: Group) -> None:
        self.field, self.group, self.meter = field_, group, WireMeter()

    @property
    def token_grid(self) -> tuple[int, int, int]:
        return self.field.token_grid

    @property
    def patch(self) -> tuple[int, int, int]:
        return self.field.patch

    @property
    def guide_scale(self) -> float:
        return self.field.guide_scale

    def token_cost(self):
        return self.field.token_cost()

    def block_costs(self, computed: int | None = None):
        return self.field.block_costs(computed)

    def to_tokens(self, latent: Tensor) -> Tensor:
        return self.field.to_tokens(latent)

    def to_latent(self, tokens: Tensor) -> Tensor:
        return self.field.to_latent(tokens)

    def _all_gather(self, what: str, t: Tensor) -> list[Tensor]:
        t = t.contiguous()
        out = [torch.empty_like(t) for _ in range(self.group.world_size)]
        _collective(f"the {what} exchange of step {len(self.meter.steps)}", lambda: dist.all_gather(out, t))
        self.meter.add(what, t.numel() * t.element_size() * (self.group.world_size - 1))
        return out


class CFGParallel(_FieldView):
    """A guided field (branches cond and uncond) on 2 ranks: rank 0 runs cond, rank 1 uncond (module docstring)."""

    def __init__(self, field_, group: Group) -> None:
        if tuple(field_.branches) != ("cond", "uncond"):
            raise ValueError(f"CFG-parallel runs the two guidance branches on two ranks; this field has branches "
                             f"{tuple(field_.branches)}. Use a guided model (guide scale and an empty prompt) or "
                             "--parallel seq")
        if group.world_size != 2:
            raise ValueError(f"CFG-parallel needs exactly 2 ranks (one per guidance branch), got {group.world_size}; "
                             "launch with torchrun --nproc-per-node 2")
        super().__init__(field_, group)
        self.branch = field_.branches[group.rank]

    @property
    def branches(self) -> tuple[str, ...]:
        """Only this rank's branch: the sampler keeps caches and hooks for it alone."""
        return (self.branch,)

    def __call__(
        self, x: Tensor, sigma: Tensor, *, token_index: Tensor | None = None,
        kv_caches: dict[str, KVCache] | None = None, hooks: dict[str, Hooks] | None = None,
    ) -> Tensor:
        self.meter.new_step()
        mine = self.field.branch_velocity(
            self.branch, x, sigma, token_index=token_index,
            kv_cache=None if kv_caches is None else kv_caches[self.branch],
            hooks=None if hooks is None else hooks[self.branch],
        )
        v_cond, v_uncond = self._all_gather("velocity", mine)
        return guidance_mix(v_cond, v_uncond, self.field.guide_scale).to(x.dtype)


class UlyssesAttention:
    """``models.layers.AttentionOp`` over the whole sequence when each rank holds a shard of it (module docstring).

    q [B, H, n_r, d] and k, v [B, H, k_r, d] hold this rank's tokens; returns this rank's rows [B, n_r, H*d]."""

    def __init__(self, group: Group, meter: WireMeter) -> None:
        self.group, self.meter = group, meter

    def __call__(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        p = self.group.world_size
        if q.shape[1] % p:
            raise ValueError(f"sequence parallelism splits the {q.shape[1]} attention heads over {p} ranks; use a "
                             "number of ranks that divides the head count")
        counts = torch.tensor([q.shape[2], k.shape[2]], dtype=torch.int64, device=q.device)
        everyone = [torch.empty_like(counts) for _ in range(p)]
        _collective("the attention length exchange", lambda: dist.all_gather(everyone, counts))
        self.meter.add("lengths", counts.numel() * counts.element_size() * (p - 1))
        q_lens = [int(c[0]) for c in everyone]
        k_lens = [int(c[1]) for c in everyone]
        out = attention(self._heads_to_sequence(q, q_lens), self._heads_to_sequence(k, k_lens),
                        self._heads_to_sequence(v, k_lens))  # [B, sum n, H/P * d]
        return self._sequence_to_heads(out, q_lens)

    def _heads_to_sequence(self, t: Tensor, lens: list[int]) -> Tensor:
        """[B, H, n_r, d] on each rank -> [B, H/P, sum n, d]: rank j gets head group j of every rank's tokens."""
        p, (b, h, _, d) = self.group.world_size, t.shape
        send = t.unflatten(1, (p, h // p)).movedim(1, 0).contiguous()  # [P, B, H/P, n_r, d]: group j for rank j
        chunk = send[0].numel()
        sizes = [b * (h // p) * n * d for n in lens]
        recv = t.new_empty(sum(sizes))
        self._all_to_all(recv, send.flatten(), sizes, [chunk] * p)
        parts = [part.view(b, h // p, n, d) for part, n in zip(recv.split(sizes), lens)]
        return torch.cat(parts, dim=2)

    def _sequence_to_heads(self, out: Tensor, lens: list[int]) -> Tensor:
        """[B, sum n, H/P * d] -> [B, n_r, H * d]: every rank's head groups for this rank's tokens, in head order."""
        p, r = self.group.world_size, self.group.rank
        b, _, width = out.shape
        send = torch.cat([rows.flatten() for rows in out.split(lens, dim=1)])
        sizes = [b * n * width for n in lens]
        recv = out.new_empty(p * sizes[r])
        self._all_to_all(recv, send, [sizes[r]] * p, sizes)
        return recv.view(p, b, lens[r], width).permute(1, 2, 0, 3).reshape(b, lens[r], p * width)

    def _all_to_all(self, recv: Tensor, send: Tensor, recv_sizes: list[int], send_sizes: list[int]) -> None:
        step = len(self.meter.steps)
        _collective(f"the attention all-to-all of step {step}",
                    lambda: dist.all_to_all_single(recv, send, recv_sizes, send_sizes))
        sent = sum(n for j, n in enumerate(send_sizes) if j != self.group.rank)
        self.meter.add("attention", sent * send.element_size())


def _text_on_rank_zero(field_, rank: int):
    """Flux's text tokens belong to rank 0: the other ranks run with an empty text sequence (pooled ``y`` kept)."""
    if not isinstance(field_, FluxVelocity) or rank == 0:
        return field_

    def strip(c):
        return None if c is None else replace(c, txt=c.txt[:, :0])

    return replace(field_, cond=strip(field_.cond), uncond=strip(field_.uncond))


class SequenceParallel(_FieldView):
    """A field whose tokens are split over the ranks, attention by ``UlyssesAttention`` (module docstring)."""

    def __init__(self, field_, group: Group) -> None:
        heads = field_.model.params.num_heads
        if heads % group.world_size:
            raise ValueError(f"sequence parallelism splits the model's {heads} attention heads over the ranks; "
                             f"{group.world_size} ranks do not divide them. Use a divisor of {heads}")
        super().__init__(field_, group)
        n = math.prod(field_.token_grid)
        p = group.world_size
        self.bounds = [(r * n // p, (r + 1) * n // p) for r in range(p)]
        self.local = _text_on_rank_zero(field_, group.rank)
        self.attention = UlyssesAttention(group, self.meter)

    @property
    def branches(self) -> tuple[str, ...]:
        return tuple(self.field.branches)

    @property
    def token_shard(self) -> tuple[int, int]:
        """(start, stop): the tokens this rank computes and caches."""
        return self.bounds[self.group.rank]

    def __call__(
        self, x: Tensor, sigma: Tensor, *, token_index: Tensor | None = None,
        kv_caches: dict[str, KVCache] | None = None, hooks: dict[str, Hooks] | None = None,
    ) -> Tensor:
        if hooks is not None:
            raise ValueError("sequence parallelism does not split the step- and feature-cache hooks; use it with "
                             "full compute or Jano")
        self.meter.new_step()
        index = torch.arange(x.shape[1], device=x.device) if token_index is None else token_index
        owned = [(index >= a) & (index < b) for a, b in self.bounds]
        counts = [int(m.sum()) for m in owned]
        fresh = self.local(x, sigma, token_index=index[owned[self.group.rank]], kv_caches=kv_caches,
                           attention_op=self.attention)
        # every rank needs every computed row: pad to the longest shard, all-gather, drop the padding, and put the
        # rows back in token_index order
        padded = fresh.new_zeros(fresh.shape[0], max(counts), fresh.shape[2])
        padded[:, : fresh.shape[1]] = fresh
        rows = self._all_gather("velocity", padded)
        out = fresh.new_empty(fresh.shape[0], index.numel(), fresh.shape[2])
        out[:, torch.cat([torch.nonzero(m).flatten() for m in owned])] = torch.cat(
            [r[:, :n] for r, n in zip(rows, counts)], dim=1)
        return out


PARALLEL_MODES = {"cfg": CFGParallel, "seq": SequenceParallel}


def parallel_field(field_, mode: str, group: Group):
    """``field_`` split over the job's ranks: ``mode`` "cfg" (``CFGParallel``) or "seq" (``SequenceParallel``)."""
    if mode not in PARALLEL_MODES:
        raise ValueError(f"unknown parallel mode {mode!r}; choose one of {', '.join(PARALLEL_MODES)}")
    return PARALLEL_MODES[mode](field_, group)
