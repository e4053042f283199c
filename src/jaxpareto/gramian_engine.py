"""The Gramian engine: Jacobian descent without the ``m × n`` Jacobian.

Every Gramian-based weighting needs only ``C = G Gᵀ`` (``[m, m]``) and then the one
direction ``Gᵀw = ∇_θ Σ_i w_i l_i``. Quinton & Rey ("Jacobian Descent for
Multi-Objective Optimization", 2024, the *autogram* idea) build ``C`` layer by layer:
for a parameter ``W`` that enters the model through ``y = f(W, x)``, the per-task
gradient is ``∇_W l_i = (∂y/∂W)ᵀ ȳ_i`` with ``ȳ_i = ∂l_i/∂y`` the task-``i`` cotangent
of the layer output, so its block of ``C`` follows from ``x`` and the ``m`` cotangents
``ȳ_i`` alone. Then a single reverse pass with the weights as cotangent gives the update.

How this module does it (:func:`gramian_vjp`):

1. ``fun`` is traced to a jaxpr (``jax.make_jaxpr`` on the flattened parameters; calls
   of ``jit``-compiled helpers are inlined). A parameter is *recognised* when every use
   is a chain of views (``transpose``, ``reshape``, ``broadcast_in_dim``, dtype
   conversion, ...) ending in a recognised primitive: ``dot_general``,
   ``conv_general_dilated``, ``mul``, ``add``/``sub``, ``neg`` or ``gather``. Any other
   use (``sin(W)``, a ``lax.scan``/``while``/``cond``/``custom_jvp`` body, a parameter
   returned as an output) makes it a *fallback* parameter.
2. ``fun`` is re-evaluated from its jaxpr with a zero *perturbation* ``δ_u`` added to the
   output of every recognised use ``u``. Since ``∂l/∂δ_u = ȳ_u``, one VJP of the losses
   w.r.t. the perturbations, vmapped over the ``m`` basis cotangents, gives every
   per-task output cotangent ``ȳ_{u,i}`` exactly; the fallback parameters are
   differentiated in the same backward pass and give their rows ``∇ l_i`` directly.
   The recognised parameters are not differentiated there (their cotangents are dead
   code, removed by XLA), so this pass runs through the activations only.
3. Each recognised parameter's block of ``C`` from its input(s) and cotangents, in the
   cheaper of two contraction orders (:func:`dense_gram_flops`). For a dense use
   ``y[b, s, :] = x[b, s, :] W[b]`` (``b`` the ``dot_general`` batch dims, ``s`` the
   "samples", i.e. every free axis of the activation, ``c`` contracted, ``f`` the
   weight's free axes),

   * *per-sample form*: ``C_ij = Σ_{b,s,t} K[b,s,t] ⟨ȳ_i[b,s], ȳ_j[b,t]⟩`` with the
     input Gram ``K[b,s,t] = ⟨x[b,s], x[b,t]⟩``, evaluated as
     ``Σ ȳ_i ⊙ (K ȳ_j)`` (never an ``m × m × S × S`` array);
   * *weight-gradient form*: the rows ``g_i = (∂y/∂W)ᵀ ȳ_i`` (the primitive's own
     transpose, vmapped over tasks), then ``C_ij = ⟨g_i, g_j⟩``;

   the per-sample form wins when ``S² ≲ c·f``. For an embedding lookup
   ``y[s] = E[idx_s]`` the input Gram is ``K[s,t] = [idx_s = idx_t]``. Every other
   recognised use (convolutions, scale/bias, parameters used several times) takes the
   weight-gradient form, summing the contributions of all uses before the Gram.
4. The blocks add up: ``C = Σ_params C_param`` (distinct parameters are distinct
   coordinates of θ). The result is the exact Gramian of the Jacobian, whichever path
   each parameter took.

The update is ``vjp(w) = ∇_θ Σ_i w_i l_i``: the VJP of the same forward pass, taken once
with the weights as cotangent. Memory is that of the summed-loss step plus the ``m``
per-task cotangents of the recognised layer outputs (and the rows of the fallback
parameters), never the ``m × n`` Jacobian; a layer followed by its bias (or by a
residual ``add``) keeps one copy of those cotangents, not one per op.

When it pays off: when ``m × n`` (the Jacobian) is much larger than ``m ×`` the
activations of one batch, i.e. wide dense layers on moderate batches, many tasks, or
per-example losses. For small convnets on large batches (activations ≫ parameters) the
Jacobian path is leaner. Call it under ``jax.jit``: an eager call traces ``fun`` and
compiles its backward pass every time.

Data parallel (batch split over devices, parameters replicated, :mod:`jaxpareto.sharding`):
the same jitted call gives the one-device result. Besides the losses and the update, the
partitioner all-reduces each weight-gradient block's ``m`` per-task rows (as the
Jacobian path does), and for a per-sample block all-gathers the layer's input and ``m``
output cotangents, then all-reduces an ``m × m`` partial Gramian. ``m × m`` partials
alone cannot do: ``C_ij = ⟨Σ_d g_i^(d), Σ_d g_j^(d)⟩`` needs the cross-device terms.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.extend import core as jex_core

from jaxpareto import weighting as _w
from jaxpareto._validate import check_float
from jaxpareto.transforms import aggregate

_HIGHEST = jax.lax.Precision.HIGHEST

# Views: one operand, linear, read no other value. Followed to the real use.
_VIEWS = frozenset(
    {
        "transpose",
        "reshape",
        "squeeze",
        "expand_dims",
        "broadcast_in_dim",
        "convert_element_type",
        "copy",
        "copy_p",
        "reduce_precision",
    }
)
# Views that preserve inner products (a permutation of the entries), so a block of the
# Gramian computed at the view's output is the block of the parameter itself.
_ISOMETRIES = frozenset({"transpose", "reshape", "squeeze", "expand_dims", "copy", "copy_p"})
# Recognised uses: the block comes from the operands and the output cotangent.
_USES = frozenset(
    {"dot_general", "conv_general_dilated", "mul", "add", "add_any", "sub", "neg", "gather"}
)
# Calls inlined before the analysis (jnp's own jit-compiled helpers, e.g. jnp.take).
_INLINED = frozenset({"jit", "pjit", "closed_call", "core_call"})


# ------------------------------------------------------------------ flat program


class _Lit(NamedTuple):
    """A literal operand of the flattened program."""

    val: Any


class _Op(NamedTuple):
    """One equation of the flattened program; ``ins``/``outs`` are value ids."""

    eqn: Any
    ins: tuple
    outs: tuple


class _Program(NamedTuple):
    """``fun``'s jaxpr with the calls inlined: a straight list of equations.

    ``inputs`` are the ids of the flattened parameters, ``consts`` maps ids of closed-over
    values to the values, ``outs`` are the ids (or literals) of the outputs.
    """

    ops: tuple
    inputs: tuple
    consts: dict
    outs: tuple


def _flatten_program(closed) -> _Program:
    ops: list[_Op] = []
    consts: dict[int, Any] = {}
    counter = [0]

    def new_id():
        counter[0] += 1
        return counter[0]

    def bind_consts(jaxpr, values):
        ids = []
        for _, val in zip(jaxpr.constvars, values):
            ids.append(new_id())
            consts[ids[-1]] = val
        return ids

    def walk(jaxpr, const_ids, in_ids):
        env = dict(zip(jaxpr.constvars, const_ids))
        env.update(zip(jaxpr.invars, in_ids))

        def read(v):
            return _Lit(v.val) if isinstance(v, jex_core.Literal) else env[v]

        for eqn in jaxpr.eqns:
            ins = tuple(read(v) for v in eqn.invars)
            name = eqn.primitive.name
            inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            if name in _INLINED and isinstance(inner, jex_core.ClosedJaxpr):
                outs = walk(inner.jaxpr, bind_consts(inner.jaxpr, inner.consts), ins)
                env.update(zip(eqn.outvars, outs))
                continue
            outs = tuple(new_id() for _ in eqn.outvars)
            env.update(zip(eqn.outvars, outs))
            ops.append(_Op(eqn, ins, outs))
        return [read(v) for v in jaxpr.outvars]

    const_ids = bind_consts(closed.jaxpr, closed.consts)
    inputs = tuple(new_id() for _ in closed.jaxpr.invars)
    outs = walk(closed.jaxpr, const_ids, inputs)
    return _Program(tuple(ops), inputs, consts, tuple(outs))


def _bind(eqn, invals):
    """Applies ``eqn``'s primitive to ``invals`` (as ``jax.core.eval_jaxpr`` does)."""
    params = eqn.primitive.get_bind_params(eqn.params)
    out = eqn.primitive.bind(*invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _run(program: _Program, leaves, perts: dict, capture: frozenset):
    """Evaluates the program; ``perts[k]`` is added to the output of op ``k``.

    Returns the outputs and the operands of the ops in ``capture`` (their inputs).
    """
    env = dict(program.consts)
    env.update(zip(program.inputs, leaves))

    def read(a):
        return a.val if isinstance(a, _Lit) else env[a]

    captured = {}
    for k, op in enumerate(program.ops):
        invals = [read(a) for a in op.ins]
        if k in capture:
            captured[k] = [None if isinstance(a, _Lit) else v for a, v in zip(op.ins, invals)]
        outs = _bind(op.eqn, invals)
        if k in perts:
            outs = [outs[0] + perts[k]]
        env.update(zip(op.outs, outs))
    return [read(a) for a in program.outs], captured


# ---------------------------------------------------------------------- analysis


class _Use(NamedTuple):
    """A parameter enters op ``op`` as operand ``pos`` through the views ``chain``."""

    op: int
    pos: int
    chain: tuple


def _is_float_aval(aval) -> bool:
    return jnp.issubdtype(aval.dtype, jnp.inexact)


def _consumers(program: _Program):
    """``{value id: [(op, operand position), …]}`` and the set of output ids."""
    consumers: dict[int, list[tuple[int, int]]] = {}
    for k, op in enumerate(program.ops):
        for pos, a in enumerate(op.ins):
            if not isinstance(a, _Lit):
                consumers.setdefault(a, []).append((k, pos))
    return consumers, {a for a in program.outs if not isinstance(a, _Lit)}


def _all_uses(program: _Program) -> list[list[_Use] | None]:
    """Per parameter leaf: its uses, or ``None`` when one of them is not recognised."""
    consumers, outputs = _consumers(program)
    return [_param_uses(program, consumers, outputs, vid) for vid in program.inputs]


def _cotangent_sites(program: _Program, terminals) -> dict[int, tuple[int, float]]:
    """Where each recognised use's output cotangent is read: ``{op: (site, sign)}``.

    When a use's output feeds exactly one ``add``/``sub`` of the same shape (a dense
    layer followed by its bias, a residual connection), both outputs have the same
    cotangent (``−`` for the subtrahend), so one perturbation serves both: ``m`` copies
    of a layer's activations are stored once, not once per elementwise op.
    """
    consumers, outputs = _consumers(program)
    sites = {}
    for k in terminals:
        site, sign = k, 1.0
        while True:
            out, aval = program.ops[site].outs[0], program.ops[site].eqn.outvars[0].aval
            nexts = consumers.get(out, [])
            if out in outputs or len(nexts) != 1:
                break
            nxt, pos = nexts[0]
            eqn = program.ops[nxt].eqn
            name = eqn.primitive.name
            if (
                name not in ("add", "add_any", "sub")
                or eqn.outvars[0].aval.shape != aval.shape
                or eqn.outvars[0].aval.dtype != aval.dtype
            ):
                break
            if name == "sub" and pos == 1:
                sign = -sign
            site = nxt
        sites[k] = (site, sign)
    return sites


def _param_uses(program: _Program, consumers, outputs, vid) -> list[_Use] | None:
    """Follows value ``vid`` through views to its recognised uses (``None``: fallback).

    A use is recognised when the value enters a primitive of ``_USES`` (any operand but
    a gather's indices); each operand position is one use, so ``p * p`` or a weight read
    by two layers gives several uses whose contributions add up.
    """

    def follow(vid, chain):
        if vid in outputs:
            return None
        uses = []
        for k, pos in consumers.get(vid, ()):
            op = program.ops[k]
            name = op.eqn.primitive.name
            if op.eqn.primitive.multiple_results or not _is_float_aval(op.eqn.outvars[0].aval):
                return None
            if name in _VIEWS and len(op.ins) == 1:
                sub = follow(op.outs[0], chain + (k,))
                if sub is None:
                    return None
                uses += sub
            elif name in _USES and not (name == "gather" and pos != 0):
                uses.append(_Use(k, pos, chain))
            else:
                return None
        return uses

    return follow(vid, ())


def _local_fn(program: _Program, use: _Use, operands):
    """``p ↦ op(…, views(p), …)`` with the op's other operands held at their values."""
    op = program.ops[use.op]
    literals = [a.val if isinstance(a, _Lit) else None for a in op.ins]

    def fn(p):
        for k in use.chain:
            (p,) = _bind(program.ops[k].eqn, [p])
        vals = [lit if val is None else val for lit, val in zip(literals, operands)]
        vals[use.pos] = p
        return _bind(op.eqn, vals)[0]

    return fn


# ------------------------------------------------------------------ Gram blocks


def _gram_of_rows(rows: jax.Array) -> jax.Array:
    """``C_ij = ⟨rows_i, rows_j⟩`` for ``rows: [m, ...]``."""
    flat = rows.reshape(rows.shape[0], -1)
    return jax.lax.dot_general(flat, flat, (((1,), (1,)), ((), ())), precision=_HIGHEST)


def _weight_rows(fn, p, ybar) -> jax.Array:
    """Per-task weight gradients ``(∂y/∂p)ᵀ ȳ_i`` of one use: ``[m, *p.shape]``."""
    _, pullback = jax.vjp(fn, p)
    return jax.vmap(lambda c: pullback(c)[0])(ybar)


def dense_gram_flops(
    num_tasks: int, groups: int, samples: int, contracted: int, features: int
) -> tuple[int, int]:
    """Multiply-adds of the two contraction orders of a dense block.

    For ``y[b, s, f] = Σ_c x[b, s, c] W[b, c, f]`` with ``b < groups``, ``s < samples``,
    ``c < contracted``, ``f < features`` and ``m = num_tasks`` cotangents ``ȳ_i``:

    * per-sample: ``K = x xᵀ`` (``S²c``), ``K ȳ_j`` (``m S² f``), ``⟨ȳ_i, K ȳ_j⟩``
      (``m² S f``), all per group;
    * weight-gradient: ``g_i = xᵀ ȳ_i`` (``m S c f``), ``⟨g_i, g_j⟩`` (``m² c f``).

    Returns ``(per_sample, weight_gradient)``.
    """
    m, s, c, f = num_tasks, samples, contracted, features
    per_sample = groups * (s * s * c + m * s * s * f + m * m * s * f)
    weight = groups * (m * s * c * f + m * m * c * f)
    return per_sample, weight


def _per_sample_gram(kernel: jax.Array, ybar: jax.Array) -> jax.Array:
    """``C_ij = Σ_{b,s,t} K[b,s,t] ⟨ȳ_i[b,s], ȳ_j[b,t]⟩`` for ``ybar: [m, b, S, f]``.

    Evaluated as ``⟨ȳ_i, Z_j⟩`` with ``Z_j = K ȳ_j``. With one group (every plain dense
    layer) both products are written in XLA's canonical forms, a task-batched
    ``[m, S, S] · [m, S, f]`` and an ``[m, k] · [k, m]`` contraction of contiguous rows,
    so that no transposed copy of the ``m`` cotangents is made.
    """
    kernel = kernel.astype(ybar.dtype)
    m = ybar.shape[0]
    if kernel.shape[0] != 1:
        z = jnp.einsum("bst,jbtf->jbsf", kernel, ybar, precision=_HIGHEST)
        return jnp.einsum("ibsf,jbsf->ij", ybar, z, precision=_HIGHEST)
    ys = ybar.reshape(m, ybar.shape[2], ybar.shape[3])
    kb = jnp.broadcast_to(kernel, (m,) + kernel.shape[1:])
    z = jax.lax.dot_general(kb, ys, (((2,), (1,)), ((0,), (0,))), precision=_HIGHEST)
    return _gram_pair(ys.reshape(m, -1), z.reshape(m, -1))


def _gram_pair(a: jax.Array, b: jax.Array) -> jax.Array:
    """``[m, k] · [k, m]``: ``C_ij = ⟨a_i, b_j⟩``."""
    return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), precision=_HIGHEST)


