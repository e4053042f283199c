"""Hypervolume-gradient weights for a set of ``K`` solutions (Emmerich & Deutz 2014,
"Time complexity and zeros of the hypervolume indicator gradient field"; Wang et al.
2017, "Hypervolume indicator gradient ascent multi-objective optimization"; Deist et
al. 2021, "Multi-objective learning using HV maximization"; LibMOON's ``GradHV``).

``K`` models with loss vectors ``L`` (``[K, m]``) and a reference point ``z`` span the
hypervolume ``HV(L; z)`` (:func:`jaxpareto.metrics.hypervolume`). Ascending it moves
every model along

    θ_k ← θ_k − η Σ_i w_ki ∇l_{k,i}(θ_k),        w_ki ∝ −∂HV / ∂l_{k,i} ≥ 0,

because ``∇_θk HV = Σ_i (∂HV/∂l_{k,i}) ∇l_{k,i}``. So model ``k`` uses the task weights
``w_k`` (a row of the result) with its own Jacobian: the HV gradient *is* a weighting,
one per model, computed from the losses of all models. ``∂HV/∂L`` is obtained with
``jax.grad`` through the exact, static-shape hypervolume of :mod:`jaxpareto.metrics`.
For ``m = 2`` and non-dominated points sorted by ``l_1`` it is the closed form
``−∂HV/∂l_{k,1} = l_{k−1,2} − l_{k,2}``, ``−∂HV/∂l_{k,2} = l_{k+1,1} − l_{k,1}`` (with
``z`` as the outer neighbours). At ties (equal coordinates, duplicates) the hypervolume
is not differentiable and this is one element of its subdifferential.

Dominated points and points not strictly better than ``z`` in every objective have a
zero gradient: with ``layered=False`` they get zero weights (and ``active=False``).
``layered=True`` follows Wang et al. / Deist et al. / LibMOON: a non-dominated sorting
splits the set into fronts and each point takes the gradient of the hypervolume of its
own front, so dominated models also move. (LibMOON additionally enlarges the reference
point to ``max(z, 1.1 · max_k L_k)``; pass such a ``z`` if you want that.)

Normalization per solution (``normalization``): ``"l1"`` (weights sum to 1, like the
other weightings here; default), ``"l2"`` (unit norm, LibMOON's
``obj_space_normalize``), ``"none"`` (``−∂HV/∂L`` itself). Rows with a non-finite loss
are treated as absent (zero weights, inactive).
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpareto._validate import check_float, check_gram, is_concrete
from jaxpareto.metrics import hypervolume
from jaxpareto.status import Status
from jaxpareto.weighting.base import (
    Weighting,
    check_num_tasks,
    check_state_matches,
    core_fields,
    full_precision,
    pick_status,
    weighting_factory,
)

__all__ = [
    "HvGradientResult",
    "HvGradientState",
    "hv_gradient",
    "hv_gradient_weights",
    "front_ranks",
]

NORMALIZATIONS = ("l1", "l2", "none")


class HvGradientResult(NamedTuple):
    """Result of :func:`hv_gradient_weights`.

    Attributes:
      weights: ``[K, m]`` per-solution task weights (``≥ 0``; normalized per row).
      status: int32 ``[]`` ``SUCCESSFUL``; ``NONFINITE_INPUT`` when some row held a
        non-finite loss (that row is absent: zero weights); ``DEGENERATE`` when no row
        has a non-zero gradient (every point outside the reference box or dominated).
      converged: bool ``[]`` ``status == SUCCESSFUL`` (closed form: nothing to iterate).
      iterations: int32 ``[]`` 0.
      gradient: ``[K, m]`` ``∂HV/∂L`` (``≤ 0``) of the whole set, or of each point's
        own front with ``layered=True``.
      hypervolume: ``[]`` ``HV(L; z)`` of the whole set.
      active: bool ``[K]`` rows with a non-zero gradient (the others have zero weights).
      ranks: int32 ``[K]`` non-dominated front index (0 = non-dominated; ``K`` for rows
        with a non-finite loss).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    gradient: jax.Array
    hypervolume: jax.Array
    active: jax.Array
    ranks: jax.Array


def _check_normalization(normalization) -> Literal["l1", "l2", "none"]:
    if not isinstance(normalization, str) or normalization not in NORMALIZATIONS:
        raise ValueError(f"`normalization` must be one of {NORMALIZATIONS}, got {normalization!r}.")
    return normalization


def _check_losses_reference(losses, reference):
    losses = check_float(losses, "losses")
    if losses.ndim != 2 or losses.shape[0] < 1 or losses.shape[1] < 1:
        raise ValueError(
            f"`losses` must be a [K, m] matrix (K solutions, m >= 1 objectives), got shape {losses.shape}."
        )
    m = losses.shape[1]
    reference = check_float(reference, "reference")
    if reference.shape != (m,):
        raise ValueError(
            f"`reference` must have shape ({m},) to match `losses` {losses.shape}, got {reference.shape}."
        )
    if is_concrete(reference) and not np.all(np.isfinite(np.asarray(reference))):
        raise ValueError("`reference` must be finite.")
    return losses, reference.astype(losses.dtype)


