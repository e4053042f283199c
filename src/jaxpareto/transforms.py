"""Weightings as optax gradient transformations over a Jacobian pytree.

::

    tx = optax.chain(jp.epo(preference=r), optax.adam(1e-3))
    state = tx.init(params)
    losses, jac = jp.value_and_jacobian(loss_fn)(params, batch)
    updates, state = tx.update(jac, state, params, value=losses)
    params = optax.apply_updates(params, updates)

The transform receives the Jacobian (every leaf ``[m, ...]``) as ``updates``, computes
the Gramian ``C = G Gᵀ``, asks the weighting for ``w`` and returns ``Σ_i w_i G_i``, a
pytree shaped like the parameters that the next transforms in the chain (adam, sgd,
clipping, schedules) treat as an ordinary gradient.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxpareto import jacobian as _jac
from jaxpareto import weighting as _w
from jaxpareto._validate import check_float


class AggregateState(NamedTuple):
    """State of :func:`aggregate`.

    Attributes:
      weights: ``[m]`` the task weights of the last update (after ``scale``).
      inner: the weighting's own state, with its diagnostics (e.g. EPO's
        ``non_uniformity`` and ``lp_status``, MGDA's ``objective``).
      skipped: ``int32`` number of updates so far whose Jacobian or losses held a
        NaN/inf; such an update is all zeros and leaves ``weights``/``inner`` as they
        were, so one bad batch never writes a non-finite parameter.
    """

    weights: jax.Array
    inner: NamedTuple
    skipped: jax.Array


def _num_tasks(jac) -> int:
    leaves = jax.tree_util.tree_leaves(jac)
    if not leaves or any(l.ndim == 0 for l in leaves):
        raise ValueError("`updates` must be a Jacobian pytree whose leaves have a leading task axis m.")
    return leaves[0].shape[0]


def _weight_dtype(dtype):
    """Weights are solved at least in float32 (half-precision Jacobians included)."""
    return jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype


def aggregate(
    weighting: _w.Weighting,
    *,
    num_tasks: int | None = None,
    scale: str | float = "unit",
    dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Turns a weighting into an optax transformation over a Jacobian pytree.

    ``update(jac, state, params=None, *, value=None, preference=None)``:

    * ``jac``: the Jacobian, every leaf ``[m, ...]`` (e.g. from
      :func:`jaxpareto.value_and_jacobian`);
    * ``value``: ``[m]`` task losses (required by EPO, PMTL, Chebyshev and the
      loss-based MGDA normalizations);
    * ``preference``: ``[m]`` run-time preference overriding the one fixed at
      construction (PPE navigation and hypernetworks change it every step).

    It returns ``d = Σ_i s·w_i ∇l_i`` with ``w`` on the simplex and ``s = 1`` for
    ``scale="unit"``, ``s = m`` for ``scale="num_tasks"`` (the EPO / PMTL reference code
    trains on ``Σ (m w_i) l_i``), or a given positive float. A step whose Jacobian or
    losses hold a NaN/inf returns zeros, keeps the previous weights and diagnostics and
    increments ``state.skipped``.

    Args:
      weighting: a :class:`jaxpareto.weighting.Weighting`.
      num_tasks: ``m``; needed only when the weighting does not fix it (``mgda()``
        without a preference). The state must exist before the first update so that
        it can be carried through ``jax.lax.scan``.
      scale: ``"unit"``, ``"num_tasks"`` or a positive float.
      dtype: dtype of the weights in the state (default: float64 when x64 is enabled
        and the parameters are float64, else float32; set it to match your Jacobian).
    """
    if isinstance(scale, str):
        if scale not in ("unit", "num_tasks"):
            raise ValueError(f"`scale` must be 'unit', 'num_tasks' or a float, got {scale!r}.")
    elif not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"`scale` must be 'unit', 'num_tasks' or a positive float, got {scale!r}.")
    fixed = weighting.num_tasks
    if num_tasks is not None and fixed is not None and num_tasks != fixed:
        raise ValueError(f"`num_tasks`={num_tasks} disagrees with the weighting's m={fixed}.")
    m_static = num_tasks if num_tasks is not None else fixed
    if m_static is not None and (not isinstance(m_static, int) or m_static < 1):
        raise ValueError(f"`num_tasks` must be a positive int, got {m_static!r}.")

    def init(params):
        if m_static is None:
            raise ValueError(
                "`num_tasks` is unknown: pass it, e.g. jp.mgda(num_tasks=3), or give a "
                "preference of length m."
            )
        leaves = jax.tree_util.tree_leaves(params)
        if dtype is not None:
            wdtype = dtype
        elif leaves:
            wdtype = _weight_dtype(jnp.result_type(*leaves))
        else:
            wdtype = jnp.float32
        inner = weighting.init(m_static, wdtype)
        return AggregateState(
            weights=jnp.asarray(inner.weights, wdtype),
            inner=inner,
            skipped=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None, *, value=None, preference=None, **extra_args):
        del params, extra_args
        m = _num_tasks(updates)
        if state.weights.shape != (m,):
            raise ValueError(
                f"`updates` (the Jacobian) has m={m} tasks but the transform was built "
                f"for m={state.weights.shape[0]}."
            )
        if value is not None:
            # Named here: the weightings would report it as `losses`, which is not
            # what the caller of tx.update wrote.
            value = check_float(value, "value")
            if value.shape != (m,):
                raise ValueError(f"`value` (the losses) must have shape ({m},), got {value.shape}.")
        gram = _jac.gramian(updates)
        finite = jnp.all(jnp.isfinite(gram))
        if value is not None:
            finite &= jnp.all(jnp.isfinite(value))
        # Solve on a harmless stand-in when the step is bad, so no NaN enters the state.
        safe_gram = jnp.where(finite, gram, jnp.eye(m, dtype=gram.dtype))
        safe_value = None if value is None else jnp.where(finite, value, jnp.ones_like(value))
        weights, inner = weighting.update(
            safe_gram, state.inner, losses=safe_value, preference=preference
        )
        weights = weights.astype(state.weights.dtype)
        if scale == "num_tasks":
            weights = weights * m
        elif not isinstance(scale, str):
            weights = weights * scale
        # The guard reads only the m × m Gramian and the losses, and is applied to the
        # direction (shaped like the parameters), never to the m × n Jacobian: a NaN or
        # inf anywhere in the Jacobian reaches the Gramian's diagonal, so a finite
        # Gramian means a finite Jacobian, and a bad step returns exact zeros.
        direction = jax.tree_util.tree_map(
            lambda d: jnp.where(finite, d, jnp.zeros_like(d)), _jac.combine(updates, weights)
        )

        def keep(new, old):
            return jnp.where(finite, new, old)

        new_state = AggregateState(
            weights=keep(weights, state.weights),
            inner=jax.tree_util.tree_map(keep, inner, state.inner),
            skipped=state.skipped + (~finite).astype(jnp.int32),
        )
        return direction, new_state

    return optax.GradientTransformationExtraArgs(init, update)