class _DenseLayout(NamedTuple):
    """A ``dot_general`` weight seen as ``y[b, s, f] = Σ_c x[b, s, c] W[b, c, f]``."""

    x_perm: tuple  # activation axes ordered (batch, free, contracting)
    y_perm: tuple  # output axes ordered (batch, activation free, weight free)
    groups: int
    samples: int
    contracted: int
    features: int


def _dense_layout(eqn, pos: int) -> _DenseLayout:
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    xc, xb = (tuple(lc), tuple(lb)) if pos == 1 else (tuple(rc), tuple(rb))
    x_shape = eqn.invars[1 - pos].aval.shape
    y_shape = eqn.outvars[0].aval.shape
    xfree = tuple(d for d in range(len(x_shape)) if d not in xc and d not in xb)
    nb, nxf = len(xb), len(xfree)
    npf = len(y_shape) - nb - nxf
    # Output layout of dot_general: batch dims, lhs free dims, rhs free dims.
    if pos == 1:
        y_xfree, y_pfree = tuple(range(nb, nb + nxf)), tuple(range(nb + nxf, nb + nxf + npf))
    else:
        y_pfree, y_xfree = tuple(range(nb, nb + npf)), tuple(range(nb + npf, nb + npf + nxf))
    return _DenseLayout(
        x_perm=xb + xfree + xc,
        y_perm=tuple(range(nb)) + y_xfree + y_pfree,
        groups=math.prod(x_shape[d] for d in xb),
        samples=math.prod(x_shape[d] for d in xfree),
        contracted=math.prod(x_shape[d] for d in xc),
        features=math.prod(y_shape[d] for d in y_pfree),
    )


