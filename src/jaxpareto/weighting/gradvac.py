"""GradVac: gradient vaccine (Wang et al., ICLR 2021, "Gradient vaccine: investigating
and improving multi-task optimization in massively multilingual models", Algorithm 1).

Every pair of tasks keeps an exponential moving average ``φ̂_ij`` of the cosine
similarity of their gradients (zero after ``init``). For each task ``i`` the other tasks
``j`` are visited in a random order; with ``φ_ij = cos(g_i^PC, g_j)`` of the (possibly
already modified) gradient of ``i`` and the original gradient of ``j``, whenever
``φ_ij < φ̂_ij`` the target similarity is restored by adding (eq. 3)

    g_i^PC ← g_i^PC + ‖g_i^PC‖ (φ̂_ij √(1 − φ_ij²) − φ_ij √(1 − φ̂_ij²))
                       / (‖g_j‖ √(1 − φ̂_ij²)) · g_j,

and the target moves, ``φ̂_ij ← (1 − β) φ̂_ij + β φ_ij``. The update is
``d = Σ_i g_i^PC``. With ``φ̂ = 0`` this is PCGrad's projection. A small ``eps``
(TorchJD's, default ``1e-8``) is added to the two denominators.

Gramian form (as in TorchJD 0.18's ``GradVacWeighting``): ``g_i^PC = Σ_k A_ik g_k``, so
the inner products and norms are read from ``A C``; the weights are the column sums of
``A``. The targets ``φ̂`` ``[m, m]`` live in the state, with a PRNG key for the orders.

Peers. TorchJD updates ``φ̂_ij`` after every visit (the paper's Algorithm 1);
LibMTL 1.1.5 updates it only when a correction was made (``ema="corrected"``
reproduces that) and has no ``eps``. Both draw the orders from their global RNG.

Properties: permutation invariant in distribution only (exactly with relabelled fixed
orders); the weights are not scale free in general (``eps``), nor linear under task
scaling, nor non-conflicting for ``m ≥ 3``.

Bad input: a non-finite Gramian gives the plain sum ``w = 1`` with
``status = NONFINITE_INPUT`` and leaves ``φ̂`` unchanged; zero gradients are never
corrected towards (their cosine is 0 / eps).
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from jaxpareto._validate import check_gram, working_dtype
from jaxpareto.weighting._field import default_key
from jaxpareto.weighting.base import (
    Weighting,
    check_num_tasks,
    check_state_matches,
    core_fields,
    full_precision,
    pick_status,
    state_from_result,
    weighting_factory,
)
from jaxpareto.weighting.pcgrad import _check_orders, random_orders

__all__ = ["GradVacResult", "GradVacState", "gradvac", "gradvac_weights"]

_EMA = ("always", "corrected")


class GradVacResult(NamedTuple):
    """Result of :func:`gradvac_weights`.

    Attributes:
      weights: ``[m]`` column sums of ``A`` (``d = Gᵀ w = Σ_i g_i^PC``).
      status: int32 ``[]`` ``SUCCESSFUL`` or ``NONFINITE_INPUT``.
      converged: bool ``[]`` True unless the input was non-finite.
      iterations: int32 ``[]`` corrections made.
      phi_hat: ``[m, m]`` the updated targets ``φ̂``.
      coefficients: ``[m, m]`` ``A``.
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    phi_hat: jax.Array
    coefficients: jax.Array


def gradvac_weights(
    gram: jax.Array,
    phi_hat: jax.Array | None = None,
    key: jax.Array | None = None,
    *,
    orders: jax.Array | None = None,
    beta: float = 0.5,
    eps: float = 1e-8,
    ema: str = "always",
) -> GradVacResult:
    """One GradVac step from the Gramian and the targets ``φ̂`` (default zeros).

    Args:
      gram: ``[m, m]`` Gramian.
      phi_hat: ``[m, m]`` EMA targets (``φ̂_ij`` for task ``i`` against ``j``).
      key: PRNG key for the visiting orders (one permutation per task).
      orders: ``[m, m]`` explicit orders (override ``key``); default identity.
      beta: EMA rate ``β ∈ [0, 1]``.
      eps: non-negative constant added to the denominators.
      ema: ``"always"`` (paper, TorchJD) or ``"corrected"`` (LibMTL 1.1.5).
    """
    gram = check_gram(gram, "gram", min_tasks=1)
    m = gram.shape[0]
    if not 0 <= beta <= 1:
        raise ValueError(f"`beta` must be in [0, 1], got {beta!r}.")
    if not eps >= 0:
        raise ValueError(f"`eps` must be >= 0, got {eps!r}.")
    if ema not in _EMA:
        raise ValueError(f"`ema` must be one of {_EMA}, got {ema!r}.")
    if phi_hat is None:
        phi_hat = jnp.zeros((m, m), gram.dtype)
    elif jnp.shape(phi_hat) != (m, m):
        raise ValueError(f"`phi_hat` must have shape ({m}, {m}), got {jnp.shape(phi_hat)}.")
    if orders is not None:
        orders = _check_orders(orders, m)
    elif key is not None:
        orders = random_orders(key, m)
    else:
        orders = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), (m, m))
    return _gradvac(jax.lax.stop_gradient(gram), jnp.asarray(phi_hat), orders, beta, eps, ema)


