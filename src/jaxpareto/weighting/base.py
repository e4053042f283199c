"""The weighting protocol: an optax-like pair of pure functions over the Gramian.

A weighting maps the Gramian ``C = G Gᵀ`` (``[m, m]``), the losses ``l`` (``[m]``) and
optionally a preference ``r`` (``[m]``) to task weights ``w`` (``[m]``); the update
direction is ``Gᵀ w`` (:func:`jaxpareto.combine`). Its state is a NamedTuple that holds
the last weights and the solver's diagnostics, so it can be logged, checkpointed and
carried through ``jax.lax.scan``.

Conventions (every weighting follows them; ``tests/test_weighting_conventions.py`` checks)
------------------------------------------------------------------------------------------
* **Factory** ``name(defining=None, *, num_tasks=None, <options>, max_iter=..., tol=...)
  -> Weighting``: at most one positional parameter, the method's defining one
  (``preference`` for the preference-based methods, ``c`` for CAGrad, none for the
  others); everything else keyword-only. String options are ``Literal[...]``-typed and
  checked at construction (:func:`check_choice`); iteration caps are ``max_iter``,
  tolerances ``tol`` (former names go through :func:`renamed_option`, which warns). A
  fixed ``num_tasks`` (or one implied by a preference's length) is stored in
  :attr:`Weighting.num_tasks`; :func:`make_weighting` builds the tuple and checks it.
* **State** ``init(num_tasks, dtype=float32)``: a NamedTuple whose first fields are
  ``weights`` ``[m]`` (initially ``1/m``), ``status`` (int32, a
  :class:`jaxpareto.status.Status`), ``converged`` (bool) and ``iterations`` (int32)
  (:func:`core_fields`), then the method's own. ``m = 1`` always works: weight 1.
* **Update** ``update(gram, state, *, losses=None, preference=None, **extra)``, like
  optax's ``**extra_args``: unknown keywords are ignored.
* **Solver** ``name_weights(gram, ...) -> NameResult`` with the same four core fields
  first. The Gramian goes through :func:`gram_prologue` (shape and dtype checks, the
  working dtype, symmetrisation, the finite guard); non-finite input gives the method's
  documented finite fallback and ``status = NONFINITE_INPUT``, zero or rank-deficient
  input where the method has no answer gives ``DEGENERATE``, an exhausted ``max_iter``
  gives ``MAX_ITER`` (:func:`pick_status`).
* **Preference** one rule, :func:`normalize_preference`: positive and finite, rescaled to
  the simplex (``r / Σ r``), so ``r`` and ``2 r`` are the same preference for every
  method; a non-finite or non-positive traced preference falls back to ``1/m``.
* **Reprs**: results and states print shapes and scalars (:func:`short_repr`), never
  whole arrays.

Jacobian weightings
-------------------
A few methods need more than the Gramian: they act on the coordinates of the task
gradients (TrimmedMean's coordinate-wise trimmed mean, GradDrop's per-coordinate sign
dropout), so their update is not ``Gᵀw`` for any ``w``. They are still a pair of pure,
jittable functions, marked by the last field of :class:`Weighting`,
``needs="jacobian"``:

* ``init(num_tasks, dtype=float32, *, params=None) -> state``: :func:`jaxpareto.aggregate`
  passes the parameter pytree, for a state shaped like the parameters (MoCo's tracked
  gradients); methods that do not need it ignore it;
* ``update(jac, state, *, losses=None, preference=None, gram=None) -> (direction, state)``
  where ``jac`` is the Jacobian pytree (every leaf ``[m, ...]``, or a plain ``[m, n]``
  matrix) and ``direction`` is one gradient-shaped pytree (every leaf ``[...]``, the
  task axis removed); ``gram`` is the Gramian when the caller has it already.
  ``state.weights`` holds per-task diagnostics documented by the method.

:func:`jaxpareto.aggregate` (and every ``jp.<name>`` shorthand) dispatches on
``needs``: a Gramian weighting gets the Gramian and returns weights, a Jacobian
weighting gets the Jacobian and returns the direction; the finite guard, ``scale`` and
the state handling are the same. A Jacobian weighting cannot run on the Gramian
engine's :class:`jaxpareto.GramianVJP` (there is no Jacobian), which raises a
``TypeError`` naming the method.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import sys
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jaxpareto._validate import check_gram, check_preference, working_dtype
from jaxpareto.status import Status


class InitFn(Protocol):
    def __call__(self, num_tasks: int, dtype: Any = ...) -> NamedTuple: ...


class UpdateFn(Protocol):
    def __call__(
        self,
        gram: jax.Array,
        state: NamedTuple,
        *,
        losses: jax.Array | None = None,
        preference: jax.Array | None = None,
        **extra: Any,
    ) -> tuple[jax.Array, NamedTuple]: ...


class Weighting(NamedTuple):
    """A weighting: a pair of pure functions plus the task count when it is fixed.

    Attributes:
      init: ``init(num_tasks, dtype=float32) -> state``.
      update: ``update(gram, state, *, losses=None, preference=None) -> (weights, state)``.
      num_tasks: ``m`` when the weighting was built for a fixed number of tasks (e.g.
        from the length of its preference), else ``None``.
      needs: ``"gramian"`` (default: ``update`` takes the Gramian, returns weights) or
        ``"jacobian"`` (``update`` takes the Jacobian pytree, returns the direction; see
        the module docstring).
    """

    init: Callable[..., NamedTuple]
    update: Callable[..., tuple[jax.Array, NamedTuple]]
    num_tasks: int | None = None
    needs: str = "gramian"


def full_precision(fn: Callable) -> Callable:
    """Trace ``fn`` with ``jax.default_matmul_precision("highest")``.

    The solvers pivot on small ``m × m`` products whose accuracy matters (LP ratio
    tests, KKT checks); on GPU/TPU the default float32 matmul may run in TF32/bf16
    passes, which is too coarse for them and costs nothing to avoid at this size.
    """
    import functools

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped


def check_state_matches(gram: jax.Array, state: NamedTuple) -> None:
    """Trace-time check that a weighting's state was built for ``m = gram.shape[0]``."""
    if state.weights.shape != (gram.shape[0],):
        raise ValueError(
            f"`gram` has m={gram.shape[0]} tasks but the state holds "
            f"{state.weights.shape[0]} weights."
        )


