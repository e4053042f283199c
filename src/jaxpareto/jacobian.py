"""Per-task Jacobians, their Gramians, and combination of rows.

A multi-task loss ``fun(params, ...) -> losses[m]`` has the Jacobian ``G`` whose row
``i`` is ``∇ l_i``. jaxpareto keeps ``G`` as a pytree shaped like ``params`` with a
leading task axis ``m``. Everything downstream only needs

* the Gramian ``C = G Gᵀ`` (``[m, m]``), a sum over leaves of ``J_leaf J_leafᵀ``, and
* the combined direction ``d = Gᵀ w = Σ_i w_i ∇ l_i`` for task weights ``w``.

The shared-representation step of MGDA-UB (Sener & Koltun, "Multi-Task Learning as
Multi-Objective Optimization", NeurIPS 2018, §3.3 and Alg. 2) is ``mtl_value_and_grad``.
"""

from __future__ import annotations

import functools
import operator
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxpareto import _guard
from jaxpareto._validate import check_float

_MODES = ("rev", "rows", "vmap", "fwd", "chunked")
_HIGHEST = jax.lax.Precision.HIGHEST

# Up to ROWS_MAX_TASKS tasks, on a single CPU device, the Jacobian is taken as m separate
# VJPs (a Python loop, unrolled in the program): at n ≥ 1e5 this was 1.5–2× faster than
# the vmapped backward pass at every m ≤ 64 measured (benchmarks/scaling.py), and equal
# at n = 1e4; past it the unrolled program grows too long to compile quickly and the
# vmapped pass is used. The Gramian and the combination then work on the rows.
ROWS_MAX_TASKS = 64


def row_layout() -> bool:
    """Whether this process uses the row layout for the Jacobian step.

    Chosen once per trace from the backend. On a single CPU device XLA fuses the
    vmapped ``[m, …]`` Jacobian leaves into transposing copies that cost more than the
    backward passes themselves, while ``m`` separate VJPs whose rows feed the Gramian
    and the combination directly never build the stacked Jacobian at all. On
    accelerators (batched kernels) and whenever several devices are visible (the SPMD
    partitioner must see one ``[m, …]`` block per leaf so that each model-sharded leaf
    reduces a single ``m × m`` partial Gramian) the stacked, vmapped layout is used.
    """
    return jax.default_backend() == "cpu" and jax.device_count() == 1


# Trace-time hints: a stacked Jacobian leaf built by the row layout remembers its rows,
# so that `gramian` and `combine` traced in the same program contract the rows and the
# stacked leaf becomes dead code. Keyed by id, checked through a weak reference, and
# only ever recorded for tracers (concrete arrays are already materialised).
_ROWS: dict[int, tuple[weakref.ref, tuple]] = {}


def _remember_rows(stacked, rows) -> None:
    if isinstance(stacked, jax.core.Tracer):
        key = id(stacked)
        _ROWS[key] = (weakref.ref(stacked, lambda _, key=key: _ROWS.pop(key, None)), tuple(rows))


def _rows_of(leaf):
    """The rows a stacked leaf was built from in this trace, or ``None``."""
    entry = _ROWS.get(id(leaf))
    if entry is not None and entry[0]() is leaf:
        return entry[1]
    return None


def _stack_rows(rows_per_task):
    """Stacks per-task cotangent pytrees into one pytree with a leading task axis."""

    def stack(*rows):
        out = jnp.stack(rows)
        _remember_rows(out, rows)
        return out

    return jax.tree_util.tree_map(stack, *rows_per_task)


def _split_args(args: Sequence[Any], argnums):
    """Returns (tuple of differentiated args, function rebuilding the full arg list)."""
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)
    for n in nums:
        if not isinstance(n, int) or not -len(args) <= n < len(args):
            raise ValueError(f"`argnums` {argnums} out of range for {len(args)} positional args.")
    nums = tuple(n % len(args) for n in nums)

    def rebuild(diff):
        full = list(args)
        for n, d in zip(nums, diff):
            full[n] = d
        return full

    return single, tuple(args[n] for n in nums), rebuild


