"""Special functions the project needs without scipy: the regularised incomplete beta function, behind JiT's Beta
timestep warp (its inverse CDF) and the Student-t p-value of the §3 study."""

from __future__ import annotations

import math
from typing import Iterator

# Continued-fraction controls: relative step below which the fraction has converged, the stand-in for an exact zero
# in Lentz's method (Numerical Recipes' FPMIN), and an iteration cap (the fraction needs O(sqrt(max(a, b))) terms).
_CF_EPS = 1e-15
_CF_TINY = 1e-300
_CF_MAX_TERMS = 10_000


def regularized_incomplete_beta(x: float, a: float, b: float, *, complement: float | None = None) -> float:
    """I_x(a, b) = B(x; a, b) / B(a, b) = (1 / B(a, b)) * integral_0^x u^(a-1) (1 - u)^(b-1) du, for a, b > 0.

    Evaluated from the continued fraction of DLMF 8.17.22 (Numerical Recipes 3rd ed. §6.4),

        I_x(a, b) = x^a (1 - x)^b / (a B(a, b)) * 1 / (1 + d_1 / (1 + d_2 / (1 + ...))),
        d_{2m}   =  m (b - m) x / ((a + 2m - 1)(a + 2m)),
        d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)),

    with the modified Lentz method (``_lentz``). The fraction converges fast for x < (a + 1) / (a + b + 2); above
    that, the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) is used instead. ``complement`` is 1 - x when the caller can
    form it without cancellation (the Student-t p-value can), so that tiny tails keep their relative precision.
    """
    if not (a > 0 and b > 0):
        raise ValueError(f"the incomplete beta function needs a > 0 and b > 0, got a = {a}, b = {b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    return _betainc(a, b, x, 1.0 - x if complement is None else complement)


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """I_x(a, b) given x and y = 1 - x separately, so that callers can supply y without cancellation."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc_fraction(b, a, y, x)
    return _betainc_fraction(a, b, x, y)


def _betainc_fraction(a: float, b: float, x: float, y: float) -> float:
    """DLMF 8.17.22 evaluated directly (front factor in logs, so it neither under- nor overflows)."""
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    log_front = a * math.log(x) + b * math.log(y) - math.log(a) - log_beta

    def numerators() -> Iterator[float]:
        yield 1.0  # 1 / (1 + d_1 / (1 + ...)): the first partial numerator is 1, the later ones are d_1, d_2, ...
        j = 1
        while True:
            m = j // 2
            if j % 2 == 0:
                yield m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
            else:
                yield -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
            j += 1

    return math.exp(log_front) * _lentz(numerators())


def _lentz(numerators: Iterator[float]) -> float:
    """Value of a_1 / (1 + a_2 / (1 + a_3 / (1 + ...))) (all partial denominators 1) by the modified Lentz method.

    Lentz tracks C_j = A_j / A_{j-1} and D_j = B_{j-1} / B_j for the convergents f_j = A_j / B_j, so that
    f_j = f_{j-1} C_j D_j is updated front to back without re-evaluating the fraction; the modification (Thompson &
    Barnett) replaces a zero C_j or 1 / D_j by a tiny number so the recurrence never divides by zero.
    """
    f = _CF_TINY  # b_0 = 0 is replaced by tiny
    c, d = f, 0.0
    for _, a_j in zip(range(_CF_MAX_TERMS), numerators):
        d = 1.0 + a_j * d
        d = 1.0 / (d if d != 0.0 else _CF_TINY)
        c = 1.0 + a_j / c
        c = c if c != 0.0 else _CF_TINY
        delta = c * d
        f *= delta
        if abs(delta - 1.0) < _CF_EPS:
            return f
    raise RuntimeError(
        f"the incomplete-beta continued fraction did not converge in {_CF_MAX_TERMS} terms; this happens only for "
        "extreme shape parameters (sample sizes beyond ~1e8)"
    )