def _dense_block(layout: _DenseLayout, x: jax.Array, ybar: jax.Array) -> jax.Array:
    """Per-sample block of a ``dot_general`` weight: input Gram ``K = x xᵀ`` per group."""
    m = ybar.shape[0]
    xs = jnp.transpose(x, layout.x_perm).reshape(layout.groups, layout.samples, layout.contracted)
    ys = jnp.transpose(ybar, (0,) + tuple(1 + d for d in layout.y_perm))
    ys = ys.reshape(m, layout.groups, layout.samples, layout.features)
    kernel = jnp.einsum("bsc,btc->bst", xs, xs, precision=_HIGHEST)
    return _per_sample_gram(kernel, ys)


def _is_embedding(eqn) -> bool:
    """``E[idx]`` / ``jnp.take(E, idx, axis=0)`` on ``E: [V, ...]``: one collapsed leading
    axis, whole trailing slices, indices ``[..., 1]``."""
    dn = eqn.params["dimension_numbers"]
    shape = eqn.invars[0].aval.shape
    idx_shape = eqn.invars[1].aval.shape
    return (
        tuple(dn.collapsed_slice_dims) == (0,)
        and tuple(dn.start_index_map) == (0,)
        and tuple(getattr(dn, "operand_batching_dims", ())) == ()
        and tuple(eqn.params["slice_sizes"]) == (1,) + tuple(shape[1:])
        and len(idx_shape) >= 1
        and idx_shape[-1] == 1
        and tuple(dn.offset_dims)
        == tuple(range(len(idx_shape) - 1, len(idx_shape) + len(shape) - 2))
    )