def front_ranks(losses: jax.Array) -> jax.Array:
    """Non-dominated sorting (minimization): front index of every row of ``[K, m]``.

    Front 0 holds the non-dominated rows, front ``f`` those dominated only by rows of
    fronts ``< f``. Rows with a non-finite entry get ``K``. Static shapes: ``K`` rounds
    of peeling on the ``[K, K]`` dominance matrix.
    """
    k = losses.shape[0]
    valid = jnp.all(jnp.isfinite(losses), axis=1)
    le = jnp.all(losses[None, :, :] <= losses[:, None, :], axis=2)
    lt = jnp.any(losses[None, :, :] < losses[:, None, :], axis=2)
    dominated_by = le & lt & valid[None, :] & valid[:, None]  # [i, j]: j dominates i

    def peel(f, carry):
        ranks, remaining = carry
        current = remaining & ~jnp.any(dominated_by & remaining[None, :], axis=1)
        return jnp.where(current, f, ranks), remaining & ~current

    ranks0 = jnp.full((k,), k, jnp.int32)
    ranks, _ = jax.lax.fori_loop(0, k, peel, (ranks0, valid))
    return ranks


def hv_gradient_weights(
    losses: jax.Array,
    reference: jax.Array,
    *,
    normalization: str = "l1",
    layered: bool = False,
) -> HvGradientResult:
    """Per-solution task weights ``w_k ∝ −∂HV(L; z)/∂l_k`` (see module docstring).

    Args:
      losses: ``[K, m]`` loss vectors of ``K`` solutions (models), ``m ≥ 2``.
      reference: ``[m]`` reference point ``z`` (finite).
      normalization: ``"l1"``, ``"l2"`` or ``"none"``.
      layered: per-front gradients (non-dominated sorting) instead of the whole set's.

    Returns:
      :class:`HvGradientResult` in the dtype of ``losses``. Jittable and vmappable.
    """
    losses, reference = _check_losses_reference(losses, reference)
    normalization = _check_normalization(normalization)
    if not isinstance(layered, bool):
        raise TypeError(f"`layered` must be a bool, got {type(layered).__name__}.")
    return _hv_gradient(jax.lax.stop_gradient(losses), reference, normalization, layered)


# Jitted so that eager calls reuse one compiled program per shape and option.
@functools.partial(jax.jit, static_argnames=("normalization", "layered"))
@full_precision
def _hv_gradient(losses, reference, normalization, layered) -> HvGradientResult:
    k = losses.shape[0]
    valid = jnp.all(jnp.isfinite(losses), axis=1)
    # Absent rows sit on the reference point: they bound no volume and get no gradient.
    pts = jnp.where(valid[:, None], losses, reference)
    ranks = front_ranks(losses)
    hv = hypervolume(pts, reference)
    if layered:

        def front_hv(p):
            def one(f):
                return hypervolume(jnp.where((ranks == f)[:, None], p, reference), reference)

            return jnp.sum(jax.vmap(one)(jnp.arange(k)))

        grad = jax.grad(front_hv)(pts)
    else:
        grad = jax.grad(hypervolume)(pts, reference)
    grad = jnp.where(valid[:, None] & jnp.isfinite(grad), grad, 0)
    w = jnp.maximum(-grad, 0)
    if normalization == "l1":
        norm = jnp.sum(w, axis=1)
    elif normalization == "l2":
        norm = jnp.sqrt(jnp.sum(w * w, axis=1))
    else:
        norm = jnp.ones((k,), w.dtype)
    active = jnp.any(w > 0, axis=1)
    w = jnp.where(active[:, None], w / jnp.where(active, norm, 1)[:, None], 0)
    status = pick_status(nonfinite=~jnp.all(valid), degenerate=~jnp.any(active))
    return HvGradientResult(
        weights=w,
        status=status,
        converged=status == Status.SUCCESSFUL,
        iterations=jnp.zeros((), jnp.int32),
        gradient=grad,
        hypervolume=hv,
        active=active,
        ranks=ranks,
    )


