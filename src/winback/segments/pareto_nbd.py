"""Pareto/NBD (purchases while alive, an exponential lifetime), fitted by maximum likelihood.

Unlike BG/NBD, a Pareto/NBD customer can drop out at any moment, also before a repeat purchase, so
a one-time buyer silent for a long time is rated unlikely to be alive (BG/NBD gives every one-timer
P(alive) = 1).

Likelihood (Fader & Hardie 2005, "A Note on Deriving the Pareto/NBD Model and Related Expressions",
eqs. 18-20), for x repeat purchases, the last at t_x, observed up to T:

    L = Γ(r+x) α^r β^s / Γ(r) · [ (α+T)^-(r+x) (β+T)^-s + s·(F(t_x) − F(T)) ],
    F(t) = ∫_t^∞ (α+τ)^-(r+x) (β+τ)^-(s+1) dτ
         = 2F1(r+s+x, s+1; r+s+x+1; (α−β)/(α+t)) / ((r+s+x)(α+t)^(r+s+x))     (α ≥ β)
         = 2F1(r+s+x, r+x; r+s+x+1; (β−α)/(β+t)) / ((r+s+x)(β+t)^(r+s+x))     (α < β)

(the note's A_0 is (r+s+x)·(F(t_x) − F(T))). With M = max(α, β), z = |α−β|/(M+t) in [0, 1) and
e = s+1 (α ≥ β) or r+x (α < β), Euler's integral gives F(t) = (M+t)^-A ∫_0^1 u^(A−1) (1−zu)^-e du
with A = r+s+x. We evaluate that integral by Gauss-Jacobi quadrature for the weight u^(A−1), which
gives, from the same nodes and in log space, the log of the hypergeometric term *and* its exact
derivatives in A, e and z: scipy's `hyp2f1` has no derivatives in its parameters, and a finite
difference through it would cost four extra passes per iteration and lose half the digits. The
integrand's only singularity is at u = 1/z > 1, so the error falls like ρ^(-2n) with
ρ = y + sqrt(y²−1), y = 2/z − 1: 8 nodes give 1e-14 for z ≤ 0.1 (CDNOW at the estimate: z ≈ 0.09);
rows with z close to 1 (one of α, β ≫ the other, small t) or a large exponent (heavy buyers in the
β-form) get more nodes, up to 128 (1e-14 up to z ≈ 0.99 for light buyers; beyond, the error grows
gracefully: 1e-7 at z = 0.999).
`tests/test_pareto_nbd.py` checks the integral against `scipy.special.hyp2f1`.

Every special function depends on x and one of t_x, T only, so it is evaluated once per distinct
(x, t) pair (a million customers have some ten thousand) and gathered per row; rows are the distinct
(x, t_x, T) triples with weights.

P(alive) (note eq. 36), and the conditional expectation (note eq. 41):

    P(alive) = (α+T)^-(r+x) (β+T)^-s / [ (α+T)^-(r+x) (β+T)^-s + s·(F(t_x) − F(T)) ]
    E[Y(t) | x, t_x, T] = (r+x)(β+T) / ((α+T)(s−1)) · [1 − ((β+T)/(β+T+t))^(s−1)] · P(alive)

References: Schmittlein, Morrison & Colombo (1987), Management Science 33(1); Fader, Hardie & Lee
(2005), Marketing Science 24(2), CDNOW 1/10 estimates r=0.553, α=10.578, s=0.606, β=11.669 (weeks).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy.linalg import eigh_tridiagonal
from scipy.special import digamma, gammaln

from winback.segments.models import _maximum_likelihood

__all__ = [
    "ParetoNbdParams",
    "fit_pareto_nbd",
    "pareto_nbd_conditional_expected_purchases",
    "pareto_nbd_expected_purchases",
    "pareto_nbd_log_likelihood",
    "pareto_nbd_p_alive",
]

# ln(1e14): the quadrature's target relative error.
_LOG_TOLERANCE = 32.2
_MIN_NODES, _MAX_NODES = 8, 128
_BATCHED_NODES = 16


@dataclass(frozen=True)
class ParetoNbdParams:
    """Fitted Pareto/NBD parameters: purchase rate ~ Gamma(r, α), dropout rate ~ Gamma(s, β), α and β in `unit`."""

    r: float
    alpha: float
    s: float
    beta: float
    log_likelihood: float = float("nan")
    n_customers: int = 0
    unit: str = "day"

    model: ClassVar[str] = "pareto-nbd"

    def to_dict(self) -> dict:
        """Plain dict, for JSON output."""
        return asdict(self)

    def as_array(self) -> np.ndarray:
        """(r, α, s, β) as a float array."""
        return np.array([self.r, self.alpha, self.s, self.beta], dtype=float)


# ---------------------------------------------------------------------------------------------
# The tail integral F(x, t) by Gauss-Jacobi quadrature


def jacobi_nodes(A: np.ndarray, n: int, *, derivative: bool = False):
    """Gauss-Jacobi nodes (ascending) and weights (summing to 1) on [0, 1] for the weight u^(A−1), one row per A.

    Golub-Welsch: the eigenvalues of the Jacobi matrix of the polynomials orthogonal for
    (1−y)^0 (1+y)^(A−1) on [−1, 1] are the nodes, the squared first components of the (unit)
    eigenvectors the weights. With `derivative`, also d(node)/dA and d(weight)/dA by first-order
    eigen-perturbation (dλ_k = v_kᵀ J' v_k, dv_k = Σ_j≠k v_j (v_jᵀ J' v_k) / (λ_k − λ_j)): the exact
    derivative of the quadrature rule, so the fit's gradient is that of the likelihood it evaluates.
    (The quadrature of ∂/∂A under the integral, ∫ log u · u^(A−1) f du, would not do: log u is
    singular at 0 and the Gauss rule converges slowly on it, 4e-3 off at x = 0 with 8 nodes.)
    Small rules (n <= 16) as one stack of matrices through numpy's eigh, larger ones through LAPACK's
    tridiagonal solver one A at a time, and numpy loops rather than BLAS-3 for the perturbation: on this
    shared 2-core machine, multithreaded BLAS took 20-300 ms for what one thread does in 0.2-15 ms.
    """
    b = np.asarray(A, dtype=float)[:, None] - 1.0  # Jacobi (α, β) = (0, A−1)
    k = np.arange(1, n, dtype=float)[None, :]
    s = 2.0 * k + b
    diag = np.empty((len(b), n))
    diag[:, :1] = b / (b + 2.0)  # k = 0 on its own: 0/0 at A = 1 in the general form
    diag[:, 1:] = b * b / (s * (s + 2.0))
    off = 2.0 * k * (k + b) / (s * np.sqrt(s * s - 1.0))
    if n <= _BATCHED_NODES:
        J = np.zeros((len(b), n, n))
        i = np.arange(n)
        J[:, i, i] = diag
        J[:, i[:-1], i[1:]] = J[:, i[1:], i[:-1]] = off
        y, V = np.linalg.eigh(J)
    else:
        y = np.empty((len(b), n))
        V = np.empty((len(b), n, n))
        for i in range(len(b)):
            y[i], V[i] = eigh_tridiagonal(diag[i], off[i])
    u = (1.0 + y) / 2.0
    w = V[:, 0, :] ** 2
    if not derivative:
        return u, w
    d_diag = np.empty_like(diag)
    d_diag[:, :1] = 2.0 / (b + 2.0) ** 2
    d_diag[:, 1:] = 2.0 * b / (s * (s + 2.0)) - b * b * (2.0 * s + 2.0) / (s * (s + 2.0)) ** 2
    d_off = off * (1.0 / (k + b) - 1.0 / s - s / (s * s - 1.0))
    JV = d_diag[:, :, None] * V  # J' V, J' tridiagonal
    JV[:, :-1] += d_off[:, :, None] * V[:, 1:]
    JV[:, 1:] += d_off[:, :, None] * V[:, :-1]
    B = np.swapaxes(V, 1, 2) @ JV  # Vᵀ J' V
    gap = y[:, None, :] - y[:, :, None]  # gap[j, k] = λ_k − λ_j
    np.einsum("kii->ki", gap)[:] = np.inf
    d_v0 = np.einsum("kj,kjl->kl", V[:, 0, :], B / gap)
    return u, w, np.einsum("kii->ki", B) / 2.0, 2.0 * V[:, 0, :] * d_v0


def _nodes_for(z: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Quadrature nodes needed for relative error ~1e-14 at each (z, e) (a power of two, 8 to 128).

    The pole at u = 1/z alone asks for ln(1e14) / (2 ln ρ) nodes; a large exponent e (the β-form's
    r + x of a heavy buyer) makes f grow fast on the ellipses around [0, 1] as well, and then about
    sqrt(8 e z / (1 − z)) are needed (checked against scipy's hyp2f1 in tests/test_purchase_models.py).
    """
    log_rho = np.arccosh(2.0 / np.maximum(z, 1e-300) - 1.0)  # log(y + sqrt(y² − 1)), y = 2/z − 1
    need = np.maximum(_LOG_TOLERANCE / (2.0 * np.maximum(log_rho, 1e-12)),
                      np.sqrt(8.0 * e * z / np.maximum(1.0 - z, 1e-12))) + 2.0
    exponent = np.ceil(np.log2(np.clip(need, _MIN_NODES, _MAX_NODES)))
    return (2 ** exponent).astype(np.int64)