def mgda(*, num_tasks: int | None = None, scale: str | float = "unit", **kwargs):
    """MGDA (min-norm) aggregator: ``aggregate(weighting.mgda(**kwargs))``.

    Désidéri (2012); Sener & Koltun (2018). ``kwargs`` go to
    :func:`jaxpareto.weighting.mgda` (``method``, ``normalization``).
    """
    return aggregate(_w.mgda(**kwargs), num_tasks=num_tasks, scale=scale)


def epo(preference=None, *, scale: str | float = "unit", **kwargs):
    """EPO search aggregator (Mahapatra & Rajan, ICML 2020, eq. 24).

    ``kwargs`` go to :func:`jaxpareto.weighting.epo` (``eps``, ``adjustment``,
    ``descent``, ``fallback``). Needs ``value=losses`` at update time.
    """
    return aggregate(_w.epo(preference, **kwargs), scale=scale)


def pmtl(preferences, index: int, *, scale: str | float = "unit", **kwargs):
    """Pareto MTL aggregator (Lin et al. 2019) for sub-region ``index`` of
    ``preferences`` (``[K, m]``). Needs ``value=losses`` at update time."""
    return aggregate(_w.pmtl(preferences, index, **kwargs), scale=scale)


def linear(preference=None, *, num_tasks: int | None = None, scale: str | float = "unit"):
    """Linear scalarization aggregator: direction ``Σ_i (r_i/Σr) ∇l_i``."""
    return aggregate(_w.linear(preference), num_tasks=num_tasks, scale=scale)


def chebyshev(preference=None, ideal=None, *, num_tasks: int | None = None,
              scale: str | float = "unit", smoothing: float | None = None):
    """(Smooth) Tchebycheff aggregator; needs ``value=losses`` at update time."""
    return aggregate(_w.chebyshev(preference, ideal, smoothing=smoothing),
                     num_tasks=num_tasks, scale=scale)