class HvGradientState(NamedTuple):
    """State of :func:`hv_gradient` (one model's view).

    Attributes:
      weights: ``[m]`` this model's last weights (initially ``1/m``).
      status: int32 ``[]`` status of the last update (``NONFINITE_INPUT`` when this
        model's losses or Gramian were not finite, ``DEGENERATE`` when this model had no
        hypervolume gradient: outside the reference box or dominated).
      converged: bool ``[]`` ``status == SUCCESSFUL``.
      iterations: int32 ``[]`` 0 (closed form).
      hypervolume: ``[]`` hypervolume of the whole population at the last update.
      active: bool ``[]`` this model had a non-zero hypervolume gradient.
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    hypervolume: jax.Array
    active: jax.Array


@weighting_factory
def hv_gradient(
    reference: jax.Array,
    *,
    num_tasks: int | None = None,
    normalization: Literal["l1", "l2", "none"] = "l1",
    layered: bool = False,
    axis_name: str | None = None,
) -> Weighting:
    """Hypervolume-gradient weighting: one model of a population of ``K`` models.

    The weights of model ``k`` are ``w_k ∝ −∂HV(L; z)/∂l_k`` (module docstring), where
    ``L`` stacks the losses of all ``K`` models. Like every weighting, ``update(gram,
    state, *, losses)`` takes this model's Gramian ``[m, m]`` and losses ``[m]`` and
    returns this model's weights ``[m]``:

    * ``axis_name="models"``: run the models side by side under
      ``jax.vmap(..., axis_name="models")`` (or ``shard_map``/``pmap``); the losses of
      all models are gathered with ``jax.lax.all_gather`` inside ``update``.
    * ``axis_name=None``: the population is this one model (``K = 1``): ``w_i ∝
      Π_{j≠i} (z_j − l_j)`` inside the reference box, zero outside it
      (``DEGENERATE``).

    For all ``K`` weight rows in one call (no per-model update), use
    :func:`hv_gradient_weights` on the ``[K, m]`` losses. With one task (``m = 1``) the
    weight is 1. A non-finite Gramian or loss gives finite weights (this model absent:
    zero weights; with ``m = 1``: 1) and ``status = NONFINITE_INPUT``. ``preference``
    is ignored.

    Args:
      reference: ``[m]`` reference point ``z`` (the method's defining argument).
      num_tasks: optional fixed ``m``; must equal ``len(reference)``.
      normalization: per-row normalization (``"l1"``, ``"l2"``, ``"none"``).
      layered: per-front gradients (non-dominated sorting) instead of the whole set's.
      axis_name: the named axis over the models, or ``None`` (a single model).
    """
    reference = check_float(reference, "reference")
    if reference.ndim != 1 or reference.shape[0] < 1:
        raise ValueError(
            f"`reference` must be a vector [m] with m >= 1, got shape {reference.shape}."
        )
    normalization = _check_normalization(normalization)
    if not isinstance(layered, bool):
        raise TypeError(f"`layered` must be a bool, got {type(layered).__name__}.")
    m = reference.shape[0]
    if num_tasks is not None and num_tasks != m:
        raise ValueError(f"`num_tasks`={num_tasks!r} does not match the reference's m={m}.")

    def init(num_tasks: int = m, dtype=jnp.float32) -> HvGradientState:
        num_tasks = check_num_tasks(num_tasks)
        if num_tasks != m:
            raise ValueError(f"`num_tasks`={num_tasks} does not match the reference's m={m}.")
        return HvGradientState(
            **core_fields(m, dtype),
            hypervolume=jnp.zeros((), dtype),
            active=jnp.asarray(False),
        )

    def update(gram, state, *, losses=None, preference=None):
        del preference
        if losses is None:
            raise ValueError("`losses` is required by the hv_gradient weighting.")
        losses = check_float(losses, "losses")
        if losses.shape != (m,):
            raise ValueError(f"`losses` must have shape ({m},) (this model's), got {losses.shape}.")
        gram_ok = jnp.asarray(True)
        if gram is not None:
            gram = check_gram(gram, "gram", min_tasks=1)
            check_state_matches(gram, state)
            gram_ok = jnp.all(jnp.isfinite(gram))
        finite = gram_ok & jnp.all(jnp.isfinite(losses))
        # A model whose Gramian is unusable takes no part (its losses are absent).
        mine = jnp.where(finite, losses, jnp.nan)
        if axis_name is None:
            everyone, me = mine[None, :], 0
        else:
            everyone = jax.lax.all_gather(mine, axis_name)
            me = jax.lax.axis_index(axis_name)
        res = hv_gradient_weights(everyone, reference, normalization=normalization, layered=layered)
        dtype = state.weights.dtype
        weights = res.weights[me].astype(dtype)
        active = res.active[me]
        if m == 1:  # one task: the update is the gradient
            weights, active = jnp.ones((1,), dtype), jnp.asarray(True)
        status = pick_status(nonfinite=~finite, degenerate=~active)
        return weights, HvGradientState(
            weights=weights,
            status=status,
            converged=status == Status.SUCCESSFUL,
            iterations=jnp.zeros((), jnp.int32),
            hypervolume=res.hypervolume.astype(state.hypervolume.dtype),
            active=active,
        )

    return Weighting(init, update, m)