def _embedding_block(eqn, indices: jax.Array, ybar: jax.Array) -> jax.Array:
    """Per-sample block of an embedding table, ``K[s,t] = [idx_s = idx_t]`` (lookups that
    the gradient drops, out of range, contribute nothing)."""
    num_rows = eqn.invars[0].aval.shape[0]
    idx = indices[..., 0].reshape(-1)
    if eqn.params["mode"] == jax.lax.GatherScatterMode.CLIP:
        rows = jnp.clip(idx, 0, num_rows - 1)
    else:
        # "fill" drops out-of-range lookups; for "promise_in_bounds" JAX's own gradient
        # (a scatter-add, which skips out-of-range updates) drops them too.
        rows = jnp.where((idx >= 0) & (idx < num_rows), idx, -1)
    kernel = ((rows[:, None] == rows[None, :]) & (rows[:, None] >= 0))[None]
    m, lookups = ybar.shape[0], rows.shape[0]
    return _per_sample_gram(kernel, ybar.reshape(m, 1, lookups, -1))


def _block_kind(program: _Program, uses, p_shape, m: int, order: str = "auto") -> str:
    """``"dense-per-sample"``, ``"embedding-per-sample"`` or ``"weight-gradient"``.

    ``order="auto"`` takes the per-sample form where it needs fewer multiply-adds,
    ``"per-sample"`` wherever it applies, ``"weight-gradient"`` never.
    """
    if len(uses) != 1 or order == "weight-gradient":
        return "weight-gradient"
    (use,) = uses
    eqn = program.ops[use.op].eqn
    name = eqn.primitive.name
    if name == "dot_general" and all(_is_isometry(program.ops[k].eqn) for k in use.chain):
        lay = _dense_layout(eqn, use.pos)
        per_sample, weight = dense_gram_flops(
            m, lay.groups, lay.samples, lay.contracted, lay.features
        )
        if per_sample < weight or order == "per-sample":
            return "dense-per-sample"
    if name == "gather" and not use.chain and _is_embedding(eqn):
        lookups = math.prod(eqn.invars[1].aval.shape[:-1])
        width = math.prod(p_shape[1:])
        # The one-hot input Gram: K is free, the table axis replaces the contraction.
        per_sample = m * lookups * lookups * width + m * m * lookups * width
        weight = m * lookups * width + m * m * p_shape[0] * width
        if per_sample < weight or order == "per-sample":
            return "embedding-per-sample"
    return "weight-gradient"


