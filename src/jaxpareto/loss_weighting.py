"""Loss-based weightings: task weights from the loss vector alone, one backward pass.

These methods choose ``w`` from the losses (and a small state), never from the
Jacobian, so a step costs what the summed loss ``Σ_i l_i`` costs: one forward pass and
one reverse pass of ``Σ_i w_i l_i``. Two ways to drive them, both ``optax`` chains:

**The one-pass VJP** (recommended)::

    tx = optax.chain(jp.famo(num_tasks=m), optax.adam(1e-3))
    state = tx.init(params)

    @jax.jit
    def step(params, state, batch):
        lvjp = jp.loss_vjp(loss_fn)(params, batch)     # forward pass, losses [m]
        updates, state = tx.update(lvjp, state, params)  # w from losses; one reverse pass
        return optax.apply_updates(params, updates), state, lvjp.losses

``jp.loss_vjp`` runs the forward pass and keeps the linearisation; the transform reads
``lvjp.losses``, asks the rule for ``w`` and calls ``lvjp.vjp(w) = Σ_i w_i ∇l_i`` once.

**An ordinary gradient** of the method's scalar objective (e.g. to reuse an existing
``jax.grad`` step): keep the rule and build the objective with :func:`loss_objective`::

    rule = jp.loss_weighting.famo(num_tasks=m)
    tx = optax.chain(jp.loss_weighted(rule), optax.adam(1e-3))

    def objective(params, state, batch):
        losses = loss_fn(params, batch)
        return jp.loss_objective(rule, state, losses), losses

    (_, losses), grads = jax.value_and_grad(objective, has_aux=True)(params, state, batch)
    updates, state = tx.update(grads, state, params, losses=losses)

:func:`loss_objective` is ``Σ_i sg(w_i) l_i`` with the weights the transform is about
to use (``sg`` = stop-gradient), whose gradient is the same ``Σ_i w_i ∇l_i``: for GLS
it is the gradient of the geometric mean, for DB-MTL/FAMO the weights are those of the
log-losses, for uncertainty weighting those of ``Σ ½e^{-s_i} l_i + ½s_i``.

Where the extra state lives: every rule's state (learnable log-variances, FAMO's
logits, DWA's epoch averages, RLW's key, GradNorm's logits and initial losses) is in the
transform's state, and parameters of a rule (``s`` of UW and IMTL-L, FAMO's ``ξ``,
GradNorm's logits) get their own analytic gradient from the losses and their own optax
optimizer (``optimizer=``; pass the model's optimizer to train them "by the same
optimizer"). For uncertainty weighting with the log-variances kept in the model's
parameter pytree instead, :func:`uncertainty_loss` is the plain objective.

GradNorm additionally needs the per-task gradient norms of one shared layer: pass
``gram=`` (the ``[m, m]`` Gramian of that layer's Jacobian, e.g.
``jp.gramian(jp.value_and_jacobian(f_of_layer)(layer)[1])``, whose diagonal is
``‖∇_W l_i‖²``) to ``update``. DB-MTL needs per-task *gradients* (an EMA of them), not
only their norms, so :func:`db_mtl` is a transform over a Jacobian pytree (every leaf
``[m, ...]``, as :func:`jaxpareto.aggregate`), restricted to the shared parameters when
you pass only those.

Bad inputs: a step whose losses (or ``gram``, weights, or update) hold a NaN/inf returns
zeros, leaves the state as it was and increments ``skipped``. Zero or negative losses
where a rule takes a logarithm or divides by a loss (GLS, FAMO, DB-MTL, DWA's ratio) are
clamped to ``eps`` (documented per rule) and counted in ``clamped``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxpareto import jacobian as _jac
from jaxpareto._validate import check_float

__all__ = [
    "LossWeighting",
    "LossVJP",
    "LossWeightedState",
    "DbMtlState",
    "UncertaintyState",
    "ImtlLState",
    "DwaState",
    "RlwState",
    "FamoState",
    "GradNormState",
    "loss_vjp",
    "loss_weighted",
    "loss_objective",
    "find_loss_state",
    "uncertainty_loss",
    "init_log_vars",
    "uncertainty",
    "imtl_l",
    "dwa",
    "rlw",
    "gls",
    "famo",
    "gradnorm",
    "db_mtl",
    "equal",
]


class LossWeighting(NamedTuple):
    """A loss-based weighting rule: two pure functions and what they need.

    Attributes:
      num_tasks: ``m``.
      init: ``init(dtype) -> state`` (a NamedTuple of arrays).
      step: ``step(state, losses[m], gram) -> (weights[m], new_state, clamped)``: the
        weights of this step's update ``Σ_i w_i ∇l_i`` and the state after it;
        ``clamped`` (bool) says a loss was clamped to ``eps``. ``gram`` is the
        ``update``'s ``gram=`` (``None`` unless ``needs_gram``).
      needs_gram: whether ``step`` reads ``gram`` (GradNorm).
      name: the method's name.
    """

    num_tasks: int
    init: Callable[[Any], NamedTuple]
    step: Callable[..., tuple]
    needs_gram: bool = False
    name: str = ""


class LossVJP(NamedTuple):
    """The losses of one forward pass and the reverse pass of their weighted sum.

    Attributes:
      losses: ``[m]`` task losses.
      vjp: ``vjp(weights[m]) -> ∇_θ Σ_i w_i l_i``, shaped like the differentiated
        argument (a :class:`jax.tree_util.Partial`, so it crosses ``jit`` boundaries).
    """

    losses: jax.Array
    vjp: Callable[[jax.Array], Any]


class LossWeightedState(NamedTuple):
    """State of :func:`loss_weighted`.

    Attributes:
      weights: ``[m]`` the weights of the last update.
      inner: the rule's state.
      skipped: ``int32`` steps whose losses, ``gram``, weights or update held a NaN/inf
        (zeros returned, state kept).
      clamped: ``int32`` steps in which a loss was clamped to the rule's ``eps``.
    """

    weights: jax.Array
    inner: NamedTuple
    skipped: jax.Array
    clamped: jax.Array


def loss_vjp(fun: Callable[..., Any], argnums: int = 0) -> Callable[..., LossVJP]:
    """``loss_vjp(fun)(*args) -> LossVJP``: the forward pass of ``fun`` (``[m]`` losses)
    and its linearisation, so that ``vjp(w)`` is one reverse pass of ``Σ_i w_i l_i``
    (``jax.vjp`` of ``fun`` in argument ``argnums``)."""

    def wrapped(*args):
        args = list(args)
        primal = args[argnums]

        def f(p):
            return fun(*args[:argnums], p, *args[argnums + 1 :])

        losses, vjp_fn = jax.vjp(f, primal)
        check_float(losses, "losses")
        if losses.ndim != 1:
            raise ValueError(f"`fun` must return a vector of m losses, got shape {losses.shape}.")
        return LossVJP(losses, jax.tree_util.Partial(_apply_vjp, vjp_fn, losses.dtype))

    return wrapped


def _apply_vjp(vjp_fn, dtype, weights):
    return vjp_fn(jnp.asarray(weights).astype(dtype))[0]


def _state_dtype(params, dtype):
    if dtype is not None:
        return dtype
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        return jnp.float32
    dt = jnp.result_type(*leaves)
    return jnp.float32 if jnp.finfo(dt).bits < 32 else dt


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return (
        jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
        if leaves
        else jnp.asarray(True)
    )


def _check_losses(losses, m: int) -> jax.Array:
    if losses is None:
        raise ValueError(
            "`losses` is required: pass a jp.loss_vjp(...) result as `updates`, or the "
            "gradient of jp.loss_objective(...) with `losses=`."
        )
    losses = check_float(losses, "losses")
    if losses.shape != (m,):
        raise ValueError(f"`losses` must have shape ({m},), got {losses.shape}.")
    return losses


def _rule_step(rule: LossWeighting, inner, losses, gram):
    """Weights and next state on a stand-in when the inputs are not finite."""
    m = rule.num_tasks
    dt = _inner_dtype(inner)
    losses = losses.astype(dt)
    finite = jnp.all(jnp.isfinite(losses))
    if rule.needs_gram:
        if gram is None:
            raise ValueError(f"`{rule.name}` needs `gram=` (the [m, m] Gramian of a shared layer).")
        gram = check_float(gram, "gram").astype(dt)
        if gram.shape != (m, m):
            raise ValueError(f"`gram` must have shape ({m}, {m}), got {gram.shape}.")
        finite &= jnp.all(jnp.isfinite(gram))
        gram = jnp.where(finite, gram, jnp.eye(m, dtype=dt))
    safe = jnp.where(finite, losses, jnp.ones_like(losses))
    weights, new_inner, clamped = rule.step(inner, safe, gram)
    finite &= jnp.all(jnp.isfinite(weights))
    return weights, new_inner, clamped, finite


def _inner_dtype(inner):
    """The floating dtype a rule's state was built with."""
    for x in jax.tree_util.tree_leaves(inner):
        if jnp.issubdtype(x.dtype, jnp.floating):
            return x.dtype
    return jnp.float32