@functools.partial(jax.jit, static_argnames=("ema",))
@full_precision
def _gradvac(gram, phi_hat, orders, beta, eps, ema) -> GradVacResult:
    m = gram.shape[0]
    out = gram.dtype
    dtype = working_dtype(gram)
    c = gram.astype(dtype)
    finite = jnp.all(jnp.isfinite(c)) & jnp.all(jnp.isfinite(phi_hat))
    c = jnp.where(finite, 0.5 * (c + c.T), jnp.eye(m, dtype=dtype))
    ph_in = jnp.where(jnp.isfinite(phi_hat), phi_hat, 0).astype(dtype)
    ph0 = jnp.where(finite, ph_in, 0)
    norm = jnp.sqrt(jnp.maximum(jnp.diagonal(c), 0))

    def task(i, order, ph_row):
        def visit(k, carry):
            a, cg, ph, count = carry
            j = order[k]
            other = j != i
            norm_i = jnp.sqrt(jnp.maximum(cg @ a, 0))
            phi = cg[j] / (norm_i * norm[j] + eps)
            target = ph[j]
            hit = other & (phi < target)
            s1 = jnp.sqrt(jnp.maximum(1 - phi * phi, 0))
            s2 = jnp.sqrt(jnp.maximum(1 - target * target, 0))
            w = norm_i * (target * s1 - phi * s2) / (norm[j] * s2 + eps)
            w = jnp.where(hit, w, 0)
            a = a.at[j].add(w)
            cg = cg + w * c[j]
            move = other & (hit if ema == "corrected" else True)
            ph = ph.at[j].set(jnp.where(move, (1 - beta) * target + beta * phi, target))
            return a, cg, ph, count + hit.astype(jnp.int32)

        a0 = jax.nn.one_hot(i, m, dtype=dtype)
        carry = (a0, c[i], ph_row, jnp.zeros((), jnp.int32))
        a, _, ph, count = jax.lax.fori_loop(0, m, visit, carry)
        return a, ph, count

    coeffs, ph, counts = jax.vmap(task)(jnp.arange(m), orders, ph0)
    weights = jnp.sum(coeffs, axis=0)
    ok = finite & jnp.all(jnp.isfinite(weights)) & jnp.all(jnp.isfinite(ph))
    weights = jnp.where(ok, weights, 1)
    ph = jnp.where(ok, ph, ph_in)
    return GradVacResult(
        weights=weights.astype(out),
        status=pick_status(nonfinite=~ok),
        converged=ok,
        iterations=jnp.sum(counts),
        phi_hat=ph.astype(phi_hat.dtype),
        coefficients=jnp.where(ok, coeffs, jnp.eye(m, dtype=dtype)).astype(out),
    )


class GradVacState(NamedTuple):
    """State of :func:`gradvac`.

    Attributes:
      weights: ``[m]`` last weights (``1/m`` after ``init``, the kit's convention).
      status: int32 ``[]`` status of the last update.
      converged: bool ``[]`` the last input was usable.
      iterations: int32 ``[]`` corrections in the last update.
      phi_hat: ``[m, m]`` EMA targets ``φ̂`` (zeros after ``init``).
      key: PRNG key for the next update's orders.
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    phi_hat: jax.Array
    key: jax.Array


@weighting_factory
def gradvac(
    seed: int | jax.Array = 0,
    *,
    num_tasks: int | None = None,
    beta: float = 0.5,
    eps: float = 1e-8,
    ema: Literal["always", "corrected"] = "always",
) -> Weighting:
    """GradVac as a weighting (see the module docstring and :func:`gradvac_weights`).

    Args:
      seed: int seed or PRNG key for the visiting orders (``init(..., key=k)`` overrides).
      num_tasks: optional fixed ``m``.
      beta: EMA rate (paper and TorchJD default 0.5 — TorchJD's default; the paper
        tunes it).
      eps: denominator guard (TorchJD's ``1e-8``; LibMTL uses none).
      ema: ``"always"`` (paper, TorchJD) or ``"corrected"`` (LibMTL 1.1.5).
    """
    key0 = default_key(seed)
    if not 0 <= beta <= 1:
        raise ValueError(f"`beta` must be in [0, 1], got {beta!r}.")
    if not eps >= 0:
        raise ValueError(f"`eps` must be >= 0, got {eps!r}.")
    if ema not in _EMA:
        raise ValueError(f"`ema` must be one of {_EMA}, got {ema!r}.")

    def init(num_tasks: int, dtype=jnp.float32, *, key=None) -> GradVacState:
        num_tasks = check_num_tasks(num_tasks)
        return GradVacState(
            **core_fields(num_tasks, dtype),
            phi_hat=jnp.zeros((num_tasks, num_tasks), dtype),
            key=key0 if key is None else key,
        )

    def update(gram, state, *, losses=None, preference=None):
        del losses, preference
        gram = check_gram(gram, "gram", min_tasks=1)
        check_state_matches(gram, state)
        key, sub = jax.random.split(state.key)
        res = gradvac_weights(gram, state.phi_hat, sub, beta=beta, eps=eps, ema=ema)
        w = res.weights.astype(state.weights.dtype)
        return w, state_from_result(GradVacState, res, state, key=key)

    return Weighting(init, update, num_tasks)
