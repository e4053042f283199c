"""ConFIG: conflict-free updates (Liu et al., ICLR 2025, "ConFIG: towards conflict-free
training of physics informed neural networks", eq. 2).

With the unit gradients ``u_i = g_i / ‖g_i‖`` (rows of ``U``) and a preference ``r``
(default ``1``), the direction is the pseudo-inverse solution of ``U d* = r``,
normalised, and rescaled by the summed projections of the raw gradients:

    d* = U⁺ r,     ĝ = d* / ‖d*‖,     d = (Σ_j g_jᵀ ĝ) ĝ.

Gramian form. ``U⁺ = Uᵀ (U Uᵀ)⁺`` and ``U Uᵀ = K = D⁻¹ C D⁻¹`` with ``D = diag(‖g_i‖)``,
so ``d* = Σ_i (v_i / ‖g_i‖) g_i`` with ``v = K⁺ r``, ``‖d*‖² = vᵀ K v`` and
``Σ_j g_jᵀ ĝ = 1ᵀ C a / ‖d*‖`` (``a = D⁻¹ v``): the weights are
``w = (1ᵀ C a) a / ‖d*‖²``. Only the Gramian is needed.

Conventions and the peer (TorchJD 0.18 ``ConFIG``, adapted from the authors' code):
a zero gradient gets the unit vector 0 (TorchJD's ``nan_to_num``); the normalisation
divides by ``max(‖d*‖, 1e-12)`` (``torch.nn.functional.normalize``). The pseudo-inverse
drops the eigenvalues of ``K`` below ``rtol · λ_max`` with ``rtol = 10 m ε`` by
default. TorchJD cuts the singular values of ``U`` at ``max(m, n) ε σ_max``: on the
Gramian the small eigenvalues are ``σ²`` and rounding lifts an exact zero to about
``ε λ_max``, so the Gramian needs a cutoff on the ``λ`` scale. Both agree when ``U``
is exactly rank deficient or well conditioned; they differ for ``σ_min/σ_max`` between
roughly ``√ε`` and ``ε`` (ill-conditioned but full rank), where the Gramian cannot
resolve the small directions.

Properties: permutation invariant (with the preference permuted); the weights scale as
``s⁰`` (``d`` scales with ``s``: ``p = 0``); non-conflicting when ``U`` has full row
rank (then ``U ĝ ∝ r > 0``), not in general for rank-deficient ``U``; linear under
task scaling (positive task factors ``c`` leave the unit vectors, hence ``ĝ``, unchanged,
and the length ``Σ_j c_j g_jᵀ ĝ`` is linear in ``c``).

Bad input: a non-finite Gramian gives uniform weights ``1/m`` with
``status = NONFINITE_INPUT``; all gradients zero give ``w = 0`` and ``DEGENERATE``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxpareto._validate import check_gram, check_preference, working_dtype
from jaxpareto.weighting._field import FieldState, pick_status
from jaxpareto.weighting.base import (
    Weighting,
    check_num_tasks,
    check_state_matches,
    factory_preference,
    full_precision,
    weighting_factory,
)

__all__ = ["ConfigResult", "config", "config_weights"]


class ConfigResult(NamedTuple):
    """Result of :func:`config_weights`.

    Attributes:
      weights: ``[m]`` ``w`` with ``d = Gᵀ w``.
      status: int32 ``[]`` ``SUCCESSFUL``, ``DEGENERATE`` (``d* = 0``: zero update) or
        ``NONFINITE_INPUT`` (uniform fallback).
      converged: bool ``[]`` True unless the input was unusable.
      iterations: int32 ``[]`` 0 (closed form).
      length: ``[]`` ``Σ_j g_jᵀ ĝ`` (the update's length; may be negative).
      rank: int32 ``[]`` eigenvalues of ``K = U Uᵀ`` kept by the pseudo-inverse.
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    length: jax.Array
    rank: jax.Array


def config_weights(
    gram: jax.Array, preference: jax.Array | None = None, *, rtol: float | None = None
) -> ConfigResult:
    """ConFIG weights from the Gramian (Liu et al. 2025, eq. 2; see the module docstring).

    Args:
      gram: ``[m, m]`` Gramian.
      preference: ``[m]`` positive ``r`` (default ones).
      rtol: relative eigenvalue cutoff of the pseudo-inverse (default ``10 m ε``).
    """
    gram = check_gram(gram, "gram", min_tasks=1)
    m = gram.shape[0]
    r = jnp.ones((m,), gram.dtype) if preference is None else check_preference(preference, m)
    if rtol is not None and not rtol > 0:
        raise ValueError(f"`rtol` must be positive, got {rtol!r}.")
    return _config(jax.lax.stop_gradient(gram), r.astype(gram.dtype), rtol)


@functools.partial(jax.jit, static_argnames=("rtol",))
@full_precision
def _config(gram, r, rtol) -> ConfigResult:
    m = gram.shape[0]
    out = gram.dtype
    dtype = working_dtype(gram)
    c = gram.astype(dtype)
    finite = jnp.all(jnp.isfinite(c)) & jnp.all(jnp.isfinite(r))
    c = jnp.where(finite, 0.5 * (c + c.T), jnp.eye(m, dtype=dtype))
    r = jnp.where(finite, r.astype(dtype), 1)
    tiny = jnp.finfo(dtype).tiny
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(c), 0))
    inv = jnp.where(norms > jnp.sqrt(tiny), 1 / jnp.where(norms > 0, norms, 1), 0)
    k = inv[:, None] * c * inv[None, :]
    lam, vec = jnp.linalg.eigh(k)
    cut = (10 * m * jnp.finfo(dtype).eps if rtol is None else rtol) * jnp.max(lam)
    keep = lam > jnp.maximum(cut, tiny)
    v = vec @ (jnp.where(keep, 1 / jnp.where(keep, lam, 1), 0) * (vec.T @ r))
    a = inv * v
    nb2 = jnp.maximum(a @ c @ a, 0)
    denom2 = jnp.maximum(nb2, 1e-24)
    length_num = jnp.sum(c @ a)
    w = length_num * a / denom2
    degenerate = ~(nb2 > 0)
    w = jnp.where(degenerate, 0, w)
    ok = finite & jnp.all(jnp.isfinite(w))
    w = jnp.where(ok, w, 1.0 / m)
    return ConfigResult(
        weights=w.astype(out),
        status=pick_status(~ok, degenerate & ok),
        converged=ok,
        iterations=jnp.zeros((), jnp.int32),
        length=(length_num / jnp.sqrt(denom2)).astype(out),
        rank=jnp.sum(keep).astype(jnp.int32),
    )