def loss_weighted(
    rule: LossWeighting, *, dtype: Any = None, nonfinite: str = "zero"
) -> optax.GradientTransformationExtraArgs:
    """A loss-based rule as an optax transformation (one backward pass a step).

    ``update(updates, state, params=None, *, losses=None, gram=None, **extra)``:

    * ``updates`` a :class:`LossVJP` (from :func:`loss_vjp`): the weights come from
      ``updates.losses`` and the state, the output is ``updates.vjp(w)``;
    * or an ordinary gradient pytree, the gradient of :func:`loss_objective` (then
      ``losses=`` is required): it is returned as is, and the state advances.
    * ``gram``: ``[m, m]`` Gramian of a shared layer's Jacobian, for GradNorm.

    A step with a NaN/inf in the losses, ``gram``, the weights or the update returns
    zeros (``nonfinite="zero"``) or NaNs (``"nan"``, for a downstream
    ``optax.apply_if_finite``), keeps the state and increments ``skipped``.
    """
    if nonfinite not in ("zero", "nan"):
        raise ValueError(f"`nonfinite` must be 'zero' or 'nan', got {nonfinite!r}.")
    m = rule.num_tasks

    def init(params):
        inner = rule.init(_state_dtype(params, dtype))
        dt = _inner_dtype(inner)
        return LossWeightedState(
            weights=jnp.ones((m,), dt),
            inner=inner,
            skipped=jnp.zeros((), jnp.int32),
            clamped=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None, *, losses=None, gram=None, **extra):
        del params, extra
        is_vjp = isinstance(updates, LossVJP)
        losses = _check_losses(updates.losses if is_vjp else losses, m)
        weights, inner, clamped, finite = _rule_step(rule, state.inner, losses, gram)
        safe_w = jnp.where(finite, weights, jnp.zeros_like(weights))
        direction = updates.vjp(safe_w) if is_vjp else updates
        finite &= _all_finite(direction)
        fill = 0.0 if nonfinite == "zero" else jnp.nan
        direction = jax.tree_util.tree_map(
            lambda d: jnp.where(finite, d, jnp.full_like(d, fill)), direction
        )

        def keep(new, old):
            return jnp.where(finite, new, old)

        new_state = LossWeightedState(
            weights=keep(weights.astype(state.weights.dtype), state.weights),
            inner=jax.tree_util.tree_map(keep, inner, state.inner),
            skipped=state.skipped + (~finite).astype(jnp.int32),
            clamped=state.clamped + (finite & clamped).astype(jnp.int32),
        )
        return direction, new_state

    return optax.GradientTransformationExtraArgs(init, update)