def _check_losses(losses) -> None:
    if not hasattr(losses, "ndim") or losses.ndim != 1:
        shape = getattr(losses, "shape", type(losses))
        raise ValueError(f"`fun` must return a 1-D vector of m task losses, got shape {shape}.")


def _check_differentiable(tree, name: str) -> None:
    for leaf in jax.tree_util.tree_leaves(tree):
        if not (hasattr(leaf, "dtype") or isinstance(leaf, (int, float, complex))):
            raise TypeError(
                f"{name} has a leaf of type {type(leaf).__name__} that is not an array "
                "(e.g. a function inside an equinox Module); use "
                "jp.filter_value_and_jacobian, which differentiates the floating arrays "
                "and passes everything else through."
            )
        dtype = jnp.result_type(leaf)
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.complexfloating)):
            raise TypeError(
                f"{name} has a leaf of dtype {dtype}; Jacobians need floating parameters."
            )


def value_and_jacobian(
    fun: Callable[..., Any],
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    mode: str = "rev",
    chunk_size: int | None = None,
) -> Callable[..., Any]:
    """Returns a function computing ``fun``'s task losses and their Jacobian.

    Like :func:`jax.value_and_grad`, but ``fun`` returns a vector of ``m`` losses and
    the second output is the Jacobian as a pytree shaped like the differentiated
    argument(s), each leaf with a leading task axis ``m``.

    Args:
      fun: ``fun(*args) -> losses[m]`` (or ``(losses[m], aux)`` with ``has_aux``).
      argnums: int or sequence of ints, the positional argument(s) to differentiate.
      has_aux: whether ``fun`` returns ``(losses, aux)``.
      mode: ``"rev"`` (default): one forward pass and ``m`` vector-Jacobian products,
        in the layout that is fastest for the backend (:func:`row_layout`): on a
        single CPU device and ``m ≤ ROWS_MAX_TASKS`` (64), ``"rows"``; else ``"vmap"``.
        ``"rows"``: the ``m`` VJPs one after another; each stacked leaf remembers its
        rows for the rest of the trace, so a :func:`gramian` / :func:`combine`
        traced in the same ``jax.jit`` program works on the rows and the ``[m, n]``
        Jacobian is never written. ``"vmap"``: the VJPs vmapped over the rows of the
        identity (one batched backward pass).
        ``"fwd"``: forward mode (``jax.jacfwd``), for tiny parameter counts.
        ``"chunked"``: like ``"rev"`` but the ``m`` VJPs run ``chunk_size`` at a time
        with ``jax.lax.map`` to bound the memory of the backward passes.
      chunk_size: rows per chunk for ``mode="chunked"`` (default 1).

    Returns:
      A function with the signature of ``fun`` returning ``(losses, jac)``, or
      ``((losses, aux), jac)`` with ``has_aux``. ``jac`` is a tuple of pytrees when
      ``argnums`` is a sequence.
    """
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {_MODES}, got {mode!r}.")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}.")

    def wrapped(*args):
        single, diff_args, rebuild = _split_args(args, argnums)
        _check_differentiable(diff_args, "The differentiated argument")

        def f(*diff):
            out = fun(*rebuild(diff))
            losses, aux = out if has_aux else (out, None)
            _check_losses(losses)
            return losses, aux

        if mode == "fwd":

            def f_fwd(*diff):
                losses, aux = f(*diff)
                return losses, (losses, aux)

            jac, (losses, aux) = jax.jacfwd(
                f_fwd, argnums=tuple(range(len(diff_args))), has_aux=True
            )(*diff_args)
        else:
            losses, vjp_fn, aux = jax.vjp(f, *diff_args, has_aux=True)
            jac = _jacobian_rows(vjp_fn, losses, mode, chunk_size)
        jac = jac[0] if single else tuple(jac)
        return ((losses, aux), jac) if has_aux else (losses, jac)

    return wrapped