def log_tail(theta, x: np.ndarray, t: np.ndarray, *, grad: bool = False, x_codes=None):
    """log F(x, t) of the module docstring per (x, t), and with `grad` its derivatives in (r, α, s, β).

    Returns `log_F` (shape (m,)) and, with `grad`, an array of shape (4, m). `x_codes` may pass
    `np.unique(x, return_inverse=True)` when it is reused across calls (the fit).
    """
    r, alpha, s, beta = (float(v) for v in theta)
    x = np.asarray(x, dtype=float)
    t = np.asarray(t, dtype=float)
    ux, ix = x_codes if x_codes is not None else np.unique(x, return_inverse=True)
    A = r + s + x
    alpha_branch = alpha >= beta
    M = alpha if alpha_branch else beta
    z = abs(alpha - beta) / (M + t)
    e = np.full(len(x), s + 1.0) if alpha_branch else r + x
    log_J = np.empty(len(x))
    if grad:
        g_A, g_e, g_z = np.empty(len(x)), np.empty(len(x)), np.empty(len(x))
    # One rule per distinct x (one eigen-decomposition each): as many nodes as its hardest row needs.
    per_x = np.zeros(len(ux), dtype=np.int64)
    np.maximum.at(per_x, ix, _nodes_for(z, e))
    nodes = per_x[ix]
    for n in np.unique(per_x[per_x > 0]):
        rows = np.flatnonzero(nodes == n) if len(nodes) and nodes.min() != nodes.max() else slice(None)
        codes = ix[rows]
        present = np.flatnonzero(per_x == n)
        position = np.empty(len(ux), dtype=np.int64)
        position[present] = np.arange(len(present))
        rule = jacobi_nodes(r + s + ux[present], int(n), derivative=grad)
        u, w = rule[0][position[codes]], rule[1][position[codes]]
        zz, ee = z[rows][:, None], e[rows][:, None]
        log_f = -ee * np.log1p(-zz * u)  # >= 0 and increasing in u: the largest is at the last node
        top = log_f[:, -1:]
        scaled = np.exp(log_f - top)
        f = w * scaled
        s0 = f.sum(axis=1)
        log_J[rows] = top[:, 0] + np.log(s0) - np.log(A[rows])
        if grad:
            du, dw = rule[2][position[codes]], rule[3][position[codes]]
            h = f / (1.0 - zz * u)  # w f'(u) / (e z)
            # d log J / dA through the rule's nodes and weights (and its 1/A); d/de; d/dz.
            g_A[rows] = -1.0 / A[rows] + ((dw * scaled).sum(axis=1) + (ee * zz * h * du).sum(axis=1)) / s0
            g_e[rows] = (f * log_f).sum(axis=1) / (s0 * e[rows])
            g_z[rows] = e[rows] * (h * u).sum(axis=1) / s0
    log_Mt = np.log(M + t)
    log_F = -A * log_Mt + log_J
    if not grad:
        return log_F
    d = np.empty((4, len(x)))
    d[0] = -log_Mt + g_A
    d[2] = -log_Mt + g_A
    if alpha_branch:  # z = (α−β)/(α+t), e = s+1
        d[2] += g_e
        d[1] = -A / (alpha + t) + g_z * (beta + t) / (alpha + t) ** 2
        d[3] = -g_z / (alpha + t)
    else:  # z = (β−α)/(β+t), e = r+x
        d[0] += g_e
        d[3] = -A / (beta + t) + g_z * (alpha + t) / (beta + t) ** 2
        d[1] = -g_z / (beta + t)
    return log_F, d