def find_loss_state(opt_state) -> LossWeightedState:
    """The (single) :class:`LossWeightedState` inside an optax chain's state."""
    found = [
        s
        for s in jax.tree_util.tree_leaves(
            opt_state, is_leaf=lambda x: isinstance(x, LossWeightedState)
        )
        if isinstance(s, LossWeightedState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"expected one LossWeightedState in the optimizer state, found {len(found)}."
        )
    return found[0]


def loss_objective(rule: LossWeighting, opt_state, losses, gram=None) -> jax.Array:
    """``Σ_i sg(w_i) l_i``: the scalar whose gradient is this step's update.

    ``w`` are the weights :func:`loss_weighted` computes from ``opt_state`` (the whole
    chain's state, or the :class:`LossWeightedState`) and these ``losses``, so
    ``jax.grad`` of it is ``Σ_i w_i ∇l_i``; ``losses`` is differentiable. Its value is
    not the method's transformed loss (e.g. the geometric mean for GLS); only its
    gradient is.
    """
    state = find_loss_state(opt_state)
    losses = check_float(losses, "losses")
    weights, _, _, finite = _rule_step(rule, state.inner, jax.lax.stop_gradient(losses), gram)
    weights = jax.lax.stop_gradient(jnp.where(finite, weights, jnp.zeros_like(weights)))
    return jnp.sum(weights.astype(losses.dtype) * losses)


def _check_m(num_tasks) -> int:
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"`num_tasks` must be a positive int, got {num_tasks!r}.")
    return num_tasks