def _param_block(program: _Program, uses, p, captured, cotangents, order: str) -> jax.Array:
    """The Gramian block ``[m, m]`` of one recognised parameter."""
    m = next(iter(cotangents.values())).shape[0]
    kind = _block_kind(program, uses, p.shape, m, order)
    if kind == "dense-per-sample":
        (use,) = uses
        eqn = program.ops[use.op].eqn
        x = captured[use.op][1 - use.pos]
        return _dense_block(_dense_layout(eqn, use.pos), x, cotangents[use.op])
    if kind == "embedding-per-sample":
        (use,) = uses
        eqn = program.ops[use.op].eqn
        return _embedding_block(eqn, captured[use.op][1], cotangents[use.op])
    rows = None
    for use in uses:
        r = _weight_rows(_local_fn(program, use, captured[use.op]), p, cotangents[use.op])
        rows = r if rows is None else rows + r
    return _gram_of_rows(rows)


def _is_isometry(eqn) -> bool:
    name = eqn.primitive.name
    if name == "convert_element_type":
        src, dst = eqn.invars[0].aval.dtype, eqn.outvars[0].aval.dtype
        return jnp.issubdtype(dst, jnp.floating) and jnp.finfo(dst).bits >= jnp.finfo(src).bits
    return name in _ISOMETRIES


# ------------------------------------------------------------------- validation


def _normalize_argnums(argnums, num_args: int):
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)
    if not nums:
        raise ValueError("`argnums` must name at least one positional argument.")
    for n in nums:
        if not isinstance(n, int) or not -num_args <= n < num_args:
            raise ValueError(f"`argnums` {argnums} out of range for {num_args} positional args.")
    return single, tuple(n % num_args for n in nums)


