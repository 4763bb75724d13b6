import torch


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Re-draw the model's weights deterministically, and jitter the constant-initialised ones
    (norm scales = 1, LayerNorm bias = 0) so that no term of the forward is trivially identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2 and p.shape[-1] > 1 and p.numel() != p.shape[-1]:
                fan_in = p[0].numel()
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / fan_in**0.5)
            else:
                p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    return ((a.double() - b.double()).norm() / b.double().norm()).item()