def _learnable(param0, optimizer):
    """(init, apply): an optax optimizer stepping a rule's own parameter vector."""

    def init(dtype, m):
        p = jnp.full((m,), param0, dtype)
        return p, optimizer.init(p)

    def apply(p, opt_state, grad):
        upd, opt_state = optimizer.update(grad.astype(p.dtype), opt_state, p)
        return optax.apply_updates(p, upd), opt_state

    return init, apply


# --------------------------------------------------------------------------- rules


def equal(num_tasks: int) -> LossWeighting:
    """Equal weighting (EW): ``w_i = 1``, the gradient of ``Σ_i l_i`` (LibMTL's EW)."""
    m = _check_m(num_tasks)

    class EqualState(NamedTuple):
        dummy: jax.Array

    def init(dtype):
        return EqualState(jnp.zeros((), dtype))

    def step(state, losses, gram):
        return jnp.ones_like(losses), state, jnp.array(False)

    return LossWeighting(m, init, step, False, "equal")


class UncertaintyState(NamedTuple):
    """Uncertainty weighting: ``log_vars`` ``s = log σ²`` ``[m]`` and their optimizer's
    state ``opt_state``."""

    log_vars: jax.Array
    opt_state: Any


def init_log_vars(num_tasks: int, value: float = 0.0, dtype: Any = jnp.float32) -> jax.Array:
    """``[m]`` initial log-variances ``s = log σ²`` for :func:`uncertainty_loss` (to keep
    in the parameter pytree; LibMTL starts at ``-0.5``)."""
    return jnp.full((_check_m(num_tasks),), value, dtype)


def uncertainty_loss(losses, log_vars) -> jax.Array:
    """Kendall et al.'s objective ``Σ_i ½ e^{-s_i} l_i + ½ s_i`` (CVPR 2018, eq. 7 with
    ``s = log σ²``; the regression form, used for every task as in LibMTL's UW).
    Differentiable in both ``losses`` and ``log_vars`` (keep them in ``params`` and one
    ``jax.grad`` trains both with the same optimizer)."""
    losses = check_float(losses, "losses")
    return jnp.sum(0.5 * jnp.exp(-log_vars) * losses + 0.5 * log_vars)


def uncertainty(
    num_tasks: int, *, init: float = 0.0, optimizer: optax.GradientTransformation | None = None
) -> LossWeighting:
    """Uncertainty weighting (UW; Kendall, Gal & Cipolla, CVPR 2018, eq. 7).

    Objective ``Σ_i ½ e^{-s_i} l_i + ½ s_i`` with learnable ``s_i = log σ_i²``: the model's
    weights are ``w_i = ½ e^{-s_i}`` and ``∂/∂s_i = ½ (1 − e^{-s_i} l_i)``, so ``s`` is
    trained from the losses alone, in the state, by ``optimizer`` (default
    ``optax.adam(1e-3)``; pass the model's optimizer to train it "by the same
    optimizer"). The step uses the current ``s`` and then updates it. LibMTL's UW is
    the same objective (its default ``init=-0.5``).
    """
    m = _check_m(num_tasks)
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer
    p_init, p_apply = _learnable(init, optimizer)

    def init_fn(dtype):
        return UncertaintyState(*p_init(dtype, m))

    def step(state, losses, gram):
        s = state.log_vars
        weights = 0.5 * jnp.exp(-s)
        grad_s = 0.5 * (1.0 - jnp.exp(-s) * losses)
        s_new, opt = p_apply(s, state.opt_state, grad_s)
        return weights, UncertaintyState(s_new, opt), jnp.array(False)

    return LossWeighting(m, init_fn, step, False, "uncertainty")


class ImtlLState(NamedTuple):
    """IMTL-L: ``scales`` ``s`` ``[m]`` and their optimizer's state."""

    scales: jax.Array
    opt_state: Any