def distinct_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inverse, distinct a, distinct b) of the pairs (a, b), by hashing (floats welcome)."""
    ca, ua = pd.factorize(np.asarray(a, dtype=float))
    cb, ub = pd.factorize(np.asarray(b, dtype=float))
    inverse, distinct = pd.factorize(ca.astype(np.int64) * max(len(ub), 1) + cb)
    width = max(len(ub), 1)
    return inverse, np.asarray(ua)[distinct // width], np.asarray(ub)[distinct % width]


# ---------------------------------------------------------------------------------------------
# Likelihood


class _Rows:
    """Distinct (x, t_x, T) rows with weights, and the index tables the likelihood gathers through."""

    def __init__(self, x, t_x, T, w):
        n = len(x)
        inverse, self.pair_x, self.pair_t = distinct_pairs(np.r_[x, x], np.r_[t_x, T])
        self.i1, self.i2 = inverse[:n], inverse[n:]
        self.pair_codes = np.unique(self.pair_x, return_inverse=True)
        self.ux, self.ix = np.unique(x, return_inverse=True)
        self.uT, self.iT = np.unique(T, return_inverse=True)
        self.x, self.w = x, w
        self.window = t_x < T  # a dropout between the last purchase and T is possible

    def terms(self, theta, grad: bool):
        """Per row: the constant c, log of the alive term l0, of the dropout term lD; with grad, their pieces."""
        r, alpha, s, beta = theta
        out = log_tail(theta, self.pair_x, self.pair_t, grad=grad, x_codes=self.pair_codes)
        log_F, d_F = out if grad else (out, None)
        log_s = math.log(s)
        l1 = log_s + log_F[self.i1]
        l2 = log_s + log_F[self.i2]
        with np.errstate(divide="ignore", invalid="ignore"):
            lD = np.where(self.window, l1 + np.log1p(-np.exp(np.minimum(l2 - l1, 0.0))), -np.inf)
        ln_aT, ln_bT = np.log(alpha + self.uT), np.log(beta + self.uT)
        rx = r + self.x
        l0 = -rx * ln_aT[self.iT] - s * ln_bT[self.iT]
        c = (gammaln(r + self.ux) - gammaln(r) + r * math.log(alpha) + s * math.log(beta))[self.ix]
        return c, l0, lD, l1, l2, d_F, ln_aT, ln_bT

    def neg_ll_and_grad(self, log_params, ridge, center):
        theta = np.exp(log_params)
        r, alpha, s, beta = theta
        c, l0, lD, l1, l2, d_F, ln_aT, ln_bT = self.terms(theta, grad=True)
        L = np.logaddexp(l0, lD)
        w = self.w
        total = float(np.dot(w, c + L))
        w0 = np.exp(l0 - L)
        e1 = np.exp(l1 - L)
        e2 = np.where(self.window, np.exp(l2 - L), e1)  # t_x = T: the two tails cancel exactly
        wD = np.exp(lD - L)
        iT, i1, i2 = self.iT, self.i1, self.i2
        dc_r = (digamma(r + self.ux) - digamma(r) + math.log(alpha))[self.ix]
        g = np.empty(4)
        g[0] = np.dot(w, dc_r - w0 * ln_aT[iT] + e1 * d_F[0][i1] - e2 * d_F[0][i2])
        g[1] = np.dot(w, r / alpha - w0 * (r + self.x) / (alpha + self.uT)[iT] + e1 * d_F[1][i1] - e2 * d_F[1][i2])
        g[2] = np.dot(w, math.log(beta) - w0 * ln_bT[iT] + wD / s + e1 * d_F[2][i1] - e2 * d_F[2][i2])
        g[3] = np.dot(w, s / beta - w0 * s / (beta + self.uT)[iT] + e1 * d_F[3][i1] - e2 * d_F[3][i2])
        g *= theta  # chain rule for log-parameters
        if ridge:
            diff = log_params - center
            total -= ridge * float(diff @ diff)
            g -= 2.0 * ridge * diff
        if not np.isfinite(total) or not np.isfinite(g).all():
            return 1e300, np.zeros(4)
        return -total, -g


def _theta(params) -> np.ndarray:
    if isinstance(params, ParetoNbdParams):
        return params.as_array()
    return np.asarray(params, dtype=float)


def _arrays(*values):
    return tuple(np.atleast_1d(np.asarray(v, dtype=float)) for v in values)


def _row_log_terms(params, frequency, recency, T):
    x, tx, tt = _arrays(frequency, recency, T)
    rows = _Rows(x, tx, tt, np.ones_like(x))
    c, l0, lD, *_ = rows.terms(_theta(params), grad=False)
    return c, l0, lD


def pareto_nbd_log_likelihood(params, frequency, recency, T, weights=None) -> float:
    """Total Pareto/NBD log-likelihood of (x, t_x, T) rows, each counted `weights` times (note eq. 18)."""
    c, l0, lD = _row_log_terms(params, frequency, recency, T)
    ll = c + np.logaddexp(l0, lD)
    w = np.ones_like(ll) if weights is None else np.asarray(weights, dtype=float)
    return float(np.dot(w, ll))


def pareto_nbd_p_alive(params, frequency, recency, T) -> np.ndarray:
    """P(still alive | x, t_x, T) (note eq. 36): falls with the silence since the last purchase, for x = 0 too."""
    _, l0, lD = _row_log_terms(params, frequency, recency, T)
    return np.exp(l0 - np.logaddexp(l0, lD))


def _growth(s: float, q: np.ndarray) -> np.ndarray:
    """(1 − q^(s−1)) / (s−1), and its limit −log q at s = 1."""
    log_q = np.log(q)
    if abs(s - 1.0) < 1e-9:
        return -log_q
    return -np.expm1((s - 1.0) * log_q) / (s - 1.0)


def pareto_nbd_conditional_expected_purchases(params, t, frequency, recency, T, *, p_alive=None) -> np.ndarray:
    """Expected transactions in the next `t` time units given (x, t_x, T) (note eq. 41).

    `p_alive` may pass `pareto_nbd_p_alive` of the same customers (shared by every horizon).
    """
    r, alpha, s, beta = _theta(params)
    x, tx, tt = _arrays(frequency, recency, T)
    t = np.asarray(t, dtype=float)
    if p_alive is None:
        p_alive = pareto_nbd_p_alive(params, x, tx, tt)
    return (r + x) * (beta + tt) / (alpha + tt) * _growth(s, (beta + tt) / (beta + tt + t)) * p_alive


def pareto_nbd_expected_purchases(params, t) -> np.ndarray:
    """Expected transactions of a new customer in `t` time units after the first purchase (note eq. 27)."""
    r, alpha, s, beta = _theta(params)
    t = np.asarray(t, dtype=float)
    return r * beta / alpha * _growth(s, beta / (beta + t))


# ---------------------------------------------------------------------------------------------
# Fit


def fit_pareto_nbd(
    frequency,
    recency,
    T,
    weights=None,
    *,
    unit: str = "day",
    ridge: float = 0.0,
    initial: tuple[float, float, float, float] | None = None,
) -> ParetoNbdParams:
    """Fit Pareto/NBD by maximum likelihood (BFGS on log-parameters, analytic gradient).

    Arguments as `fit_bgnbd`: x, t_x, T in one time unit; identical rows are aggregated first;
    `ridge` > 0 adds a weak Gaussian prior on the log-parameters around the starting point.
    """
    theta, (x, tx, tt, w), n = _maximum_likelihood(
        _Rows, frequency, recency, T, weights, model="Pareto/NBD", ridge=ridge, initial=initial,
        limits=(12.0, 16.0, 12.0, 16.0), scale_last=True,
    )
    return ParetoNbdParams(*theta, pareto_nbd_log_likelihood(theta, x, tx, tt, w), n, unit)
