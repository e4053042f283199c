"""Loss-space requests: "lower task k" (:func:`improve_direction`) and "move onto the ray of a
preference" (:func:`toward_direction`), plus the ray geometry the trace's targets use."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxpareto._validate import check_float, check_preference
from jaxpareto.ppe._common import _check_int, _check_scalar


def improve_direction(m: int, task: int, amount=1.0, *, dtype=None) -> jax.Array:
    """Loss-space request "lower task ``task`` by ``amount``, accept the others rising".

    ``d = −amount · e_task`` (``[m]``). Its first-order realisation along the front
    (eq. 4) is, for a regular point, the projection ``d − α (αᵀd)/‖α‖²``: task ``task``
    decreases by ``amount (1 − α_k²/‖α‖²)`` and every other task ``j`` rises by
    ``amount α_j α_k / ‖α‖²``. :func:`trace` uses only the direction of a fixed ``d``;
    :meth:`Navigator.improve` uses ``amount`` as the target decrease.

    Args:
      m: number of tasks (``≥ 2``).
      task: index in ``[0, m)``.
      amount: positive float.
      dtype: float dtype of the result (default: the default float dtype).

    Returns:
      ``[m]`` array.
    """
    m = _check_int(m, "m", 2)
    task = _check_int(task, "task", 0)
    if task >= m:
        raise ValueError(f"`task` must be in [0, {m}), got {task}.")
    _check_scalar(amount, "amount", positive=True)
    dtype = jnp.result_type(float) if dtype is None else dtype
    return -jnp.asarray(amount, dtype) * jax.nn.one_hot(task, m, dtype=dtype)


def toward_direction(losses, preference, alpha=None) -> jax.Array:
    """Loss-space request "move onto the ray of ``preference``", i.e. make ``r ⊙ l ∝ 1``.

    The ray is spanned by ``u = 1/r`` (EPO's convention: ``r_j l_j`` equal). The request
    is the displacement ``d = t u − l`` from ``l`` to a point of the ray:

    * with the KKT weights ``alpha`` (the front's normal at ``l``): the point where the
      ray meets the front's tangent plane ``{l' : αᵀ(l' − l) = 0}``,
      ``t = αᵀl / αᵀu``. Then ``αᵀd = 0``: ``d`` is achievable to first order, and a
      step of ``d`` is a Newton step on the front's intersection with the ray (what
      :func:`trace` uses, so ``"toward"`` converges quadratically);
    * without ``alpha``: the move perpendicular to ``l``, ``t = ‖l‖² / lᵀu``
      (``dᵀl = 0``), the direction that increases ``cos∠(l, u)`` fastest at fixed
      ``‖l‖``.

    ``d = 0`` on the ray. When the denominator is not positive (no positive loss, or
    ``α`` orthogonal to ``u``) the ray cannot be reached this way and ``d = 0``.

    Args:
      losses: ``[m]``.
      preference: ``[m]`` positive.
      alpha: optional ``[m]`` KKT weights at ``losses``.

    Returns:
      ``[m]`` in the dtype of ``losses``.
    """
    losses = check_float(losses, "losses")
    if losses.ndim != 1:
        raise ValueError(f"`losses` must be a vector [m], got shape {losses.shape}.")
    m = losses.shape[0]
    r = check_preference(preference, m).astype(losses.dtype)
    normal = losses
    if alpha is not None:
        normal = check_float(alpha, "alpha")
        if normal.shape != (m,):
            raise ValueError(
                f"`alpha` must have shape ({m},) to match m={m} tasks, got {normal.shape}."
            )
        normal = normal.astype(losses.dtype)
    return _toward(losses, r, normal)


def _toward(losses: jax.Array, preference: jax.Array, normal: jax.Array) -> jax.Array:
    """``t u − l`` with ``t = nᵀl / nᵀu`` (the ray meets the plane ``nᵀ(l' − l) = 0``)."""
    tiny = jnp.finfo(losses.dtype).tiny
    u = 1 / jnp.where(preference > 0, preference, jnp.inf)
    nu = normal @ u
    ok = (nu > tiny) & jnp.isfinite(nu)
    d = (normal @ losses) / jnp.where(ok, nu, 1) * u - losses
    return jnp.where(ok & jnp.all(jnp.isfinite(d)), d, jnp.zeros_like(d))


def _ray_sine(losses: jax.Array, preference: jax.Array) -> jax.Array:
    """``sin∠(l, 1/r)`` (0 on the ray)."""
    u = 1 / preference
    uh = u / jnp.linalg.norm(u)
    perp = losses - (losses @ uh) * uh
    ln = jnp.linalg.norm(losses)
    return jnp.where(ln > 0, jnp.linalg.norm(perp) / jnp.where(ln > 0, ln, 1), 1.0)