def imtl_l(
    num_tasks: int, *, init: float = 0.0, optimizer: optax.GradientTransformation | None = None
) -> LossWeighting:
    """IMTL-L, the loss balance of Impartial MTL (Liu et al., ICLR 2021, eq. 2).

    Each loss is replaced by ``e^{s_i} l_i − s_i`` with learnable ``s_i``: the model's
    weights are ``w_i = e^{s_i}`` and ``∂/∂s_i = e^{s_i} l_i − 1`` (stationary where
    every scaled loss ``e^{s_i} l_i`` equals 1), trained in the state by ``optimizer``
    (default ``optax.adam(1e-3)``). LibMTL's ``IMTL`` applies the same transform before
    its gradient part (IMTL-G, ``jp.imtl_g``); only the loss part is here.
    """
    m = _check_m(num_tasks)
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer
    p_init, p_apply = _learnable(init, optimizer)

    def init_fn(dtype):
        return ImtlLState(*p_init(dtype, m))

    def step(state, losses, gram):
        s = state.scales
        weights = jnp.exp(s)
        s_new, opt = p_apply(s, state.opt_state, weights * losses - 1.0)
        return weights, ImtlLState(s_new, opt), jnp.array(False)

    return LossWeighting(m, init_fn, step, False, "imtl_l")


class DwaState(NamedTuple):
    """DWA: running sum ``epoch_sum`` ``[m]`` and ``count`` of this epoch's losses, the
    mean losses of the ``last`` and ``before_last`` epochs and ``epochs`` completed."""

    epoch_sum: jax.Array
    count: jax.Array
    last: jax.Array
    before_last: jax.Array
    epochs: jax.Array


def dwa(num_tasks: int, *, temperature: float = 2.0, steps_per_epoch: int = 1) -> LossWeighting:
    """Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, eq. 7).

    ``w_i = m · softmax(r / T)_i`` with ``r_i = L_i(t−1) / L_i(t−2)``, the ratio of task
    ``i``'s mean loss over the last two epochs; ``w = 1`` for the first two epochs. An
    epoch is ``steps_per_epoch`` updates (static; ``1``: every step is an epoch). The
    ratio uses ``max(L_i(t−2), tiny)`` and counts a clamp when it is zero. LibMTL's DWA
    is the same rule on its trainer's epoch-mean loss buffer.
    """
    m = _check_m(num_tasks)
    if (
        isinstance(steps_per_epoch, bool)
        or not isinstance(steps_per_epoch, int)
        or steps_per_epoch < 1
    ):
        raise ValueError(f"`steps_per_epoch` must be a positive int, got {steps_per_epoch!r}.")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be positive, got {temperature!r}.")

    def init(dtype):
        z = jnp.zeros((m,), dtype)
        zi = jnp.zeros((), jnp.int32)
        return DwaState(z, zi, z, z, zi)

    def step(state, losses, gram):
        tiny = jnp.finfo(losses.dtype).tiny
        clamped = (state.epochs >= 2) & jnp.any(state.before_last <= 0)
        ratio = state.last / jnp.maximum(state.before_last, tiny)
        weights = jnp.where(
            state.epochs >= 2, m * jax.nn.softmax(ratio / temperature), jnp.ones_like(losses)
        )
        total = state.epoch_sum + losses
        count = state.count + 1
        done = count >= steps_per_epoch
        mean = total / steps_per_epoch
        new = DwaState(
            epoch_sum=jnp.where(done, jnp.zeros_like(total), total),
            count=jnp.where(done, 0, count),
            last=jnp.where(done, mean, state.last),
            before_last=jnp.where(done, state.last, state.before_last),
            epochs=state.epochs + done.astype(jnp.int32),
        )
        return weights, new, clamped

    return LossWeighting(m, init, step, False, "dwa")


class RlwState(NamedTuple):
    """RLW: the PRNG ``key`` and the ``step`` counter (weights of step ``t`` are drawn
    with ``fold_in(key, t)``)."""

    key: jax.Array
    step: jax.Array


def rlw(num_tasks: int, *, seed: int = 0, distribution: str = "normal") -> LossWeighting:
    """Random Loss Weighting (Lin et al., TMLR 2022, Section 3).

    ``w = softmax(ε)``, ``ε ~ N(0, I)`` (``distribution="normal"``, the paper's and
    LibMTL's default) or ``ε ~ U(0, 1)^m`` (``"uniform"``, also through the softmax, as
    LibMTL), or ``w ~ Dirichlet(1)`` (``"dirichlet"``: the sample itself, as the paper;
    LibMTL passes it through a softmax as well). The draw of step ``t`` is
    ``fold_in(PRNGKey(seed), t)``: reproducible and jittable.
    """
    m = _check_m(num_tasks)
    if distribution not in ("normal", "uniform", "dirichlet"):
        raise ValueError(f"`distribution` must be normal/uniform/dirichlet, got {distribution!r}.")

    def init(dtype):
        return RlwState(jax.random.PRNGKey(seed), jnp.zeros((), jnp.int32))

    def step(state, losses, gram):
        k = jax.random.fold_in(state.key, state.step)
        dt = losses.dtype
        if distribution == "normal":
            weights = jax.nn.softmax(jax.random.normal(k, (m,), dt))
        elif distribution == "uniform":
            weights = jax.nn.softmax(jax.random.uniform(k, (m,), dt))
        else:
            weights = jax.random.dirichlet(k, jnp.ones((m,), dt))
        return weights, RlwState(state.key, state.step + 1), jnp.array(False)

    return LossWeighting(m, init, step, False, "rlw")


