"""Aligned-MTL: independent component alignment (Senushkin et al., CVPR 2023,
"Independent component alignment for multi-task learning", Algorithm 1).

With the gradients as the columns of ``G`` (``n × m``) and the SVD ``G = U Σ Vᵀ``,
Aligned-MTL replaces ``G`` by the closest matrix with condition number one,
``Ĝ = σ_min U Vᵀ`` (eq. 9–10: its columns are orthogonal with equal norms), and updates
along ``Ĝ w`` for a task preference ``w`` (default ``1/m``).

Gramian form. With the eigen-decomposition ``C = GᵀG = V Λ Vᵀ`` (``Λ = Σ²``),
``Ĝ = G B`` for the balance matrix

    B = √λ_s · V Λ^{-1/2} Vᵀ,      α = B w,      d = G α = Ĝ w,

(over the ``r`` retained eigenpairs, ``λ_i > m ε λ_max``), so the weights are ``α = B w``.
``λ_s`` (``scale_mode``): ``"min"`` the smallest retained eigenvalue (the paper,
``σ_min²``; TorchJD's default), ``"median"`` the (lower) median, ``"rmse"`` their mean
(TorchJD: "as in the original implementation").

Preference: a positive ``[m]`` vector, normalised to sum 1 (so the default is TorchJD's
``1/m`` mean weighting; TorchJD uses an explicitly given vector unnormalised — the
direction is the same).

Properties (``tests/test_weighting_properties.py``): permutation invariant; weights
unchanged when every gradient is multiplied by one positive factor (``B`` depends on
eigenvalue ratios only). Not non-conflicting: ``Gᵀd = √λ_s C^{1/2} w`` can have a
negative entry.

``m = 1`` gives the weight 1 (the update is the gradient; a non-finite Gramian still
gives ``NONFINITE_INPUT``).

Degeneracy: a zero Gramian (rank 0) gives ``B = I`` (``α = w``, TorchJD's choice,
``status = DEGENERATE``) and a non-finite Gramian ``α = w`` (``status =
NONFINITE_INPUT``); both set ``degenerate``. A traced invalid preference falls back to
``1/m`` (``NONFINITE_INPUT`` if it had a non-finite entry, else ``DEGENERATE``). The solve
is closed-form: ``iterations = 0``, ``converged`` unless the input was unusable.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from jaxpareto._validate import check_gram, check_preference, working_dtype
from jaxpareto.weighting.base import (
    Weighting,
    check_num_tasks,
    check_state_matches,
    core_fields,
    factory_preference,
    full_precision,
    pick_status,
    single_task,
    state_from_result,
    weighting_factory,
)

__all__ = ["AlignedMtlResult", "AlignedMtlState", "aligned_mtl", "aligned_mtl_weights"]

SCALE_MODES = ("min", "median", "rmse")


class AlignedMtlResult(NamedTuple):
    """Result of :func:`aligned_mtl_weights`.

    Attributes:
      weights: ``[m]`` ``α = B w``.
      status: int32 ``[]`` a :class:`jaxpareto.status.Status`: ``SUCCESSFUL``,
        ``NONFINITE_INPUT`` (non-finite Gramian or preference) or ``DEGENERATE`` (zero
        Gramian, non-positive traced preference).
      converged: bool ``[]`` ``status == SUCCESSFUL`` (closed form).
      iterations: int32 ``[]`` always 0 (closed form).
      rank: int32 ``[]`` number of retained eigenvalues ``r``.
      scale: ``[]`` ``λ_s`` (of the input Gramian; ``σ_min²`` for ``"min"``).
      degenerate: bool ``[]`` zero or non-finite Gramian (``α = w``) or an invalid
        traced preference.
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    rank: jax.Array
    scale: jax.Array
    degenerate: jax.Array


def _check_scale_mode(scale_mode) -> Literal["min", "median", "rmse"]:
    if not isinstance(scale_mode, str) or scale_mode not in SCALE_MODES:
        raise ValueError(f"`scale_mode` must be one of {SCALE_MODES}, got {scale_mode!r}.")
    return scale_mode


def _safe_preference(r):
    ok = jnp.all(jnp.isfinite(r)) & jnp.all(r > 0)
    r = jnp.where(ok, r, jnp.ones_like(r))
    return r / jnp.sum(r), ~ok


@full_precision
def aligned_mtl_weights(
    gram: jax.Array,
    preference: jax.Array | None = None,
    *,
    scale_mode: str = "min",
) -> AlignedMtlResult:
    """Aligned-MTL weights ``α = √λ_s V_r Λ_r^{-1/2} V_rᵀ w`` (see module docstring).

    Args:
      gram: ``[m, m]`` task Gramian, ``m ≥ 1`` (``m = 1``: the weight 1, the
        update is the gradient).
      preference: ``[m]`` positive task preference ``w`` (normalised to sum 1); default
        ``1/m``. A traced invalid preference is replaced by ``1/m`` (flagged
        ``degenerate``).
      scale_mode: ``"min"`` (paper), ``"median"`` or ``"rmse"``.

    Returns:
      :class:`AlignedMtlResult`; float fields in the dtype of ``gram``.
    """
    gram = check_gram(gram, "gram", min_tasks=1)
    scale_mode = _check_scale_mode(scale_mode)
    m = gram.shape[0]
    dtype = working_dtype(gram)
    if preference is None:
        preference = jnp.ones((m,), dtype)
    else:
        preference = jax.lax.stop_gradient(check_preference(preference, m))
    return _aligned_mtl(jax.lax.stop_gradient(gram), preference, scale_mode)