def _is_inexact_array(x) -> bool:
    return hasattr(x, "dtype") and hasattr(x, "shape") and jnp.issubdtype(x.dtype, jnp.inexact)


def filter_value_and_jacobian(
    fun: Callable[..., Any],
    has_aux: bool = False,
    mode: str = "rev",
    chunk_size: int | None = None,
) -> Callable[..., Any]:
    """:func:`value_and_jacobian` w.r.t. the floating arrays of the first argument.

    Equinox's ``filter_*`` convention: ``fun(model, *args)`` where ``model`` is any
    pytree (an equinox ``Module``, a flax ``nnx.State``, a dict) whose leaves may be
    non-arrays (activation functions, ints, strings). The floating-point array leaves
    are differentiated; every other leaf is held fixed and its place in the returned
    Jacobian pytree is ``None`` (as in ``equinox.filter_grad``), so
    :func:`gramian`, :func:`combine` and the aggregators, which skip ``None``
    subtrees, apply unchanged.

    Returns:
      ``f(model, *args) -> (losses, jac)`` (``((losses, aux), jac)`` with ``has_aux``).
    """

    def wrapped(model, *args):
        leaves, treedef = jax.tree_util.tree_flatten(model, is_leaf=lambda x: x is None)
        mask = [_is_inexact_array(leaf) for leaf in leaves]
        diff = [leaf if keep else None for leaf, keep in zip(leaves, mask)]

        def rebuild(diff_leaves):
            full = [d if keep else leaf for d, leaf, keep in zip(diff_leaves, leaves, mask)]
            return jax.tree_util.tree_unflatten(treedef, full)

        def f(diff_leaves, *rest):
            return fun(rebuild(diff_leaves), *rest)

        out, jac = value_and_jacobian(f, has_aux=has_aux, mode=mode, chunk_size=chunk_size)(
            diff, *args
        )
        return out, jax.tree_util.tree_unflatten(treedef, list(jac))

    return wrapped


def _jacobian_rows(vjp_fn, losses, mode: str, chunk_size: int | None):
    """The ``m`` VJPs of ``vjp_fn`` against the rows of the identity, in ``mode``."""
    m = losses.shape[0]
    basis = jnp.eye(m, dtype=losses.dtype)
    if mode == "rev":
        mode = "rows" if row_layout() and m <= ROWS_MAX_TASKS else "vmap"
    if mode == "rows":
        return _stack_rows([vjp_fn(basis[i]) for i in range(m)])
    if mode == "vmap":
        return jax.vmap(vjp_fn)(basis)
    return jax.lax.map(vjp_fn, basis, batch_size=chunk_size or 1)


