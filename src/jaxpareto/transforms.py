"""Weightings as optax gradient transformations over a Jacobian pytree.

::

    tx = optax.chain(jp.epo(preference=r), optax.adam(1e-3))
    state = tx.init(params)
    losses, jac = jp.value_and_jacobian(loss_fn)(params, batch)
    updates, state = tx.update(jac, state, params, losses=losses)
    params = optax.apply_updates(params, updates)

The transform receives the Jacobian (every leaf ``[m, ...]``) as ``updates``, computes
the Gramian ``C = G Gᵀ``, asks the weighting for ``w`` and returns ``Σ_i w_i G_i``, a
pytree shaped like the parameters that the next transforms in the chain (adam, sgd,
clipping, schedules) treat as an ordinary gradient.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxpareto import _guard
from jaxpareto import jacobian as _jac
from jaxpareto import weighting as _w
from jaxpareto._validate import check_float


class AggregateState(NamedTuple):
    """State of :func:`aggregate`.

    Attributes:
      scaled_weights: ``[m]`` the task weights of the last update (after ``scale``);
        also readable as ``state.weights``. (Named apart from ``inner.weights``, the
        weighting's own, so ``optax.tree_utils.tree_get(state, "weights")`` finds one.)
      inner: the weighting's own state, with its diagnostics (e.g. EPO's
        ``non_uniformity`` and ``lp_status``, MGDA's ``objective``).
      skipped: ``int32`` number of updates so far whose Jacobian or losses held a
        NaN/inf; such an update is all zeros and leaves ``weights``/``inner`` as they
        were, so one bad batch never writes a non-finite parameter.
    """

    scaled_weights: jax.Array
    inner: NamedTuple
    skipped: jax.Array

    @property
    def weights(self) -> jax.Array:
        """``[m]`` the task weights of the last update (after ``scale``)."""
        return self.scaled_weights


def _num_tasks(jac) -> int:
    leaves = jax.tree_util.tree_leaves(jac)
    if not leaves or any(l.ndim == 0 for l in leaves):
        raise ValueError(
            "`updates` must be a Jacobian pytree whose leaves have a leading task axis m."
        )
    return leaves[0].shape[0]


def _weight_dtype(dtype):
    """Weights are solved at least in float32 (half-precision Jacobians included)."""
    return jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype


def _gramian_and_combiner(updates):
    """``(C, w ↦ Σ_i w_i ∇l_i)`` for what an aggregator receives as ``updates``: a
    Jacobian pytree (every leaf ``[m, ...]``; :func:`jaxpareto.gramian` and
    :func:`jaxpareto.combine`), or the Gramian engine's :class:`jaxpareto.GramianVJP`
    (its ``gram`` and its one reverse pass ``vjp(w)``), so that one update rule — one
    finite guard, one scale, one state — serves both."""
    gram = getattr(updates, "gram", None)
    vjp = getattr(updates, "vjp", None)
    if gram is not None and callable(vjp):
        return gram, vjp
    _num_tasks(updates)
    return _jac.gramian(updates), lambda w: _jac.combine(updates, w)


def task_losses(losses, value, m: int):
    """The ``[m]`` task losses of an ``update`` call, checked, or ``None``.

    ``losses=`` is the loss vector. ``value=`` keeps optax's meaning, a scalar (read by
    ``optax.contrib.reduce_on_plateau``, ``optax.apply_if_finite``'s chain members and
    other transforms of the chain), and is ignored here; a vector ``value`` of length
    ``m`` is still accepted as the losses for one release, with a ``DeprecationWarning``.
    """
    if losses is not None:
        losses = check_float(losses, "losses")
        if losses.shape != (m,):
            raise ValueError(f"`losses` must have shape ({m},), got {losses.shape}.")
        return losses
    if value is None or jnp.ndim(value) == 0:
        return None
    value = check_float(value, "value")
    if value.shape != (m,):
        raise ValueError(f"`value` (the losses) must have shape ({m},), got {value.shape}.")
    warnings.warn(
        "Passing the task losses as `value=` is deprecated: pass `losses=`; `value` is "
        "optax's scalar objective.",
        DeprecationWarning,
        stacklevel=3,
    )
    return value


def aggregate(
    weighting: _w.Weighting,
    *,
    num_tasks: int | None = None,
    scale: str | float = "unit",
    dtype: Any = None,
    nonfinite: str = "zero",
) -> optax.GradientTransformationExtraArgs:
    """Turns a weighting into an optax transformation over a Jacobian pytree.

    ``update(jac, state, params=None, *, losses=None, preference=None, **extra)``:

    * ``jac``: the Jacobian, every leaf ``[m, ...]`` (e.g. from
      :func:`jaxpareto.value_and_jacobian`), or the Gramian engine's
      :class:`jaxpareto.GramianVJP` (from :func:`jaxpareto.gramian_vjp`: the
      Gramian without the Jacobian, and one reverse pass for the direction);
    * ``losses``: ``[m]`` task losses (required by EPO, PMTL, Chebyshev and the
      loss-based MGDA normalizations). ``value`` keeps optax's meaning (a scalar, for
      the other members of a chain) and is ignored; a vector ``value`` is read as the
      losses for one release, with a ``DeprecationWarning``;
    * ``preference``: ``[m]`` run-time preference overriding the one fixed at
      construction (PPE navigation and hypernetworks change it every step).

    It returns ``d = Σ_i s·w_i ∇l_i`` with ``w`` the weighting's weights (each method's
    docstring says what they satisfy: on the simplex for MGDA, EPO, PMTL, linear and
    Chebyshev; ``w ≥ p`` componentwise and not normalised for UPGrad and DualProj, whose
    preference ``p`` is itself rescaled to the simplex) and ``s = 1`` for
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
      nonfinite: what a step whose Jacobian or losses hold a NaN/inf returns.
        ``"zero"`` (default): exact zeros, so the parameters never change on such a
        step (the optimizer after it still sees a zero gradient). ``"nan"``: a NaN
        update, for a downstream ``optax.apply_if_finite``, which then skips the rest of
        the chain without touching its state and counts consecutive bad steps:
        ``optax.chain(jp.epo(r, nonfinite="nan"), optax.apply_if_finite(adam, 3))``.
        Either way the weights and the weighting's state keep their last values and
        ``skipped`` counts the step. (``optax.apply_if_finite`` around the whole chain
        cannot work: its rejected branch returns the Jacobian's shape.)
    """
    if nonfinite not in ("zero", "nan"):
        raise ValueError(f"`nonfinite` must be 'zero' or 'nan', got {nonfinite!r}.")
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
        if weighting.needs == "jacobian":  # e.g. MoCo's tracked gradients are shaped by params
            inner = weighting.init(m_static, wdtype, params=params)
        else:
            inner = weighting.init(m_static, wdtype)
        return AggregateState(
            scaled_weights=jnp.asarray(inner.weights, wdtype),
            inner=inner,
            skipped=jnp.zeros((), jnp.int32),
        )

    def update(
        updates, state, params=None, *, losses=None, value=None, preference=None, **extra_args
    ):
        del params, extra_args
        jacobian_based = weighting.needs == "jacobian"
        if jacobian_based and callable(getattr(updates, "vjp", None)):
            raise TypeError(
                "This weighting needs the Jacobian (Weighting.needs='jacobian'); the Gramian "
                "engine's GramianVJP has none: pass the Jacobian pytree."
            )
        gram, combine = _gramian_and_combiner(updates)
        m = gram.shape[0]
        if state.weights.shape != (m,):
            raise ValueError(
                f"`updates` (the Jacobian) has m={m} tasks but the transform was built "
                f"for m={state.weights.shape[0]}. To accumulate micro-batches, accumulate "
                "the Jacobian (jp.accumulate_jacobian), not the combined update."
            )
        value = task_losses(losses, value, m)
        finite = _guard.all_finite(gram, value)
        # Solve on a harmless stand-in when the step is bad, so no NaN enters the state.
        safe_gram = jnp.where(finite, gram, jnp.eye(m, dtype=gram.dtype))
        safe_value = None if value is None else jnp.where(finite, value, jnp.ones_like(value))
        if jacobian_based:
            # Jacobian weightings return the direction; their state holds the weights.
            safe_jac = jax.tree_util.tree_map(lambda g: jnp.where(finite, g, 0), updates)
            raw, inner = weighting.update(
                safe_jac, state.inner, losses=safe_value, preference=preference, gram=safe_gram
            )
            weights = inner.weights
            factor = m if scale == "num_tasks" else (1.0 if isinstance(scale, str) else scale)
            combine = lambda w: jax.tree_util.tree_map(lambda d: d * factor, raw)  # noqa: E731
        else:
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
        fill = 0.0 if nonfinite == "zero" else jnp.nan
        direction = _guard.zero_unless_finite(finite, combine(weights), fill)
        new_state = AggregateState(
            scaled_weights=_guard.keep_if_finite(finite, weights, state.scaled_weights),
            inner=_guard.keep_if_finite(finite, inner, state.inner),
            skipped=state.skipped + (~finite).astype(jnp.int32),
        )
        return direction, new_state

    return optax.GradientTransformationExtraArgs(init, update)


class AccumulateJacobianState(NamedTuple):
    """State of :func:`accumulate_jacobian`.

    Attributes:
      jacobian_sum: running sum of the micro-batch Jacobians (every leaf ``[m, ...]``).
      losses_sum: ``[m]`` running sum of the micro-batch losses.
      mini_step: ``int32`` micro-batches accumulated since the last real update.
      inner: the wrapped transformation's state.
    """

    jacobian_sum: Any
    losses_sum: jax.Array
    mini_step: jax.Array
    inner: Any


def accumulate_jacobian(
    inner: optax.GradientTransformation, every_k: int, *, num_tasks: int
) -> optax.GradientTransformationExtraArgs:
    """Gradient accumulation for Jacobian methods: weight the *accumulated* Jacobian.

    ``optax.MultiSteps`` averages the updates it receives, which for a chain starting
    with a jaxpareto aggregator means averaging per-micro-batch *weighted* directions,
    each with weights solved on one micro-batch's Gramian (and it cannot wrap the chain
    at all: its buffer is shaped like the parameters, not like the Jacobian). The right
    accumulation for a weighting that is a function of the Gramian is over the
    Jacobian: with ``k`` equal micro-batches ``B_1..B_k`` of the batch ``B``,
    ``J(B) = (1/k) Σ_j J(B_j)`` and ``l(B) = (1/k) Σ_j l(B_j)``, so after ``k`` calls
    the wrapped transformation sees exactly the large batch's Jacobian and losses and
    solves its weights once. The other ``k − 1`` calls return zeros and leave the inner
    state alone.

    ``update(jac, state, params=None, *, losses=None, **extra)`` takes one micro-batch's
    Jacobian and losses.

    Args:
      inner: a transformation over the Jacobian, e.g.
        ``optax.chain(jp.epo(r), optax.adam(1e-3))``.
      every_k: micro-batches per update (a positive int).
      num_tasks: ``m`` (the accumulator holds an ``[m, ...]`` copy of the parameters).
    """
    if isinstance(every_k, bool) or not isinstance(every_k, int) or every_k < 1:
        raise ValueError(f"`every_k` must be a positive int, got {every_k!r}.")
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"`num_tasks` must be a positive int, got {num_tasks!r}.")
    inner = optax.with_extra_args_support(inner)

    def init(params):
        leaves = jax.tree_util.tree_leaves(params)
        ldtype = _weight_dtype(jnp.result_type(*leaves)) if leaves else jnp.float32
        return AccumulateJacobianState(
            jacobian_sum=jax.tree_util.tree_map(
                lambda p: jnp.zeros((num_tasks, *jnp.shape(p)), jnp.result_type(p)), params
            ),
            losses_sum=jnp.zeros((num_tasks,), ldtype),
            mini_step=jnp.zeros((), jnp.int32),
            inner=inner.init(params),
        )

    def update(updates, state, params=None, *, losses=None, value=None, **extra):
        m = _num_tasks(updates)
        if m != num_tasks:
            raise ValueError(
                f"`updates` (the Jacobian) has m={m} tasks, the accumulator "
                f"was built for num_tasks={num_tasks}."
            )
        losses = task_losses(losses, value, m)
        jac_sum = jax.tree_util.tree_map(
            lambda a, g: a + g.astype(a.dtype), state.jacobian_sum, updates
        )
        loss_sum = state.losses_sum + (
            0.0 if losses is None else losses.astype(state.losses_sum.dtype)
        )
        step = state.mini_step + 1

        def emit(_):
            mean_jac = jax.tree_util.tree_map(lambda a: a / every_k, jac_sum)
            mean_losses = None if losses is None else loss_sum / every_k
            out, new_inner = inner.update(
                mean_jac, state.inner, params, losses=mean_losses, value=value, **extra
            )
            return (
                out,
                new_inner,
                jax.tree_util.tree_map(jnp.zeros_like, jac_sum),
                jnp.zeros_like(loss_sum),
                jnp.zeros_like(step),
            )

        def wait(_):
            zeros = jax.tree_util.tree_map(lambda g: jnp.zeros(g.shape[1:], g.dtype), updates)
            return zeros, state.inner, jac_sum, loss_sum, step

        out, new_inner, jac_sum, loss_sum, step = jax.lax.cond(step >= every_k, emit, wait, None)
        return out, AccumulateJacobianState(jac_sum, loss_sum, step, new_inner)

    return optax.GradientTransformationExtraArgs(init, update)


def _shorthand(name: str) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """``jp.<name>(...)``: ``aggregate(jp.weighting.<name>(...), num_tasks=, scale=,
    dtype=)``.

    The signature is the factory's, plus ``num_tasks``/``scale``/``dtype``, with every
    option defaulting to ``None`` ("the factory's default"): ``inspect.signature``, and
    with it ``optax.inject_hyperparams``, sees each hyperparameter by name, and only
    the ones a caller sets become injected (traceable) hyperparameters, e.g.
    ``optax.inject_hyperparams(jp.epo)(preference=r)``. Options that shape the solver
    (iteration caps, modes) must then be listed in ``static_args``.
    """
    factory = getattr(_w, name)
    sig = inspect.signature(factory)
    own = [
        p if p.default is inspect.Parameter.empty else p.replace(default=None)
        for p in sig.parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    extra = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d)
        for n, d in (("num_tasks", None), ("scale", "unit"), ("dtype", None), ("nonfinite", "zero"))
        if n not in sig.parameters
    ]

    def transform(*args, num_tasks=None, scale="unit", dtype=None, nonfinite="zero", **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if "num_tasks" in sig.parameters and num_tasks is not None:
            kwargs["num_tasks"] = num_tasks
        return aggregate(
            factory(*args, **kwargs),
            num_tasks=num_tasks,
            scale=scale,
            dtype=dtype,
            nonfinite=nonfinite,
        )

    transform.__signature__ = sig.replace(
        parameters=[*own, *extra], return_annotation=optax.GradientTransformationExtraArgs
    )
    transform.__name__ = transform.__qualname__ = name
    transform.__module__ = __name__
    transform.__doc__ = (
        f"``jp.weighting.{name}`` as an optax transformation over a Jacobian pytree:\n"
        f"``aggregate(jp.weighting.{name}(...), num_tasks=num_tasks, scale=scale, "
        "dtype=dtype, nonfinite=nonfinite)`` (see :func:`aggregate` for ``update``'s arguments and the "
        "finite guard). An option left at ``None`` takes the factory's default.\n\n"
        + inspect.cleandoc(factory.__doc__ or "")
    )
    return transform


# One transform per weighting of jp.weighting (hv_gradient's is per model: run the
# models under a named vmap/shard_map axis, see its docstring).
SHORTHANDS = (
    "mgda",
    "epo",
    "pmtl",
    "linear",
    "chebyshev",
    "smooth_chebyshev",
    "upgrad",
    "dualproj",
    "pcgrad",
    "cagrad",
    "nash_mtl",
    "imtl_g",
    "aligned_mtl",
    "krum",
    "trimmed_mean",
    "random",
    "sum",
    "constant",
    "config",
    "gradvac",
    "graddrop",
    "fairgrad",
    "pbi",
    "cosmos",
    "aasf",
    "aug_chebyshev",
    "pnorm",
    "sdmgrad",
    "moco",
    "hv_gradient",
)
mgda = _shorthand("mgda")
epo = _shorthand("epo")
pmtl = _shorthand("pmtl")
linear = _shorthand("linear")
chebyshev = _shorthand("chebyshev")
smooth_chebyshev = _shorthand("smooth_chebyshev")
upgrad = _shorthand("upgrad")
dualproj = _shorthand("dualproj")
pcgrad = _shorthand("pcgrad")
cagrad = _shorthand("cagrad")
nash_mtl = _shorthand("nash_mtl")
imtl_g = _shorthand("imtl_g")
aligned_mtl = _shorthand("aligned_mtl")
krum = _shorthand("krum")
trimmed_mean = _shorthand("trimmed_mean")
# `random` and `sum` shadow the builtins from here on: this module never calls them.
random = _shorthand("random")
sum = _shorthand("sum")
constant = _shorthand("constant")
config = _shorthand("config")
gradvac = _shorthand("gradvac")
graddrop = _shorthand("graddrop")
fairgrad = _shorthand("fairgrad")
pbi = _shorthand("pbi")
cosmos = _shorthand("cosmos")
aasf = _shorthand("aasf")
aug_chebyshev = _shorthand("aug_chebyshev")
pnorm = _shorthand("pnorm")
sdmgrad = _shorthand("sdmgrad")
moco = _shorthand("moco")
hv_gradient = _shorthand("hv_gradient")
