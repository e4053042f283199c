"""GradDrop: gradient sign dropout (Chen et al., NeurIPS 2020, "Just pick a sign:
optimizing deep multitask models with gradient sign dropout", Algorithm 1, lines 10–15).

For every coordinate ``k`` of the parameters, the positive sign purity of the task
gradients is::

    P_k = ½ (1 + Σ_i g_ik / Σ_i |g_ik|)   ∈ [0, 1],

a uniform ``U_k ~ U(0, 1)`` is drawn, and task ``i`` keeps coordinate ``k`` iff its sign
wins the draw: ``M_ik = [f(P_k) > U_k][g_ik > 0] + [f(P_k) < U_k][g_ik < 0]``. With
per-task leaks ``ℓ_i ∈ [0, 1]`` (default 0) the update is

    d_k = Σ_i (ℓ_i + (1 − ℓ_i) M_ik) g_ik.

This acts on coordinates, so GradDrop is a *Jacobian weighting*
(``Weighting.needs == "jacobian"``, :mod:`jaxpareto.weighting.base`); ``f`` is the
identity (the paper's and TorchJD's default). A coordinate where every task gradient
is 0 contributes 0 (``P`` is set to ½ there; TorchJD's 0/0 also gives 0). The state
holds the kit's core fields (:mod:`jaxpareto.weighting.base`; ``weights = 1/m`` after
``init``), a PRNG key (split at every update) and, as ``weights`` after an update, the
fraction of its coordinates each task kept (``ℓ_i + (1 − ℓ_i) · mean_k M_ik``).

Peers: TorchJD 0.18 ``GradDrop`` is the same algorithm on the full gradient (draws from
``torch.rand``); LibMTL 1.1.5 applies it to the representation gradients only, after
multiplying them by the sign of the representation and summing over the batch, and
adds ``1e-7`` to the denominator of ``P``.

Properties: permutation invariant in distribution (exactly for fixed draws); scale free
(``P`` and the masks ignore a common positive factor); neither non-conflicting nor linear
under task scaling.

Bad input: a Jacobian with a non-finite entry gives a zero direction with
``status = NONFINITE_INPUT``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxpareto._validate import working_dtype
from jaxpareto.weighting._field import KeyState, default_key
from jaxpareto.weighting.base import Weighting, core_fields, pick_status, weighting_factory

__all__ = ["graddrop", "graddrop_direction"]


def _rows(jac) -> int:
    leaves = jax.tree_util.tree_leaves(jac)
    if not leaves or any(jnp.ndim(x) == 0 for x in leaves):
        raise ValueError("`jac` must be a Jacobian pytree whose leaves have a leading axis m.")
    return leaves[0].shape[0]


def _check_leak(leak, m):
    if leak is None:
        return None
    leak = jnp.asarray(leak)
    if leak.shape != (m,):
        raise ValueError(f"`leak` must have shape ({m},), got {leak.shape}.")
    return leak


def graddrop_direction(jac, key: jax.Array | None = None, *, uniforms=None, leak=None):
    """One GradDrop step on a Jacobian pytree (Chen et al. 2020, Alg. 1 lines 10–15).

    Args:
      jac: Jacobian pytree (every leaf ``[m, ...]``) or an ``[m, n]`` matrix.
      key: PRNG key for the uniforms ``U``.
      uniforms: explicit ``U``, a pytree shaped like one row of ``jac`` (overrides
        ``key``; for reproducing a peer's draws).
      leak: ``[m]`` leaks ``ℓ_i`` (default zeros).

    Returns:
      ``(direction, weights, finite)``: the gradient-shaped direction, the kept fraction
      per task ``[m]``, and whether ``jac`` was finite (else the direction is 0).
    """
    m = _rows(jac)
    leak = _check_leak(leak, m)
    leaves, treedef = jax.tree_util.tree_flatten(jac)
    if uniforms is None:
        if key is None:
            raise ValueError("graddrop_direction needs a PRNG `key` or explicit `uniforms`.")
        keys = jax.random.split(key, len(leaves))
        us = [jax.random.uniform(k, x.shape[1:], working_dtype(x)) for k, x in zip(keys, leaves)]
    else:
        us = treedef.flatten_up_to(uniforms)
    return _graddrop(leaves, us, leak, treedef)


@functools.partial(jax.jit, static_argnames=("treedef",))
def _graddrop(leaves, us, leak, treedef):
    m = leaves[0].shape[0]
    finite = functools.reduce(
        jnp.logical_and, [jnp.all(jnp.isfinite(x)) for x in leaves], jnp.asarray(True)
    )
    wdtype = working_dtype(*leaves)
    lk = jnp.zeros((m,), wdtype) if leak is None else leak.astype(wdtype)
    kept, total, outs = jnp.zeros((m,), wdtype), 0, []
    for x, u in zip(leaves, us):
        g = jnp.where(finite, x, 0).astype(wdtype)
        num, den = jnp.sum(g, axis=0), jnp.sum(jnp.abs(g), axis=0)
        p = 0.5 * (1 + num / jnp.where(den > 0, den, 1))
        u = jnp.asarray(u, wdtype)
        mask = ((p > u) & (g > 0)) | ((p < u) & (g < 0))
        lkb = lk.reshape((m,) + (1,) * (g.ndim - 1))
        factor = lkb + (1 - lkb) * mask.astype(wdtype)
        outs.append(jnp.sum(factor * g, axis=0).astype(x.dtype))
        kept = kept + jnp.sum(factor.reshape(m, -1), axis=1)
        total += int(x[0].size)
    weights = jnp.where(finite, kept / max(total, 1), 1.0 / m)
    return jax.tree_util.tree_unflatten(treedef, outs), weights, finite


@weighting_factory
def graddrop(seed: int | jax.Array = 0, *, num_tasks: int | None = None, leak=None) -> Weighting:
    """GradDrop as a Jacobian weighting (``needs="jacobian"``; TorchJD ``GradDrop``).

    ``update(jac, state, *, losses=None, preference=None, gram=None) -> (direction, state)``.

    Args:
      seed: int seed or PRNG key (``init(..., key=k)`` overrides).
      num_tasks: optional fixed ``m`` (a ``leak`` vector fixes it too).
      leak: ``[m]`` leaks ``ℓ_i ∈ [0, 1]`` (default none).
    """
    key0 = default_key(seed)
    if leak is not None:
        leak = jnp.asarray(leak)
        if leak.ndim != 1:
            raise ValueError(f"`leak` must be a vector [m], got shape {leak.shape}.")
        if not bool(jnp.all((leak >= 0) & (leak <= 1))):
            raise ValueError("`leak` entries must lie in [0, 1].")
        if num_tasks is not None and num_tasks != leak.shape[0]:
            raise ValueError(f"`num_tasks`={num_tasks} disagrees with len(leak).")
        num_tasks = int(leak.shape[0])

    def init(num_tasks: int, dtype=jnp.float32, *, key=None, params=None) -> KeyState:
        del params  # not needed (the protocol passes it to Jacobian weightings)
        return KeyState(**core_fields(num_tasks, dtype), key=key0 if key is None else key)

    def update(jac, state, *, losses=None, preference=None, gram=None):
        del losses, preference, gram
        if _rows(jac) != state.weights.shape[0]:
            raise ValueError(
                f"`jac` has m={_rows(jac)} rows but the state holds {state.weights.shape[0]}."
            )
        key, sub = jax.random.split(state.key)
        d, w, finite = graddrop_direction(jac, sub, leak=leak)
        st = KeyState(
            weights=w.astype(state.weights.dtype),
            status=pick_status(nonfinite=~finite),
            converged=finite,
            iterations=state.iterations,
            key=key,
        )
        return d, st

    return Weighting(init, update, num_tasks, needs="jacobian")
