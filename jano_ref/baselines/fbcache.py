"""First-block cache (FBCache; ParaAttention, diffusers ``FirstBlockCacheConfig``): skip every block after the
first when the first block's residual barely changed.

Each step runs block 0 and takes its residual r = block0(x) - x. If the relative L1 change of r against the r of
the last *computed* step is below ``threshold``, the other blocks are skipped and their summed residual from that
computed step (the "tail") is added instead. Comparing against the last computed step, not the last step, is
ParaAttention's rule: slow drift accumulates until it forces a recompute. The change is measured over the whole
stream (Flux: text and image rows; Wan: video tokens). ``threshold=0`` never skips.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .common import StackSkipHooks, relative_l1, sample_with_hooks


@dataclass(frozen=True)
class FBCacheConfig:
    threshold: float  # skip while relative_l1(r, r_last_computed) < threshold
    source: str = ""


PRESETS: dict[str, FBCacheConfig] = {
    "fbcache-0.05": FBCacheConfig(0.05, "diffusers FirstBlockCacheConfig default threshold"),
    "fbcache-0.08": FBCacheConfig(0.08, "ParaAttention FLUX example, residual_diff_threshold=0.08"),
    "fbcache-0.12": FBCacheConfig(0.12, "ParaAttention FLUX table, the largest threshold it reports"),
}
KNOB = "threshold"
SWEEP = (0.02, 0.05, 0.08, 0.12, 0.2, 0.3, 0.5)


class FBCacheHooks(StackSkipHooks):
    first_skipped = 1  # block 0 always runs: its residual is the signal

    def __init__(self, costs, config: FBCacheConfig) -> None:
        super().__init__(costs)
        self.config = config
        self.reference: Tensor | None = None  # first-block residual of the last computed step

    def block(self, layer, x, run, modulated):
        if layer > 0:
            return self.skip_or_run(layer, x, run, modulated)
        out = super().block(layer, x, run, modulated)
        residual = self.keep(out - x)
        self.skipping = (self.reusable and self.reference is not None and self.residual is not None
                         and relative_l1(residual, self.reference) < self.config.threshold)
        if not self.skipping:
            self.reference = residual
        return out


def sample_fbcache(field, x: Tensor, sigmas: Tensor, config: FBCacheConfig, *, callback=None):
    """Euler sampling with a first-block cache per guidance branch; returns (tokens, BaselineReport)."""
    costs = field.block_costs()
    return sample_with_hooks(field, x, sigmas, lambda: FBCacheHooks(costs, config), method="fbcache", config=config,
                             callback=callback, describe=lambda h: "skip" if h.skipping else "compute")