# Jitted so that eager calls reuse one compiled program per shape and mode.
@functools.partial(jax.jit, static_argnames=("scale_mode",))
@full_precision
def _aligned_mtl(gram, preference, scale_mode) -> AlignedMtlResult:
    m = gram.shape[0]
    out_dtype = gram.dtype
    dtype = working_dtype(gram)
    if m == 1:
        # One task: the update is the gradient (weight 1), whatever its norm.
        w1, finite1 = single_task(gram, dtype)
        lam = jnp.where(finite1, gram[0, 0].astype(dtype), 0)
        return AlignedMtlResult(
            weights=w1.astype(out_dtype),
            status=pick_status(nonfinite=~finite1),
            converged=finite1,
            iterations=jnp.zeros((), jnp.int32),
            rank=(lam > 0).astype(jnp.int32),
            scale=jnp.maximum(lam, 0).astype(out_dtype),
            degenerate=~finite1,
        )
    pref_finite = jnp.all(jnp.isfinite(preference))
    w, bad_pref = _safe_preference(preference.astype(dtype))
    c = gram.astype(dtype)
    c = 0.5 * (c + c.T)
    finite = jnp.all(jnp.isfinite(c))
    top = jnp.max(jnp.abs(c))
    usable = finite & (top > jnp.finfo(dtype).tiny)
    # B depends on eigenvalue ratios only: decompose C / max|C_ij| for conditioning.
    c = jnp.where(usable, c / jnp.where(usable, top, 1), jnp.eye(m, dtype=dtype))
    evals, evecs = jnp.linalg.eigh(c)
    cutoff = m * jnp.finfo(dtype).eps * jnp.max(evals)
    keep = evals > cutoff
    rank = jnp.sum(keep).astype(jnp.int32)
    safe = jnp.where(keep, evals, 1)
    if scale_mode == "min":
        lam_s = jnp.min(jnp.where(keep, evals, jnp.inf))
    elif scale_mode == "rmse":
        lam_s = jnp.sum(jnp.where(keep, evals, 0)) / jnp.maximum(rank, 1)
    else:
        # Lower median of the retained eigenvalues (torch.median's convention): the
        # ((r−1)//2)-th smallest. eigh sorts ascending, dropped ones come first.
        lam_s = evals[(m - rank) + (rank - 1) // 2]
    coef = jnp.where(keep, jnp.sqrt(lam_s / safe), 0)
    alpha = evecs @ (coef * (evecs.T @ w))
    ok = usable & (rank > 0) & jnp.all(jnp.isfinite(alpha))
    alpha = jnp.where(ok, alpha, w)
    degenerate = ~ok | bad_pref
    return AlignedMtlResult(
        weights=alpha.astype(out_dtype),
        status=pick_status(nonfinite=~finite | ~pref_finite, degenerate=degenerate),
        converged=~degenerate,
        iterations=jnp.zeros((), jnp.int32),
        rank=jnp.where(usable, rank, 0),
        scale=jnp.where(ok, lam_s * top, 0).astype(out_dtype),
        degenerate=degenerate,
    )


class AlignedMtlState(NamedTuple):
    """State of :func:`aligned_mtl`.

    Attributes:
      weights: ``[m]`` last weights (``1/m`` after ``init``).
      status: int32 ``[]`` status of the last update (:class:`AlignedMtlResult`).
      converged: bool ``[]`` the last update succeeded.
      iterations: int32 ``[]`` always 0 (closed form).
      rank: int32 ``[]`` number of retained eigenvalues of the last Gramian.
      degenerate: bool ``[]`` the last update used the fallback.
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    rank: jax.Array
    degenerate: jax.Array


@weighting_factory
def aligned_mtl(
    preference: jax.Array | None = None, *, scale_mode: Literal["min", "median", "rmse"] = "min"
) -> Weighting:
    """Aligned-MTL as a weighting (see :func:`aligned_mtl_weights`).

    ``update(gram, state, *, losses=None, preference=None)``: an update-time
    ``preference`` overrides the factory's; ``losses`` is ignored.
    """
    scale_mode = _check_scale_mode(scale_mode)
    default = factory_preference(preference)
    num_tasks = None if default is None else default.shape[0]

    def init(num_tasks_: int, dtype=jnp.float32) -> AlignedMtlState:
        num_tasks_ = check_num_tasks(num_tasks_)
        if num_tasks is not None and num_tasks_ != num_tasks:
            raise ValueError(
                f"`num_tasks`={num_tasks_} does not match the preference's m={num_tasks}."
            )
        return AlignedMtlState(
            **core_fields(num_tasks_, dtype),
            rank=jnp.zeros((), jnp.int32),
            degenerate=jnp.asarray(False),
        )

    def update(gram, state, *, losses=None, preference=None):
        del losses
        gram = check_gram(gram, "gram", min_tasks=1)
        check_state_matches(gram, state)
        r = default if preference is None else preference
        res = aligned_mtl_weights(gram, r, scale_mode=scale_mode)
        weights = res.weights.astype(state.weights.dtype)
        return weights, state_from_result(AlignedMtlState, res, state)

    return Weighting(init, update, num_tasks)