def gls(num_tasks: int, *, eps: float = 1e-12) -> LossWeighting:
    """Geometric Loss Strategy (Chennupati et al., CVPR Workshops 2019, eq. 2).

    Minimises the geometric mean ``G = (Π_i l_i)^{1/m}``; its gradient is
    ``Σ_i G/(m l_i) ∇l_i``, so ``w_i = G / (m l_i)``, with ``l_i`` clamped to ``eps``
    (counted in ``clamped``) so a zero loss gives finite weights. LibMTL's GLS minimises
    the same ``G``; the weights it *returns* (``l_i / (m Π l)``) are not the ones its
    backward pass applies — the tests compare with the gradient of its loss.
    """
    m = _check_m(num_tasks)

    class GlsState(NamedTuple):
        dummy: jax.Array

    def init(dtype):
        return GlsState(jnp.zeros((), dtype))

    def step(state, losses, gram):
        clamped = jnp.any(losses < eps)
        l = jnp.maximum(losses, eps)
        g = jnp.exp(jnp.mean(jnp.log(l)))
        return g / (m * l), state, clamped

    return LossWeighting(m, init, step, False, "gls")


class FamoState(NamedTuple):
    """FAMO: ``logits`` ``ξ`` ``[m]``, their optimizer's state, the previous step's
    losses ``prev_losses`` and whether there is one (``has_prev``)."""

    logits: jax.Array
    opt_state: Any
    prev_losses: jax.Array
    has_prev: jax.Array


def famo(
    num_tasks: int,
    *,
    gamma: float = 0.01,
    learning_rate: float = 0.025,
    optimizer: optax.GradientTransformation | None = None,
    min_losses: Any = 0.0,
    eps: float = 1e-8,
) -> LossWeighting:
    """Fast Adaptive Multitask Optimization (Liu, Liang, Stone & Liu, NeurIPS 2023,
    Algorithm 1).

    With ``z = softmax(ξ)`` and ``D_i = l_i − l_i^* + ε``, the update is the gradient of
    ``Σ_i z_i log D_i / c`` with ``c = Σ_i z_i / D_i`` held fixed, i.e.
    ``w_i = z_i / (c D_i)`` (``Σ w = 1``). After the step the logits move by the
    decrease of the log-losses: ``δ = J_softmax(ξ)ᵀ (log D(θ_t) − log D(θ_{t+1}))``,
    ``ξ ← ξ − β (δ + γ ξ)`` (``optimizer`` default:
    ``add_decayed_weights(γ)`` then ``adam(β)``, the authors' code; pass
    ``optax.chain(optax.add_decayed_weights(gamma), optax.sgd(beta))`` for the paper's
    plain step).

    ``l(θ_{t+1})`` is taken from the *next* update's losses: the logit update of step
    ``t`` runs at the start of step ``t+1``, before its weights, so no extra forward
    pass is needed (the authors' code re-evaluates the same batch after the step; with a
    full batch the two are identical). Losses below ``l^*`` are clamped (``D ≥ ε``,
    counted in ``clamped``).
    """
    m = _check_m(num_tasks)
    if optimizer is None:
        optimizer = optax.chain(optax.add_decayed_weights(gamma), optax.adam(learning_rate))
    p_init, p_apply = _learnable(0.0, optimizer)

    def init(dtype):
        xi, opt = p_init(dtype, m)
        return FamoState(xi, opt, jnp.ones((m,), dtype), jnp.array(False))

    def step(state, losses, gram):
        lmin = jnp.asarray(min_losses, losses.dtype)
        clamped = jnp.any(losses - lmin < 0)
        d = jnp.maximum(losses - lmin, 0) + eps
        d_prev = jnp.maximum(state.prev_losses - lmin, 0) + eps
        delta = jnp.log(d_prev) - jnp.log(d)
        _, softmax_vjp = jax.vjp(jax.nn.softmax, state.logits)
        (grad_xi,) = softmax_vjp(delta)
        xi_new, opt_new = p_apply(state.logits, state.opt_state, grad_xi)
        xi = jnp.where(state.has_prev, xi_new, state.logits)
        opt = jax.tree_util.tree_map(
            lambda a, b: jnp.where(state.has_prev, a, b), opt_new, state.opt_state
        )
        z = jax.nn.softmax(xi)
        c = jnp.sum(z / d)
        weights = z / (c * d)
        return weights, FamoState(xi, opt, losses, jnp.array(True)), clamped

    return LossWeighting(m, init, step, False, "famo")


