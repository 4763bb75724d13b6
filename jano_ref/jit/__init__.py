"""JiT: "Just-in-Time: Training-Free Spatial Acceleration for Diffusion Transformers" (Sun, Li, Liu; arXiv
2603.10744, CVPR 2026), on our token velocity fields.

Section numbers (§) and equations refer to the project notes ``shared/notes/jit.md``, which reconstruct the paper
from secondary sources and the official code (github.com/Wenhao-Sun77/Just-in-Time @ 818ed8d, "the code").

    schedule   Beta-warped sigmas; stages as fractions of the step index; a token budget per stage     (§3.3)
    anchors    Omega_K = stride-2 lattice + border, topped up to the first budget (seeded)            (§3.1)
    step       DiT on the anchors only (a sparse sequence); lift its velocity to every token           (§2)
               (nearest-anchor fill -> density-scaled Gaussian blur -> exact anchor values), Euler
    transition grow the set by local velocity variance (ITA, §3.2), then move the new tokens onto
               their statistically correct state with the micro-flow (DMF, §4)
    last stage every token is active: a plain step of the full model (Euler, or UniPC: "Solver" below)

Time runs as in ``sampling``: sigma 1 = noise -> 0 = data, v = eps - x0, the paper's t = 1 - sigma.
The paper numbers stages K (sparsest) .. 0 (dense); here stage s is ``config.token_fractions[s]``, 0 = first.

The sparse sequence (verified in ``models``, tested in ``tests/test_jit.py``)
-------------------------------------------------------------------------
``field(x, sigma, token_index=anchors, kv_caches=None)`` gathers the anchor tokens and their true positions
(Flux: ``img[:, token_index]``, ``img_ids[:, token_index]``; Wan: ``tokens[:, token_index]``,
``positions[token_index]``) and, with no KV cache, self-attention runs over those tokens only (plus Flux's text
tokens; Wan's cross-attention to the text is unchanged). So the DiT sees exactly the m_k-token sequence with
its 2-D / 3-D RoPE positions, which is what the code feeds the transformer (gathered hidden states, gathered
``img_ids``). Non-anchor tokens cannot influence the output (Wan's patch embedding is a conv with kernel =
stride = patch, i.e. per token). A KV cache would instead let the anchors attend to stale non-anchor keys:
that is Jano, not JiT.

Solver (this project; the paper and the code use Euler): ``sample_jit(..., solver="unipc")`` runs UniPC
(``runtime.sampling.UniPCSolver``) over the same velocity in every stage, the lifted one in sparse stages, since
within a stage that is one fixed vector field over the whole latent. At a transition the field changes (new anchors,
new lifter) and the micro-flow moves the new tokens outside the solver, so the multistep history is dropped there:
the first step of a stage is first order without corrector (on flow matching first-order UniP is an Euler step),
and the order builds up again. With every token active from the start this is ``sample_unipc`` itself.

Video (tiny-wan, Wan): the paper has no video recipe (HunyuanVideo appears only as a figure, §5.4). Choices:

* initial set: the 2-D lattice + border of every frame (not a 3-D stride-2 lattice, whose 1/8 density is far
  below every preset budget and would leave the set mostly random). Every frame then has anchors at spacing 2.
* nearest-anchor fill: Euclidean distance on (frame, row, column) token coordinates (ties: see below); with
  anchors in every frame this is in-frame except where growth or drops leave a frame region bare.
* blur: per frame, spatial only. The width rule sigma = c / sqrt(rho) measures the spacing of a 2-D anchor set;
  along time the anchors are dense (every frame has them), so no temporal smoothing is needed, and none of a
  4x-compressed latent frame's motion is smeared into its neighbours.
* ITA window: 3 x 3 x 3 (frames x rows x columns), so tokens where the velocity changes between frames (motion)
  rank high, as do spatial edges. Along frames windows hold in-grid frames only: zero frames would make every
  token of the first and last frame look important. For images (one frame) the window is 3 x 3. Beyond the rows
  and columns, ``variance_padding`` applies as for images (below).

Paper vs code (§4.2, §7) -- what this module follows:

* micro-flow: ``"exact"`` (default, the paper's finite-time hitting ODE: new tokens land on the target) or
  ``"blend"`` (the code: one 1/n Euler sub-step of that ODE, n = 3). The ``-code`` presets use the blend.
* randomness: the code's top-up (np.random) and DMF noise (torch.randn) are unseeded; here both come from
  ``torch.Generator``s seeded by ``config.seed``, so a run is reproducible bit for bit.
* Beta warp: the paper/README beta = 0.42 in the ``jit-*`` presets; the code's 0.425 in ``jit-*-code``.
* ITA: the code's min-max normalisation and division by the sum do not change a top-k and are left out; ties
  go to the lowest token index (stable sort).
* ITA at the grid border (``variance_padding``): the code's ``F.avg_pool2d(..., padding=1)`` keeps the default
  ``count_include_pad=True``, so zeros beyond the border enter the window means and a border token scores
  f var + f (1 - f) mean^2 (f = 6/9 on an edge, 4/9 in a corner) instead of its local variance. The paper's
  formula is a local variance, and the padding reads as an artefact: ``"valid"`` (default; ``jit-4x``,
  ``jit-7x``) averages in-grid neighbours, ``"zeros"`` (``jit-*-code``) follows the code. It matters only when
  border tokens are still inactive at a transition: never at the code's 64 x 64 grid, whose lattice + border
  (1213 tokens) fits the first budget (1310 / 1433) and is all anchors; on a 16 x 16 grid (tiny-flux, a tiny-wan
  frame) the pattern (109) exceeds the budget (89), random drops leave border tokens out, and 4 of the 69
  tokens activated at tiny-flux's first jit-4x transition differ (one prompt, measured).
* nearest-anchor ties (``tie_order``): the code takes ``cdist(...).argmin`` over its anchor list in stored order
  (lattice + border ascending, then the top-up as drawn, or a random subset in drawn order when the pattern
  exceeds the budget; then each growth by descending importance), so an equidistant tie goes to the anchor
  stored first. ``"index"`` (default; ``jit-4x``, ``jit-7x``) gives it to the lowest token index, a rule that
  depends on the set only; ``"stored"`` (``jit-*-code``) keeps the stored order (``initial_anchor_order``,
  ``by_importance``). The two differ only in which of several equally near anchors fills a token: at the first
  stage on 64 x 64, 32-73 of 4096 tokens (ties with top-up anchors); where the pattern exceeds the budget the
  stored order is random, and about a third of the tokens take another equidistant anchor (16 x 16: 80-85 of 256).
* blur: the code's reflect-padded Gaussian (7 x 7 at the preset densities) as two small matrix products
  (same numbers up to rounding; a depthwise conv is slow on CPU).
* everything else (NN + blur lifter, blur width rule, lattice + border init with random top-up or drop,
  stage boundaries int(T * r), budgets int(N * rho) (floors guarded against float error: 0.35 * 360 is
  125.99999999999999 in floats), x0 estimate, DMF target, DMF at every transition) follows the code.
"""

from .config import MICRO_FLOW_MODES, PRESETS, JiTConfig, get_jit_preset
from .sampler import JiTReport, sample_jit
from .schedule import beta_sigmas

__all__ = ["MICRO_FLOW_MODES", "PRESETS", "JiTConfig", "JiTReport", "beta_sigmas", "get_jit_preset", "sample_jit"]