def _check_params(diff_args, nums) -> None:
    for n, arg in zip(nums, diff_args):
        for path, leaf in jax.tree_util.tree_leaves_with_path(arg):
            dtype = jnp.result_type(leaf)
            if not jnp.issubdtype(dtype, jnp.floating):
                raise TypeError(
                    f"Argument {n} of `fun` (differentiated, see `argnums`) has a leaf "
                    f"{jax.tree_util.keystr(path) or '(the argument itself)'} of dtype "
                    f"{dtype}; the Gramian needs floating parameters."
                )


def _check_order(order) -> None:
    if order not in ("auto", "per-sample", "weight-gradient"):
        raise ValueError(
            f"`order` must be 'auto', 'per-sample' or 'weight-gradient', got {order!r}."
        )


def _check_loss_shape(out_shape, per_example: bool) -> None:
    if not hasattr(out_shape, "shape") or not hasattr(out_shape, "dtype"):
        raise ValueError(
            f"`fun` must return one array of task losses, got a {type(out_shape).__name__}."
        )
    shape = tuple(out_shape.shape)
    if not jnp.issubdtype(out_shape.dtype, jnp.floating):
        raise TypeError(f"`fun` must return floating losses, got dtype {out_shape.dtype}.")
    if per_example:
        if len(shape) == 0:
            raise ValueError(
                "`fun` returned a scalar; per-example mode needs losses shaped "
                "[B] or [T, B, ...] (one task per entry)."
            )
    elif len(shape) != 1:
        hint = " Pass per_example=True to treat every entry as a task." if len(shape) > 1 else ""
        raise ValueError(
            f"`fun` must return a 1-D vector of m task losses, got shape {shape}.{hint}"
        )


# ---------------------------------------------------------------------- engine


class GramianVJP(NamedTuple):
    """What the engine hands to the update: the Gramian and the weighted-sum VJP.

    Attributes:
      gram: ``[m, m]``, ``C = G Gᵀ``.
      vjp: ``vjp(weights[m]) -> ∇_θ Σ_i w_i l_i``, a pytree shaped like the
        differentiated argument (a tuple of them for a sequence ``argnums``); one
        reverse pass that reuses the forward pass of the engine. It is a
        :class:`jax.tree_util.Partial`, so it can cross ``jit``/``scan`` boundaries.
    """

    gram: jax.Array
    vjp: Callable[[jax.Array], Any]


def _vjp_apply(treedefs, single, vjp_fn, losses_like, weights):
    weights = check_float(weights, "weights")
    if weights.shape != losses_like.shape:
        raise ValueError(
            f"`weights` must have shape {losses_like.shape} (one per task), got {weights.shape}."
        )
    leaf_cots, _ = vjp_fn(weights.astype(losses_like.dtype))
    grads, start = [], 0
    for tdef in treedefs:
        n = tdef.num_leaves
        grads.append(jax.tree_util.tree_unflatten(tdef, leaf_cots[start : start + n]))
        start += n
    return grads[0] if single else tuple(grads)


class _Traced(NamedTuple):
    single: bool
    nums: tuple
    treedefs: tuple
    leaves: list
    program: _Program
    aux_tree: Any
    uses: list  # per leaf: list of _Use, or None for a fallback leaf
    num_tasks: int


def _trace(fun, args, argnums, has_aux: bool, per_example: bool) -> _Traced:
    """Validates the call, traces ``fun`` on the flattened parameters and finds the uses."""
    single, nums = _normalize_argnums(argnums, len(args))
    diff_args = tuple(args[n] for n in nums)
    _check_params(diff_args, nums)
    flats = [jax.tree_util.tree_flatten(a) for a in diff_args]
    treedefs = tuple(t for _, t in flats)
    leaves = [jnp.asarray(leaf) for ls, _ in flats for leaf in ls]

    def fun_flat(*flat):
        full, start = list(args), 0
        for n, tdef in zip(nums, treedefs):
            full[n] = jax.tree_util.tree_unflatten(tdef, flat[start : start + tdef.num_leaves])
            start += tdef.num_leaves
        out = fun(*full)
        if has_aux:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise ValueError("`fun` must return a pair (losses, aux) when has_aux=True.")
            return out
        return out, None

    closed, (loss_shape, aux_shape) = jax.make_jaxpr(fun_flat, return_shape=True)(*leaves)
    _check_loss_shape(loss_shape, per_example)
    program = _flatten_program(closed)
    uses = _all_uses(program)
    return _Traced(
        single,
        nums,
        treedefs,
        leaves,
        program,
        jax.tree_util.tree_structure(aux_shape),
        uses,
        math.prod(loss_shape.shape),
    )