class GradNormState(NamedTuple):
    """GradNorm: ``logits`` (weights ``m · softmax``), their optimizer's state, the
    first step's losses ``initial_losses`` and whether they are set."""

    logits: jax.Array
    opt_state: Any
    initial_losses: jax.Array
    has_initial: jax.Array


def gradnorm(
    num_tasks: int, *, alpha: float = 1.5, optimizer: optax.GradientTransformation | None = None
) -> LossWeighting:
    """GradNorm (Chen et al., ICML 2018, eqs. 1–2) on one shared layer's Gramian.

    ``G_i = w_i ‖∇_W l_i‖`` (the norms are ``√C_ii`` of ``gram=``, the Gramian of the
    chosen layer's Jacobian), ``Ḡ = mean_i G_i``, ``r_i = L̃_i / mean L̃`` with
    ``L̃_i = l_i / l_i(0)`` and ``l(0)`` the first step's losses. The weights are trained
    by the GradNorm loss ``Σ_i |G_i − Ḡ r_i^α|`` (target held constant) through
    ``w = m · softmax(logits)`` (so ``Σ w = m``: the paper renormalises after each
    step; LibMTL uses this softmax form) with ``optimizer`` (default
    ``optax.adam(1e-3)``). The step uses the current ``w`` and then updates it.
    LibMTL's GradNorm uses ``w = 1`` during its first epoch (its ``l(0)`` is the first
    epoch's mean); here GradNorm runs from step 0 with ``l(0)`` the first losses.
    """
    m = _check_m(num_tasks)
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer
    p_init, p_apply = _learnable(1.0, optimizer)

    def init(dtype):
        lg, opt = p_init(dtype, m)
        return GradNormState(lg, opt, jnp.ones((m,), dtype), jnp.array(False))

    def step(state, losses, gram):
        l0 = jnp.where(state.has_initial, state.initial_losses, losses)
        clamped = jnp.any(l0 <= 0)
        tiny = jnp.finfo(losses.dtype).tiny
        norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0))
        ratio = losses / jnp.maximum(l0, tiny)
        r = ratio / jnp.maximum(jnp.mean(ratio), tiny)

        def gradnorm_loss(logits):
            w = m * jax.nn.softmax(logits)
            g = w * norms
            target = jax.lax.stop_gradient(jnp.mean(g) * r**alpha)
            return jnp.sum(jnp.abs(g - target))

        weights = m * jax.nn.softmax(state.logits)
        lg, opt = p_apply(state.logits, state.opt_state, jax.grad(gradnorm_loss)(state.logits))
        return weights, GradNormState(lg, opt, l0, jnp.array(True)), clamped

    return LossWeighting(m, init, step, True, "gradnorm")


# -------------------------------------------------------------------- DB-MTL


class DbMtlState(NamedTuple):
    """State of :func:`db_mtl`: ``buffer`` (EMA of the per-task log-loss gradients, every
    leaf ``[m, ...]``), ``step``, last ``weights`` ``α``, ``skipped`` and ``clamped``."""

    buffer: Any
    step: jax.Array
    weights: jax.Array
    skipped: jax.Array
    clamped: jax.Array