def check_num_tasks(num_tasks) -> int:
    """A weighting's ``init`` argument: a static int ``>= 1`` (one task is allowed
    everywhere: its weight is 1 and the update is the gradient)."""
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, numbers.Integral) or num_tasks < 1:
        raise ValueError(f"`num_tasks` must be an int >= 1, got {num_tasks!r}.")
    return int(num_tasks)


def single_task(gram: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """The ``m = 1`` answer shared by every weighting: ``(weights [1] = 1, finite)``.

    With one task every method reduces to the gradient itself (``Δ_1 = {1}``; the
    projections, balances and dual problems are trivial), so the weight is 1 whatever
    the Gramian; ``finite`` says whether the Gramian was usable for the status flags.
    """
    return jnp.ones((1,), dtype), jnp.all(jnp.isfinite(gram))


def factory_preference(preference):
    """A factory's optional default ``preference``: ``None``, or a checked vector ``[m]``
    (positive, finite; :func:`jaxpareto._validate.check_preference`)."""
    if preference is None:
        return None
    preference = jnp.asarray(preference)
    if preference.ndim != 1:
        raise ValueError(f"`preference` must be a vector [m], got shape {preference.shape}.")
    return check_preference(preference, preference.shape[0])


# ------------------------------------------------------------------- the weighting kit


def status_array(status) -> jax.Array:
    """A :class:`~jaxpareto.status.Status` (or its int) as the int32 scalar array that
    results and states store."""
    return jnp.asarray(int(Status(int(status))), jnp.int32)


def pick_status(*, nonfinite=False, degenerate=False, converged=True) -> jax.Array:
    """The status of one solve, by precedence: ``NONFINITE_INPUT`` if ``nonfinite``, else
    ``DEGENERATE`` if ``degenerate``, else ``SUCCESSFUL`` if ``converged``, else
    ``MAX_ITER``. Arguments are bool scalars (traced or not); returns int32 ``[]``."""
    ok = jnp.where(converged, Status.SUCCESSFUL, Status.MAX_ITER)
    out = jnp.where(nonfinite, Status.NONFINITE_INPUT, jnp.where(degenerate, Status.DEGENERATE, ok))
    return out.astype(jnp.int32)


def core_fields(num_tasks: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    """The initial core fields of a weighting state: ``weights = 1/m``, ``status =
    SUCCESSFUL``, ``converged = True``, ``iterations = 0``; splat them into the state
    (``MyState(**core_fields(m, dtype), extra=...)``)."""
    m = check_num_tasks(num_tasks)
    return {
        "weights": jnp.full((m,), 1.0 / m, dtype),
        "status": status_array(Status.SUCCESSFUL),
        "converged": jnp.asarray(True),
        "iterations": jnp.zeros((), jnp.int32),
    }


def state_from_result(cls, result, like, **fields):
    """The next weighting state ``cls`` from a solver ``result``.

    Every field of ``cls`` comes from ``fields`` when given there (as given: e.g. the
    next PRNG key or step count), else from the result's field of the same name (the
    core fields and the method's diagnostics share their names), cast to the dtype of
    that field in ``like`` (the previous state), so a float32 state stays float32 whatever
    precision the solver worked in, and the state keeps its structure under ``lax.scan``.
    """
    out = dict(fields)
    for name in cls._fields:
        if name in out:
            continue
        value = getattr(result, name)
        old = getattr(like, name, None)
        if old is not None and hasattr(value, "astype") and hasattr(old, "dtype"):
            value = value.astype(old.dtype)
        out[name] = value
    return cls(**out)


class Prologue(NamedTuple):
    """What :func:`gram_prologue` hands a solver.

    Attributes:
      gram: ``[m, m]`` the symmetrised Gramian in the working dtype; the identity where
        the input was not finite (so the solve runs on harmless numbers).
      finite: bool ``[]`` the Gramian (and the losses, when given) were finite.
      m: the number of tasks (static).
      dtype: the working dtype (at least float32).
      out_dtype: the input's floating dtype, for the returned weights.
    """

    gram: jax.Array
    finite: jax.Array
    m: int
    dtype: Any
    out_dtype: Any


def gram_prologue(gram, *, losses=None, name: str = "gram") -> Prologue:
    """The shared start of every Gramian solver: checks, working dtype, finite guard.

    ``gram`` must be a floating ``[m, m]`` matrix with ``m >= 1`` (a ``ValueError`` /
    ``TypeError`` naming ``name`` otherwise); ``losses``, when given, must be ``[m]``.
    The Gramian is cast to the working dtype (float16/bfloat16 → float32) and
    symmetrised, ``½ (C + Cᵀ)``; when it (or the losses) holds a NaN/inf, the returned
    Gramian is the identity and ``finite`` is False, so the caller returns its finite
    fallback with ``status = NONFINITE_INPUT`` instead of propagating NaN.
    """
    gram = check_gram(gram, name, min_tasks=1)
    m = gram.shape[0]
    out_dtype = jnp.result_type(gram)
    dtype = working_dtype(gram)
    c = gram.astype(dtype)
    c = 0.5 * (c + c.T)
    finite = jnp.all(jnp.isfinite(c))
    if losses is not None:
        losses = jnp.asarray(losses)
        if losses.shape != (m,):
            raise ValueError(
                f"`losses` must have shape ({m},) to match `{name}`, got {losses.shape}."
            )
        finite = finite & jnp.all(jnp.isfinite(losses))
    c = jnp.where(finite, c, jnp.eye(m, dtype=dtype))
    return Prologue(c, finite, m, dtype, out_dtype)


def normalize_preference(preference, m: int, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """The one preference rule: ``(r / Σ r, invalid)``.

    ``None`` is the uniform preference ``1/m``. A concrete preference must be ``[m]``,
    finite and positive (:func:`jaxpareto._validate.check_preference` raises otherwise);
    a traced one with a non-finite or non-positive entry falls back to ``1/m`` and
    ``invalid`` (bool ``[]``) is True. Rescaling to the simplex makes ``r`` and ``c r``
    (``c > 0``) the same preference in every method.
    """
    if preference is None:
        return jnp.full((m,), 1.0 / m, dtype), jnp.asarray(False)
    r = check_preference(preference, m).astype(dtype)
    invalid = ~jnp.all(jnp.isfinite(r) & (r > 0))
    r = jnp.where(invalid, 1.0, r)
    return r / jnp.sum(r), invalid


def check_choice(value, name: str, choices) -> str:
    """A string option (typed ``Literal[...]``), checked at construction: the error names
    the argument and the allowed values."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {allowed}; got {value!r}.")
    return value


def renamed_option(value, old_value, *, old: str, new: str, default=None):
    """Resolve an option renamed from ``old`` to ``new`` (kept one release).

    Returns ``old_value`` with a :class:`DeprecationWarning` when only the old name was
    given, ``value`` when only the new one was, ``default`` when neither; both at once
    is a ``TypeError``.
    """
    if old_value is None:
        return default if value is None else value
    if value is not None:
        raise TypeError(f"pass `{new}` only (`{old}` is its deprecated former name).")
    warnings.warn(
        f"`{old}` is deprecated; use `{new}`.", DeprecationWarning, stacklevel=_caller_level()
    )
    return old_value


def _caller_level() -> int:
    """The ``stacklevel`` (for a ``warnings.warn`` in the calling function) of the first
    frame outside jaxpareto, so a deprecation points at the user's line."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("jaxpareto"):
        frame, level = frame.f_back, level + 1
    return level


def _accepts_extra(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def make_weighting(init, update, *, num_tasks=None, needs: str = "gramian") -> Weighting:
    """Build a :class:`Weighting`, the one factory builder.

    ``num_tasks`` (``None`` or an int ``>= 1``) is checked and stored; when it is fixed,
    ``init`` refuses another ``m``. An ``update`` without ``**extra`` is wrapped so that
    unknown keywords are ignored, as optax's ``update(..., **extra_args)`` does.
    """
    if num_tasks is not None:
        num_tasks = check_num_tasks(num_tasks)
        fixed, inner_init = num_tasks, init

        @functools.wraps(inner_init)
        def checked_init(n, dtype=jnp.float32, **kwargs):
            if check_num_tasks(n) != fixed:
                raise ValueError(f"`num_tasks`={n} but this weighting was built for m={fixed}.")
            return inner_init(n, dtype, **kwargs)  # e.g. key=, params= (Jacobian weightings)

        init = checked_init

    if not _accepts_extra(update):
        inner_update = update
        names = list(inspect.signature(inner_update).parameters)
        known = set(names[2:]) - {"losses", "preference"}  # keywords after (gram, state)

        @functools.wraps(inner_update)
        def tolerant_update(first, state, /, *, losses=None, preference=None, **extra):
            # `first` is the Gramian, or the Jacobian of a Jacobian weighting (which also
            # receives `gram=` as a keyword).
            passed = {k: v for k, v in extra.items() if k in known}
            return inner_update(first, state, losses=losses, preference=preference, **passed)

        update = tolerant_update

    check_choice(needs, "needs", ("gramian", "jacobian"))
    return Weighting(init, update, num_tasks, needs)


def weighting_factory(fn=None, *, legacy_positional: tuple[str, ...] = ()):
    """Decorator giving a factory ``fn(...) -> Weighting`` the kit's conventions.

    * ``num_tasks=None`` becomes a keyword-only parameter when ``fn`` has none; a given
      value is checked against the ``m`` the weighting fixes itself (e.g. from its
      preference's length) and stored in :attr:`Weighting.num_tasks`.
    * The result goes through :func:`make_weighting` (``update`` ignores unknown
      keywords; a fixed ``num_tasks`` is enforced by ``init``).
    * ``legacy_positional`` names keyword-only parameters that used to be positional:
      passing them by position still works for one release, with a
      :class:`DeprecationWarning`.
    """
    if fn is None:
        return functools.partial(weighting_factory, legacy_positional=legacy_positional)
    sig = inspect.signature(fn)
    has_m = "num_tasks" in sig.parameters
    n_pos = sum(
        p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and p.name not in legacy_positional
        for p in sig.parameters.values()
    )

    @functools.wraps(fn)
    def factory(*args, **kwargs):
        if len(args) > n_pos:
            extra = args[n_pos:]
            if len(extra) > len(legacy_positional):
                raise TypeError(
                    f"{fn.__name__}() takes at most {n_pos} positional argument(s), got "
                    f"{len(args)}."
                )
            names = legacy_positional[: len(extra)]
            warnings.warn(
                f"passing {', '.join(names)} to {fn.__name__}() by position is deprecated; "
                "pass them by keyword.",
                DeprecationWarning,
                stacklevel=_caller_level(),
            )
            for name, value in zip(names, extra):
                if name in kwargs:
                    raise TypeError(f"{fn.__name__}() got multiple values for `{name}`.")
                kwargs[name] = value
            args = args[:n_pos]
        m = kwargs.get("num_tasks") if has_m else kwargs.pop("num_tasks", None)
        w = fn(*args, **kwargs)
        if m is not None:
            m = check_num_tasks(m)
            if w.num_tasks is not None and w.num_tasks != m:
                raise ValueError(
                    f"`num_tasks`={m} disagrees with the m={w.num_tasks} that "
                    f"{fn.__name__}()'s arguments imply."
                )
        return make_weighting(
            w.init, w.update, num_tasks=w.num_tasks if m is None else m, needs=w.needs
        )

    params = list(sig.parameters.values())
    if legacy_positional:
        params = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.name in legacy_positional else p
            for p in params
        ]
    if not has_m:
        cut = next(
            (i for i, p in enumerate(params) if p.kind is inspect.Parameter.KEYWORD_ONLY),
            len(params),
        )
        m_param = inspect.Parameter("num_tasks", inspect.Parameter.KEYWORD_ONLY, default=None)
        params.insert(cut, m_param)
    factory.__signature__ = sig.replace(parameters=params)
    return factory


# ------------------------------------------------------------------------ short reprs

_STATUS_FIELDS = frozenset({"status", "stop_reason", "failure", "lp_status"})


def _short_leaf(x, status: bool = False) -> str:
    if isinstance(x, (bool, numbers.Number)) or x is None:
        return repr(x)
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        leaves = jax.tree_util.tree_leaves(x)
        if not leaves:
            return repr(x)
        if len(leaves) == 1:
            return f"{type(x).__name__}({_short_leaf(leaves[0])})"
        return f"{type(x).__name__}({len(leaves)} leaves)"
    if shape == () and not isinstance(x, jax.core.Tracer):
        try:
            v = x.item()
        except Exception:  # noqa: BLE001 - e.g. a PRNG key array
            v = None
        if isinstance(v, bool):
            return repr(v)
        if isinstance(v, int):
            if status:
                try:
                    return Status(v).name
                except ValueError:
                    return str(v)
            return str(v)
        if isinstance(v, float):
            return f"{v:.4g}"
    try:
        kind = jnp.dtype(dtype)
        abbrev = {"f": "f", "i": "i", "u": "u", "b": "bool", "c": "c"}.get(kind.kind, str(kind))
        name = f"{abbrev}{kind.itemsize * 8}" if abbrev in "fiuc" else abbrev
    except TypeError:
        name = str(dtype)
    return f"{name}[{','.join(str(d) for d in shape)}]"


def short_repr(obj) -> str:
    """``Name(field=f32[3], status=SUCCESSFUL, converged=True, ...)``: shapes for arrays,
    values for concrete scalars (statuses by name), nested NamedTuples recursively."""
    fields = getattr(obj, "_fields", None)
    if fields is None:
        return _short_leaf(obj)
    parts = []
    for name in fields:
        v = getattr(obj, name)
        text = short_repr(v) if hasattr(v, "_fields") else _short_leaf(v, name in _STATUS_FIELDS)
        parts.append(f"{name}={text}")
    return f"{type(obj).__name__}({', '.join(parts)})"


def with_short_repr(cls):
    """Class decorator: give a NamedTuple result or state the :func:`short_repr`."""
    cls.__repr__ = short_repr
    return cls


def install_short_reprs(namespace: dict, names) -> None:
    """Give every NamedTuple class among ``names`` in ``namespace`` the short repr (a
    package calls it on its ``__all__``, so a new public result cannot miss it)."""
    for name in names:
        obj = namespace.get(name)
        if isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields"):
            # Only the generated repr is replaced; a class's own __repr__ stays.
            if obj is not Weighting and obj.__repr__.__module__ == "collections":
                with_short_repr(obj)