def explain(
    fun: Callable[..., Any],
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    per_example: bool = False,
    order: str = "auto",
) -> Callable[..., dict]:
    """How the engine computes each parameter's block of the Gramian (nothing is run).

    ``explain(fun)(*args) -> {path: kind}``, ``path`` the parameter leaf's key path
    (prefixed by the argument number when ``argnums`` is a sequence), ``kind`` one of
    ``"dense-per-sample"``, ``"embedding-per-sample"``, ``"weight-gradient"``,
    ``"fallback"`` (an unrecognised use: exact per-task VJP rows) or ``"unused"``.
    """
    _check_order(order)

    def wrapped(*args):
        traced = _trace(fun, args, argnums, has_aux, per_example)
        paths = []
        for n, arg in zip(traced.nums, (args[n] for n in traced.nums)):
            for path, _ in jax.tree_util.tree_leaves_with_path(arg):
                key = jax.tree_util.keystr(path)
                paths.append(key if traced.single else f"[{n}]{key}")
        kinds = {}
        for path, leaf, us in zip(paths, traced.leaves, traced.uses):
            if us is None:
                kinds[path] = "fallback"
            elif not us:
                kinds[path] = "unused"
            else:
                kinds[path] = _block_kind(traced.program, us, leaf.shape, traced.num_tasks, order)
        return kinds

    return wrapped


def gramian_vjp(
    fun: Callable[..., Any],
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    per_example: bool = False,
    order: str = "auto",
) -> Callable[..., Any]:
    """The task losses, their Gramian, and the VJP of ``Σ_i w_i l_i``, without ``J``.

    ``gramian_vjp(fun)(*args) -> (losses, GramianVJP(gram, vjp))``; see the module
    docstring for the method (Quinton & Rey 2024's autogram, on jaxprs). ``gram`` equals
    ``jp.gramian(J)`` for the Jacobian ``J`` of ``jp.value_and_jacobian(fun)``; parameters
    whose uses are not recognised contribute their exact per-task VJP rows, so the
    result never depends on what was recognised, only its cost does.

    Args:
      fun: ``fun(*args) -> losses[m]`` (``(losses, aux)`` with ``has_aux``).
      argnums: the positional argument(s) to differentiate (floating leaves only).
      has_aux: whether ``fun`` returns ``(losses, aux)``.
      per_example: allow losses of any rank ≥ 1 (e.g. ``[B]`` or ``[T, B]`` per-example
        losses, the instance-wise setting of Quinton & Rey): every entry is a task, in
        row-major order, and ``losses`` is returned flattened to ``[m]``.
      order: contraction order of the dense and embedding blocks: ``"auto"`` (the one
        with fewer multiply-adds, :func:`dense_gram_flops`), ``"per-sample"`` or
        ``"weight-gradient"``. Only the cost depends on it.

    Returns:
      A function with ``fun``'s signature returning ``(losses, gv)`` or
      ``((losses, aux), gv)``; ``gv.gram: [m, m]``; ``gv.vjp(w)`` the gradient of
      ``Σ w_i l_i`` w.r.t. ``argnums``. Non-finite losses give a non-finite Gramian;
      :func:`gramian_aggregate` then skips the step (as :func:`jaxpareto.aggregate`).

    Raises:
      ValueError: here for an unknown ``order``; at trace time for ``argnums`` out of
        range or empty, or a ``fun`` that does not return one array of the right rank
        (a pair with ``has_aux``).
      TypeError: at trace time for non-floating losses or differentiated leaves.
    """

    _check_order(order)

    def wrapped(*args):
        traced = _trace(fun, args, argnums, has_aux, per_example)
        program, leaves, uses, aux_tree = (
            traced.program,
            traced.leaves,
            traced.uses,
            traced.aux_tree,
        )
        fallback = tuple(k for k, u in enumerate(uses) if u is None)
        terminals = sorted({u.op for us in uses if us is not None for u in us})
        sites = _cotangent_sites(program, terminals)
        perts = {
            site: jnp.zeros(
                program.ops[site].eqn.outvars[0].aval.shape,
                program.ops[site].eqn.outvars[0].aval.dtype,
            )
            for site, _ in sites.values()
        }
        capture = frozenset(terminals)

        def forward(flat, pert):
            outs, captured = _run(program, flat, pert, capture)
            losses = outs[0].reshape(-1)
            aux = jax.tree_util.tree_unflatten(aux_tree, outs[1:])
            captured = jax.lax.stop_gradient(captured)
            return losses, (aux, captured)

        losses, vjp_fn, (aux, captured) = jax.vjp(forward, leaves, perts, has_aux=True)
        m = losses.shape[0]
        basis = jnp.eye(m, dtype=losses.dtype)
        vjp_leaves, vjp_def = jax.tree_util.tree_flatten(vjp_fn)

        # Jitted on its own so the cotangents of the recognised parameters (not asked
        # for here) are dead code even when the caller does not jit: this pass runs
        # through the activations and the fallback parameters only.
        @jax.jit
        def task_cotangents(vjp_leaves, basis):
            pull = jax.tree_util.tree_unflatten(vjp_def, vjp_leaves)

            def one(e):
                leaf_cots, pert_cots = pull(e)
                return [leaf_cots[k] for k in fallback], pert_cots

            return jax.vmap(one)(basis)

        fallback_rows, site_cotangents = task_cotangents(vjp_leaves, basis)
        cotangents = {
            k: site_cotangents[site] if sign > 0 else -site_cotangents[site]
            for k, (site, sign) in sites.items()
        }
        gram = jnp.zeros((m, m), losses.dtype)
        for rows in fallback_rows:
            gram = gram + _gram_of_rows(rows).astype(losses.dtype)
        for k, us in enumerate(uses):
            if us:
                block = _param_block(program, us, leaves[k], captured, cotangents, order)
                gram = gram + block.astype(losses.dtype)

        vjp = _make_vjp(traced.treedefs, traced.single, vjp_fn, losses)
        out = (losses, aux) if has_aux else losses
        return out, GramianVJP(gram, vjp)

    return wrapped