def _block_size(m: int) -> int:
    """Columns per Gramian block on the CPU layout: an ``[m, bs]`` block of about 1 MiB
    of float32, so that each block is read from memory once and multiplied in cache."""
    return max(4096, (1 << 18) // max(m, 1))


def _blocked_gram(block: Callable[[Any, int], jax.Array], size: int, m: int, dtype) -> jax.Array:
    """``Σ_b B_b B_bᵀ`` over the column blocks ``B_b = block(b·bs, bs)`` (``[m, bs]``,
    the last one shorter) of an ``[m, size]`` operand, accumulated in a ``lax.scan``.

    XLA:CPU runs one ``[m, K]·[K, m]`` product with ``K ~ 1e6`` far below memory speed
    (it streams the operand several times); blocks that fit in cache bring it to one
    pass over the Jacobian.
    """
    bs = _block_size(m)
    nb, rest = divmod(size, bs)

    def nt(a):
        return jax.lax.dot_general(a, a, (((1,), (1,)), ((), ())), precision=_HIGHEST)

    total = jnp.zeros((m, m), dtype)
    if nb == 1:
        total = nt(block(0, bs))
    elif nb > 1:

        def body(acc, b):
            return acc + nt(block(b * bs, bs)), None

        total, _ = jax.lax.scan(body, total, jnp.arange(nb))
    if rest:
        total = total + nt(block(nb * bs, rest))
    return total


def _leaf_gram(leaf: jax.Array) -> jax.Array:
    """``J_leaf J_leafᵀ`` for one stacked leaf ``[m, ...]``.

    HIGHEST precision: on GPU/TPU the default float32 matmul may use reduced precision
    (TF32/bf16 passes), which is too coarse for the LP/QP downstream. On the row layout
    the leaf is contracted as ``[m, k]`` column blocks (:func:`_blocked_gram`; a
    reshape is free there, and XLA:CPU lowers a dot with several contracting axes
    through a transposing copy); elsewhere the non-task axes are contracted in place,
    which keeps a model-sharded leaf's contraction local to its shard.
    """
    if row_layout():
        m = leaf.shape[0]
        flat = leaf.reshape(m, -1)
        return _blocked_gram(
            lambda start, n: jax.lax.dynamic_slice_in_dim(flat, start, n, axis=1),
            flat.shape[1],
            m,
            leaf.dtype,
        )
    axes = tuple(range(1, leaf.ndim))
    return jnp.tensordot(leaf, leaf, axes=(axes, axes), precision=_HIGHEST)


def _rows_gram(rows_per_leaf: list[tuple], m: int, dtype) -> jax.Array:
    """Gramian from per-leaf rows, ``C = Σ_leaves R Rᵀ``, never stacking a whole leaf:
    each column block of the ``m`` rows (contiguous slices of each row) is stacked into
    a small ``[m, bs]`` operand that is multiplied while in cache."""
    total = jnp.zeros((m, m), dtype)
    for rows in rows_per_leaf:
        flat = [r.reshape(-1).astype(dtype) for r in rows]

        def block(start, n, flat=flat):
            return jnp.stack([jax.lax.dynamic_slice_in_dim(r, start, n) for r in flat])

        total = total + _blocked_gram(block, flat[0].shape[0], m, dtype)
    return total


def gramian(jac: Any) -> jax.Array:
    """Gramian ``C = G Gᵀ`` of a Jacobian pytree with leading task axis ``m``.

    ``C_ij = ⟨∇l_i, ∇l_j⟩ = Σ_leaves ⟨J_leaf[i], J_leaf[j]⟩``. Each leaf is contracted
    on its own (``tensordot`` over its non-task axes), so the full ``m × n`` Jacobian is
    never materialised as one array; with model-sharded parameters each device
    contracts its own shard and only ``m × m`` partial sums are reduced.

    Args:
      jac: pytree of arrays, every leaf shaped ``[m, ...]``.

    Returns:
      ``[m, m]`` symmetric positive semi-definite array in the leaves' result dtype.
    """
    leaves = jax.tree_util.tree_leaves(jac)
    if not leaves:
        raise ValueError("`jac` has no leaves.")
    m = leaves[0].shape[0] if leaves[0].ndim else None
    for leaf in leaves:
        check_float(leaf, "jac")
        if leaf.ndim == 0 or leaf.shape[0] != m:
            raise ValueError(
                "`jac` leaves must share a leading task axis m; got shapes "
                f"{[tuple(l.shape) for l in leaves]}."
            )
    dtype = jnp.result_type(*leaves)
    rows = [_rows_of(leaf) for leaf in leaves]
    if all(r is not None for r in rows):
        return _rows_gram(rows, m, dtype)
    grams = [_leaf_gram(leaf.astype(dtype)) for leaf in leaves]
    return functools.reduce(operator.add, grams)


def combine(jac: Any, weights: jax.Array) -> Any:
    """The weighted sum of Jacobian rows, ``Σ_i weights_i · jac_i`` (direction ``Gᵀw``).

    Args:
      jac: pytree with leading task axis ``m`` on every leaf.
      weights: ``[m]``.

    Returns:
      A pytree shaped like one row of ``jac`` (like the parameters); each leaf keeps
      its dtype.
    """
    weights = check_float(weights, "weights")
    leaves = jax.tree_util.tree_leaves(jac)
    if weights.ndim != 1 or any(l.ndim == 0 or l.shape[0] != weights.shape[0] for l in leaves):
        raise ValueError(
            f"`weights` shape {weights.shape} does not match the task axis of `jac` "
            f"(leaf shapes {[tuple(l.shape) for l in leaves]})."
        )
    return jax.tree_util.tree_map(lambda leaf: _combine_leaf(leaf, weights), jac)


def _combine_leaf(leaf: jax.Array, weights: jax.Array) -> jax.Array:
    """``Σ_i w_i leaf[i]``: on the row layout an elementwise sum over the rows (one
    fused pass, from the remembered rows when there are any), else a tensordot."""
    w = weights.astype(leaf.dtype)
    rows = _rows_of(leaf)
    if rows is None and row_layout() and leaf.shape[0] <= ROWS_MAX_TASKS:
        rows = [leaf[i] for i in range(leaf.shape[0])]
    if rows is None:
        return jnp.tensordot(w, leaf, axes=1, precision=_HIGHEST)
    total = w[0] * rows[0]
    for i in range(1, len(rows)):
        total = total + w[i] * rows[i]
    return total


def mtl_value_and_grad(
    encode: Callable[[Any, Any], Any],
    heads: Callable[[Any, Any, Any], jax.Array],
    weighting: Any,
    *,
    head_scaling: str = "paper",
    head_params: Callable[[Any], Any] | None = None,
    has_aux: bool = False,
) -> Callable[..., Any]:
    """MGDA-UB step: task weights from the Jacobian w.r.t. the shared representation.

    Sener & Koltun (2018) bound ``‖Σ α_i ∇_θsh l_i‖ ≤ ‖∂z/∂θsh‖ ‖Σ α_i ∇_z l_i‖``
    and solve the weighting on ``∇_z l_i`` (their eq. 10 and Alg. 2). The step is

    1. ``z = encode(params, batch)``: one forward pass of the shared encoder;
    2. the Jacobian ``Z_i = ∇_z l_i`` of ``heads(params, z, batch) -> losses[m]``:
       ``m`` backward passes through the heads only (vmapped);
    3. ``C = Z Zᵀ`` and ``w, state = weighting.update(C, state, losses=l, preference=r)``;
    4. one backward pass of ``Σ_i stop_gradient(w_i) l_i`` through the whole network,
       reusing the forward pass of step 1 (``jax.vjp``).

    Any weighting plugs in (``mgda``, ``epo``, ``linear``, ...); with ``mgda`` this is
    MGDA-UB. The cost is one forward pass, one full backward pass and ``m`` backward
    passes through the heads that produce only ``∇_z l_i`` (plus, for the paper's head
    scaling, one more backward pass through the heads with cotangent ``1``).

    Head scaling. The paper's Alg. 2 updates each task head ``θ^t`` with its own
    *unscaled* gradient ``∇_{θ^t} l_t`` and only the shared parameters with the
    weighted sum. The authors' training script back-propagates ``Σ α_t l_t``
    everywhere, so head ``t`` receives ``α_t ∇_{θ^t} l_t``. ``head_scaling="paper"``
    (default) gives the paper's form, ``"reference"`` the code's. The paper form needs
    to know which leaves belong to the heads: by default a leaf is a head leaf when
    ``encode`` does not read it (decided statically from its jaxpr); pass
    ``head_params(params) -> pytree of bools`` (``True`` for head leaves) to say it
    explicitly.

    Args:
      encode: ``encode(params, batch) -> z`` (any pytree ``z``).
      heads: ``heads(params, z, batch) -> losses[m]``.
      weighting: a :class:`jaxpareto.weighting.Weighting` (``init``/``update``).
      head_scaling: ``"paper"`` or ``"reference"``.
      head_params: optional function giving the head mask, see above.
      has_aux: whether ``encode`` returns ``(z, aux)`` — e.g. the new BatchNorm
        statistics of the encoder (flax linen ``mutable=["batch_stats"]``); ``aux``
        is returned, not differentiated.

    Returns:
      ``step(params, batch, state, *, preference=None) -> ((losses, grads), state)``,
      or ``(((losses, aux), grads), state)`` with ``has_aux``.
      ``grads`` is shaped like ``params``; ``state`` is the weighting's new state,
      whose ``weights`` field holds the weights used. When a loss or the
      representation Jacobian is not finite (e.g. a NaN in the batch) ``grads`` is
      all zeros, so such a batch never writes a NaN into the parameters; check
      ``losses`` to count these steps.
    """
    if head_scaling not in ("paper", "reference"):
        raise ValueError(f"`head_scaling` must be 'paper' or 'reference', got {head_scaling!r}.")

    def step(params, batch, state, *, preference=None):
        if has_aux:
            z, encode_vjp, aux = jax.vjp(lambda p: encode(p, batch), params, has_aux=True)
        else:
            z, encode_vjp = jax.vjp(lambda p: encode(p, batch), params)

        def head_losses(p, zz):
            losses = heads(p, zz, batch)
            _check_losses(losses)
            return losses

        losses, head_vjp = jax.vjp(head_losses, params, z)
        # The representation Jacobian rows ∇_z l_i: m VJPs through the heads, of which
        # only the z cotangents are kept (the parameter cotangents are dead code that
        # jit removes), in the backend's layout.
        z_rows = _jacobian_rows(lambda c: head_vjp(c)[1], losses, "rev", None)
        gram = gramian(z_rows)
        weights, state = weighting.update(gram, state, losses=losses, preference=preference)
        weights = jax.lax.stop_gradient(weights).astype(losses.dtype)

        head_grad, z_bar = head_vjp(weights)
        (enc_grad,) = encode_vjp(z_bar)
        if head_scaling == "reference":
            grads = jax.tree_util.tree_map(jnp.add, head_grad, enc_grad)
        else:
            # Each head's own unscaled gradient Σ_i ∇_{θ_head} l_i: one more VJP with
            # cotangent 1 (a head leaf feeds only its own task's loss), of which only
            # the head leaves are kept.
            unscaled, _ = head_vjp(jnp.ones_like(losses))
            mask = _head_mask(params, head_params, encode, batch, has_aux)
            grads = jax.tree_util.tree_map(
                lambda scaled, enc, plain, is_head: (plain if is_head else scaled) + enc,
                head_grad,
                enc_grad,
                unscaled,
                mask,
            )
        # A non-finite batch or loss must not reach the parameters: the gradient is
        # then zero (the weighting state already carries its own degeneracy flag and
        # the returned losses show the non-finite values). The test reads only
        # replicated values (losses, the m×m Gramian), so it adds no collective when
        # the parameters are sharded.
        finite = _guard.all_finite(losses, gram)
        grads = _guard.zero_unless_finite(finite, grads)
        return (((losses, aux) if has_aux else losses), grads), state

    return step


def _head_mask(params, head_params, encode, batch, has_aux=False):
    """Pytree of Python bools: True for leaves the encoder does not depend on."""
    if head_params is not None:
        return head_params(params)
    # Structural dependence: a leaf the encoder never reads gets a symbolic-zero
    # cotangent, which jax materialises as zeros; detect it on the jaxpr instead of
    # values so the mask is static.
    flat, treedef = jax.tree_util.tree_flatten(params)

    def enc_flat(*leaves):
        out = encode(jax.tree_util.tree_unflatten(treedef, list(leaves)), batch)
        return out[0] if has_aux else out

    closed = jax.make_jaxpr(enc_flat)(*flat)
    used = _used_invars(closed.jaxpr)
    return jax.tree_util.tree_unflatten(treedef, [v not in used for v in closed.jaxpr.invars])


def _used_invars(jaxpr):
    from jax.extend import core as jex_core

    used = set()
    for v in [*(v for eqn in jaxpr.eqns for v in eqn.invars), *jaxpr.outvars]:
        if isinstance(v, jex_core.Var):
            used.add(v)
    return used