def db_mtl(
    num_tasks: int, *, beta: float = 0.9, beta_sigma: float = 0.0, eps: float = 1e-8
) -> optax.GradientTransformationExtraArgs:
    """Dual-Balancing MTL (Lin et al., arXiv:2308.12029, 2023, Algorithm 1), over a
    Jacobian.

    Loss-scale balance: each task's gradient is that of ``log(l_i + ε)``, i.e.
    ``g_i = ∇l_i / (l_i + ε)``. Gradient-magnitude balance: an EMA
    ``ĝ_i ← g_i + β_t (ĝ_i − g_i)``, ``β_t = β / t^{σ}``, and the update
    ``Σ_i α_i ĝ_i`` with ``α_i = max_j ‖ĝ_j‖ / (‖ĝ_i‖ + ε)``. The EMA is of per-task
    gradient *vectors*, so this needs the Jacobian (not only its norms) and an
    ``[m, ...]`` buffer: ``update(jac, state, params=None, *, losses)`` with ``jac`` of
    the raw losses, every leaf ``[m, ...]`` (pass only the shared parameters' Jacobian
    to restrict it, as the paper does; the heads then take their own gradients).
    Negative losses are clamped to 0 (counted in ``clamped``); a NaN/inf step returns
    zeros and keeps the state (``skipped``). LibMTL ≥ 1.1.6's ``DB_MTL`` is this rule.
    """
    m = _check_m(num_tasks)

    def init(params):
        dt = _state_dtype(params, None)
        return DbMtlState(
            buffer=jax.tree_util.tree_map(
                lambda p: jnp.zeros((m, *jnp.shape(p)), jnp.result_type(p)), params
            ),
            step=jnp.zeros((), jnp.int32),
            weights=jnp.ones((m,), dt),
            skipped=jnp.zeros((), jnp.int32),
            clamped=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None, *, losses=None, **extra):
        del params, extra
        losses = _check_losses(losses, m)
        dt = state.weights.dtype
        lo = losses.astype(dt)
        finite = jnp.all(jnp.isfinite(lo)) & _all_finite(updates)
        clamped = jnp.any(lo < 0)
        scale = 1.0 / (jnp.maximum(jnp.where(finite, lo, 1.0), 0) + eps)
        t = state.step + 1
        b = beta / t.astype(dt) ** beta_sigma

        def ema(buf, g):
            g = jnp.where(finite, g, 0).astype(buf.dtype)
            g = g * scale.reshape((m,) + (1,) * (g.ndim - 1)).astype(buf.dtype)
            return g + b.astype(buf.dtype) * (buf - g)

        buffer = jax.tree_util.tree_map(ema, state.buffer, updates)
        norms = jnp.sqrt(jnp.maximum(jnp.diagonal(_jac.gramian(buffer)), 0)).astype(dt)
        alpha = jnp.max(norms) / (norms + eps)
        direction = _jac.combine(buffer, alpha)
        finite &= jnp.all(jnp.isfinite(alpha)) & _all_finite(direction)
        direction = jax.tree_util.tree_map(
            lambda d: jnp.where(finite, d, jnp.zeros_like(d)), direction
        )

        def keep(new, old):
            return jnp.where(finite, new, old)

        new_state = DbMtlState(
            buffer=jax.tree_util.tree_map(keep, buffer, state.buffer),
            step=keep(t, state.step),
            weights=keep(alpha, state.weights),
            skipped=state.skipped + (~finite).astype(jnp.int32),
            clamped=state.clamped + (finite & clamped).astype(jnp.int32),
        )
        return direction, new_state

    return optax.GradientTransformationExtraArgs(init, update)


# ------------------------------------------------------------- the transforms


def _shorthand(factory: Callable[..., LossWeighting]):
    """``jp.<name>(num_tasks, ..., dtype=None, nonfinite="zero")`` =
    ``loss_weighted(jp.loss_weighting.<name>(num_tasks, ...), dtype=, nonfinite=)``."""

    def transform(num_tasks: int, *, dtype: Any = None, nonfinite: str = "zero", **kwargs):
        return loss_weighted(factory(num_tasks, **kwargs), dtype=dtype, nonfinite=nonfinite)

    transform.__name__ = transform.__qualname__ = factory.__name__
    transform.__module__ = "jaxpareto"
    transform.__doc__ = (
        f"``jp.loss_weighting.{factory.__name__}`` as an optax transformation: "
        f"``loss_weighted(jp.loss_weighting.{factory.__name__}(num_tasks, **kwargs), "
        "dtype=dtype, nonfinite=nonfinite)`` (see :func:`loss_weighted`; ``updates`` is a "
        "``jp.loss_vjp`` result, or the gradient of ``jp.loss_objective`` with "
        "``losses=``).\n\n" + (factory.__doc__ or "")
    )
    return transform


#: The optax transforms of the rules, exported as ``jp.uncertainty``, ``jp.famo``, ...
TRANSFORMS = {
    f.__name__: _shorthand(f) for f in (equal, uncertainty, imtl_l, dwa, rlw, gls, famo, gradnorm)
}