def _make_vjp(treedefs, single, vjp_fn, losses):
    return jax.tree_util.Partial(
        functools.partial(_vjp_apply, treedefs, single), vjp_fn, jax.lax.stop_gradient(losses)
    )


def value_and_gramian(
    fun: Callable[..., Any],
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    per_example: bool = False,
    order: str = "auto",
) -> Callable[..., Any]:
    """``fun``'s task losses and the Gramian ``C = J Jᵀ`` of their Jacobian, without ``J``.

    The Gramian engine of :func:`gramian_vjp` (same arguments), keeping only the Gramian:
    ``value_and_gramian(fun)(*args) -> (losses[m], gram[m, m])`` (or
    ``((losses, aux), gram)``). Use :func:`gramian_vjp` when the update
    ``∇ Σ w_i l_i`` is needed too: it shares the forward pass.

    Raises:
      ValueError, TypeError: as :func:`gramian_vjp`.
    """
    engine = gramian_vjp(
        fun, argnums=argnums, has_aux=has_aux, per_example=per_example, order=order
    )

    def wrapped(*args):
        out, gv = engine(*args)
        return out, gv.gram

    return wrapped


# ----------------------------------------------------------------- optax recipe


def gramian_aggregate(
    weighting: _w.Weighting,
    *,
    num_tasks: int | None = None,
    scale: str | float = "unit",
    dtype: Any = None,
    nonfinite: str = "zero",
) -> optax.GradientTransformationExtraArgs:
    """:func:`jaxpareto.aggregate` driven by the Gramian engine instead of the Jacobian.

    ``update(gv, state, params=None, *, losses=None, preference=None, **extra)`` takes
    the :class:`GramianVJP` of :func:`gramian_vjp` as ``updates``, solves the weighting
    on ``gv.gram`` and returns ``d = gv.vjp(s·w) = Σ_i s·w_i ∇l_i`` (one reverse pass),
    a pytree shaped like the parameters for the rest of the chain::

        tx = optax.chain(jp.gramian_aggregate(jp.weighting.upgrad(), num_tasks=m),
                         optax.adam(1e-3))
        state = tx.init(params)
        losses, gv = jp.gramian_vjp(loss_fn)(params, batch)
        updates, state = tx.update(gv, state, params, losses=losses)
        params = optax.apply_updates(params, updates)

    Every weighting that needs only the Gramian (all but those reading the Jacobian
    itself) works here. ``num_tasks``, ``scale``, ``dtype``, ``nonfinite``, the state
    (:class:`jaxpareto.AggregateState`) and the finite guard are those of
    :func:`jaxpareto.aggregate`: a step whose Gramian or losses hold a NaN/inf returns
    zeros (or NaNs with ``nonfinite="nan"``), keeps the previous weights and increments
    ``state.skipped``. A NaN/inf anywhere in a Jacobian row reaches the Gramian's
    diagonal, so guarding the Gramian guards the Jacobian the engine never builds.

    Raises:
      ValueError: bad ``num_tasks``, ``scale`` or ``nonfinite`` (as
        :func:`jaxpareto.aggregate`).
      TypeError: in ``update``, when ``updates`` is not a :class:`GramianVJP`.
    """
    inner = aggregate(weighting, num_tasks=num_tasks, scale=scale, dtype=dtype, nonfinite=nonfinite)

    def update(updates, state, params=None, **extra_args):
        if not isinstance(updates, GramianVJP):
            raise TypeError(
                f"`updates` must be the GramianVJP of jp.gramian_vjp, got {type(updates).__name__}."
            )
        return inner.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(inner.init, update)


__all__ = [
    "GramianVJP",
    "dense_gram_flops",
    "explain",
    "gramian_aggregate",
    "gramian_vjp",
    "value_and_gramian",
]
