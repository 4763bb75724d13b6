"""JiT hyper-parameters (§7) and the named presets, each citing its source."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from ..runtime.presets import lookup_preset
from .anchors import VARIANCE_PADDINGS

MICRO_FLOW_MODES = ("exact", "blend")
TIE_ORDERS = ("index", "stored")


# ----------------------------------------------------------------------------------------------------------------------
# Configuration and presets
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JiTConfig:
    """Everything JiT needs besides the model (§7).

    ``token_fractions[s]`` is the active-token fraction of stage s (sparse -> dense, ending at 1.0);
    ``stage_ends[s]`` the end of stage s as a fraction of the step index (ending at 1.0): stage s runs steps
    [int(T * stage_ends[s-1]), int(T * stage_ends[s])). ``beta_alpha``/``beta_beta`` shape the Beta timestep warp;
    the lifter blur is sigma = clip(blur_c / sqrt(density), *blur_sigma_range). ``micro_flow`` is "exact" (paper)
    or "blend" (code: weight 1 / ``micro_flow_steps``). ``variance_window`` is the ITA window (frames, rows, cols),
    over in-grid frames (so it is 3 x 3 on images); ``variance_padding`` is what it holds beyond the grid's rows and
    columns: "valid" nothing (the paper's local variance) or "zeros" (the code's zero-padded ``avg_pool2d``; see
    ``anchors.local_variance``). ``tie_order`` picks among equally near anchors in the lifter's nearest-anchor
    fill: "index" the lowest token index, "stored" the first in the order the anchors were added (the code's
    ``argmin`` over its list). ``seed`` seeds the anchor top-up and the DMF noise.
    """

    num_steps: int
    token_fractions: tuple[float, ...]
    stage_ends: tuple[float, ...] = (0.4, 0.65, 1.0)
    beta_alpha: float = 1.4
    beta_beta: float = 0.42
    blur_c: float = 0.4
    blur_sigma_range: tuple[float, float] = (1.0, 10.0)
    micro_flow: str = "exact"
    micro_flow_steps: int = 3
    variance_window: tuple[int, int, int] = (3, 3, 3)
    variance_padding: str = "valid"
    tie_order: str = "index"
    seed: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        fr, ends = tuple(self.token_fractions), tuple(self.stage_ends)
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if len(fr) != len(ends) or not fr:
            raise ValueError(f"one stage end per token fraction: got {len(fr)} fractions and {len(ends)} ends")
        if not all(0 < a <= b for a, b in zip(fr, fr[1:] + (1.0,))) or fr[-1] != 1.0:
            raise ValueError(f"token_fractions {fr} must be in (0, 1], non-decreasing (nested sets), ending at 1.0")
        if not all(0 < a < b for a, b in zip(ends, ends[1:])) or ends[-1] != 1.0:
            raise ValueError(f"stage_ends {ends} must increase strictly in (0, 1] and end at 1.0")
        if self.micro_flow not in MICRO_FLOW_MODES:
            raise ValueError(f"micro_flow must be one of {MICRO_FLOW_MODES}, got {self.micro_flow!r}")
        if self.micro_flow_steps < 1:
            raise ValueError(f"micro_flow_steps must be >= 1, got {self.micro_flow_steps}")
        if any(w < 1 or w % 2 == 0 for w in self.variance_window):
            raise ValueError(f"variance_window {self.variance_window} must be odd and positive")
        if self.variance_padding not in VARIANCE_PADDINGS:
            raise ValueError(f"variance_padding must be one of {VARIANCE_PADDINGS}, got {self.variance_padding!r}")
        if self.tie_order not in TIE_ORDERS:
            raise ValueError(f"tie_order must be one of {TIE_ORDERS}, got {self.tie_order!r}")
        if not (self.beta_alpha > 0 and self.beta_beta > 0):
            raise ValueError("the Beta warp needs beta_alpha > 0 and beta_beta > 0")

    def replace(self, **changes) -> "JiTConfig":
        return dataclasses.replace(self, **changes)


_PAPER = ("JiT paper as reported (notes §3.3: 18 NFE 35%->62%->100%, 11 NFE 32%->60%->100%; Beta(1.4, 0.42) from "
          "the README; exact DMF hitting ODE, §4.1; ITA as the local variance of in-grid windows; nearest-anchor "
          "ties to the lowest index); stage ends, blur c and ITA window from the official code "
          "Wenhao-Sun77/Just-in-Time@818ed8d flux/pipeline_flux_JiT.py set_params (notes §7)")
_CODE = ("official code Wenhao-Sun77/Just-in-Time@818ed8d flux/pipeline_flux_JiT.py set_params preset {name} "
         "(notes §7: beta 0.425, microflow_relax_steps 3 as a single 1/3 blend, §4.2); _compute_importance_map's "
         "zero-padded avg_pool2d and _irregular_interpolation's argmin over the stored anchor order")
_CODE_FIELDS = dict(beta_beta=0.425, micro_flow="blend", variance_padding="zeros", tie_order="stored")

PRESETS: Mapping[str, JiTConfig] = MappingProxyType({
    "jit-4x": JiTConfig(18, (0.35, 0.62, 1.0), source=_PAPER),
    "jit-7x": JiTConfig(11, (0.32, 0.60, 1.0), source=_PAPER),
    "jit-4x-code": JiTConfig(18, (0.35, 0.62, 1.0), **_CODE_FIELDS, source=_CODE.format(name="default_4x")),
    "jit-7x-code": JiTConfig(11, (0.32, 0.60, 1.0), **_CODE_FIELDS, source=_CODE.format(name="default_7x")),
})  # read-only: no module-level mutable state


def get_jit_preset(name: str | JiTConfig) -> JiTConfig:
    return lookup_preset(name, PRESETS, JiTConfig, "JiT")