@weighting_factory
def config(
    preference: jax.Array | None = None,
    *,
    num_tasks: int | None = None,
    rtol: float | None = None,
) -> Weighting:
    """ConFIG as a weighting (TorchJD ``ConFIG``; see :func:`config_weights`).

    Args:
      preference: ``[m]`` positive ``r`` (TorchJD's ``pref_vector``; default ones). A
        run-time ``preference=`` in ``update`` overrides it.
      num_tasks: optional fixed ``m``.
      rtol: pseudo-inverse cutoff (see :func:`config_weights`).
    """
    default = factory_preference(preference)
    if default is not None and num_tasks is not None and num_tasks != default.shape[0]:
        raise ValueError(f"`num_tasks`={num_tasks} disagrees with len(preference).")
    fixed = num_tasks if default is None else default.shape[0]

    def init(num_tasks: int, dtype=jnp.float32) -> FieldState:
        num_tasks = check_num_tasks(num_tasks)
        return FieldState(
            jnp.full((num_tasks,), 1.0 / num_tasks, dtype),
            pick_status(jnp.asarray(False), jnp.asarray(False)),
            jnp.asarray(True),
            jnp.zeros((), jnp.int32),
        )

    def update(gram, state, *, losses=None, preference=None):
        del losses
        gram = check_gram(gram, "gram", min_tasks=1)
        check_state_matches(gram, state)
        r = default if preference is None else preference
        res = config_weights(gram, r, rtol=rtol)
        w = res.weights.astype(state.weights.dtype)
        return w, FieldState(w, res.status, res.converged, res.iterations)

    return Weighting(init, update, fixed)
