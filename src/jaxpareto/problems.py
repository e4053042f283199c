"""Test problems with known Pareto sets and fronts.

Every factory returns a :class:`Problem`: a pure, jittable, differentiable
``loss_fn(params: [n]) -> losses: [m]`` (dtype follows ``params``) plus what is known
about its Pareto set. Objectives are minimized.

* :func:`epo_synthetic` — the two-objective problem of Lin et al. (2019, eq. 19) and
  Mahapatra & Rajan (2020, eq. 36); segment Pareto set, concave front.
* :func:`convex_quadratics` / :func:`random_convex_quadratics` — ``m`` strictly convex
  quadratics; the Pareto set is the image of the simplex under a closed-form map.
* :func:`dtlz2` — DTLZ2 (Deb et al. 2005) with an unconstrained parameterisation; the
  front is the unit sphere's positive orthant.

Preference grids (``das_dennis``, ``circle_points``) live in :mod:`jaxpareto.metrics`.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpareto._validate import check_float, is_concrete
from jaxpareto._validate import check_int as _check_int

__all__ = [
    "Problem",
    "epo_synthetic",
    "convex_quadratics",
    "random_convex_quadratics",
    "dtlz2",
]


class Problem(NamedTuple):
    """A multi-objective test problem (all functions pure; those on arrays jittable).

    The array functions are returned already wrapped in ``jax.jit`` (static arguments:
    ``kind``, ``num``, ``dtype``), so eager calls compile once per shape; they nest in a
    caller's ``jit`` / ``vmap`` / ``grad`` as usual.

    Attributes:
      name: short identifier.
      loss_fn: ``loss_fn(params: [n]) -> [m]``; jittable, differentiable, dtype follows
        ``params``. Vectorise over many parameter vectors with ``jax.vmap``.
      num_objectives: ``m``.
      num_params: ``n``.
      init_params: ``init_params(key, kind=..., dtype=None) -> [n]``; the valid ``kind``
        values are listed in each factory's docstring.
      pareto_front: ``pareto_front(num, key=None, dtype=None) -> [num, m]``: loss vectors
        on the Pareto front (deterministic grid for m = 2; for m ≥ 3 sampled with ``key``,
        default ``PRNGKey(0)``). Not jittable in ``num``.
      pareto_set: maps the problem's parameterisation of the Pareto set (see each
        factory) to parameters ``[..., n]``; jittable.
      distance_to_pareto_set: ``θ: [n] -> scalar`` Euclidean distance to the Pareto set
        in parameter space, or ``None`` where no closed form is known.
      is_pareto_optimal: ``(params: [n], atol) -> bool scalar``; jittable.
    """

    name: str
    loss_fn: Callable[[jax.Array], jax.Array]
    num_objectives: int
    num_params: int
    init_params: Callable[..., jax.Array]
    pareto_front: Callable[..., jax.Array]
    pareto_set: Callable[..., jax.Array]
    distance_to_pareto_set: Callable[[jax.Array], jax.Array] | None
    is_pareto_optimal: Callable[..., jax.Array]


# ---------------------------------------------------------------------------
# Shared helpers.


def _check_params(params, n: int, fn: str) -> jax.Array:
    params = check_float(params, "params")
    if params.shape != (n,):
        raise ValueError(
            f"{fn}: `params` must have shape ({n},), got {params.shape}; use jax.vmap "
            "for a batch of parameter vectors."
        )
    return params


def _default_float(dtype):
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype}.")
    return dtype


def _float_input(x, name: str) -> jax.Array:
    """A float array; integer input (e.g. ``t = 0`` or ``alpha = [1, 0]``) is cast to the
    default float, booleans are rejected."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
        raise TypeError(f"`{name}` must be a float array, got bool.")
    if jnp.issubdtype(x.dtype, jnp.integer):
        x = x.astype(jnp.result_type(float))
    return check_float(x, name)


def _check_kind(kind: str, kinds: tuple[str, ...], fn: str) -> str:
    if kind not in kinds:
        raise ValueError(f"{fn}: `kind` must be one of {kinds}, got {kind!r}.")
    return kind


def _min_norm_sq(gram: jax.Array) -> jax.Array:
    """``min_{β ∈ Δ_m} βᵀ C β`` exactly, by enumerating the faces of the simplex.

    On each face ``S`` (``2^m − 1`` of them) the minimiser over the affine hull solves
    the KKT system ``C_SS β_S + λ 𝟙 = 0``, ``𝟙ᵀ β_S = 1`` (always consistent, solved by
    a pseudo-inverse so collinear gradients are fine); the optimum over the simplex is
    the best face solution with ``β ≥ 0``. Exact but exponential in
    ``m``: meant for the small ``m`` of test problems (``m ≤ 12``).
    """
    m = gram.shape[0]
    masks = jnp.asarray(list(itertools.product((False, True), repeat=m))[1:])
    dtype = gram.dtype

    def face(mask):
        s = mask.astype(dtype)
        kkt = jnp.zeros((m + 1, m + 1), dtype)
        kkt = kkt.at[:m, :m].set(gram * s[:, None] * s[None, :] + jnp.diag(1 - s))
        kkt = kkt.at[:m, m].set(s).at[m, :m].set(s)
        rhs = jnp.zeros((m + 1,), dtype).at[m].set(1)
        beta = jnp.maximum((jnp.linalg.pinv(kkt) @ rhs)[:m] * s, 0)
        # Clipped and renormalised, every candidate is a point of the simplex, so each
        # value bounds the optimum from above and the optimal face's solution attains
        # it: no feasibility tolerance is needed.
        total = jnp.sum(beta)
        beta = beta / jnp.where(total > 0, total, 1)
        return jnp.where(total > 0, beta @ gram @ beta, jnp.inf)

    values = jax.vmap(face)(masks)
    # Vertices are always feasible, so the minimum is finite.
    return jnp.maximum(jnp.min(values), 0)


def _stationarity(loss_fn, params) -> jax.Array:
    """``min_{β ∈ Δ} ‖Σ_i β_i ∇l_i(θ)‖₂`` (0 iff θ is Pareto-stationary)."""
    jac = jax.jacrev(loss_fn)(params)
    return jnp.sqrt(_min_norm_sq(jac @ jac.T))


# ---------------------------------------------------------------------------
# EPO / PMTL synthetic problem.


def epo_synthetic(n: int = 20) -> Problem:
    """Two objectives ``l_{1,2}(θ) = 1 − exp(−‖θ ∓ 𝟙/√n‖²)``, ``θ ∈ R^n``.

    Lin et al. (2019) eq. 19 = Mahapatra & Rajan (2020) eq. 36; both use ``n = 20``.
    With ``a = 𝟙/√n`` (``‖a‖ = 1``) and ``θ = t a + w``, ``w ⊥ a``:
    ``‖θ ∓ a‖² = (t ∓ 1)² + ‖w‖²``, so dropping ``w`` and clipping ``t`` to ``[−1, 1]``
    improves both losses (the papers call the front concave; see below for the
    precise shape). Hence

    * Pareto set: ``θ(t) = t 𝟙/√n``, ``t ∈ [−1, 1]`` (``pareto_set(t)``; ``t`` is
      clipped to ``[−1, 1]``, leading axes allowed → ``[..., n]``);
    * distance to it: ``‖θ − clip(aᵀθ, −1, 1) a‖``;
    * front: ``(1 − e^{−(1−t)²}, 1 − e^{−(1+t)²})``, independent of ``n``;
      ``pareto_front(num)`` is ``t = linspace(1, −1, num)`` (``l₁`` increasing). It is
      concave for ``|t| < 1/√2`` and convex near its end points (it meets the axes
      tangentially), so weighted sums reach only ``|t| ≳ 0.957``.

    Initialisations (``init_params(key, kind)``), from the EPO reference code:

    * ``"easy"`` (default): ``θ ~ U(−0.4, 0.4)^n``;
    * ``"hard"``: ``θ_k ~ U(0.15·(−1)^k, 0.5·(−1)^k)``, ``k = 0, …, n−1`` — even
      coordinates in ``[0.15, 0.5]``, odd ones in ``[−0.5, −0.15]``. The sign pattern is
      (for even ``n``) orthogonal to ``𝟙``, so θ starts far from the Pareto segment
      (distance ≈ ‖θ‖ ≈ 1.5 for n = 20) where both losses are ≈ 0.96 and their
      gradients small, which is what makes it hard;
    * ``"box"``: ``θ ~ U(−1/√n, 1/√n)^n``.

    Reading of the paper: its text (§5.1) calls the two settings initialisations
    "inside" and "outside" the hyper-box ``B = [−1/√n, 1/√n]^n``. The code's "easy"
    range ``[−0.4, 0.4]`` is wider than ``B`` (``1/√20 ≈ 0.224``), so "easy" points are
    mostly outside ``B`` too, but centred on the Pareto set's line; "hard" points are
    outside ``B`` in most coordinates and have alternating signs. ``"box"`` is the
    literal "inside B" reading.

    Args:
      n: dimension of θ, ``>= 1``.
    """
    n = _check_int(n, "n", 1, "epo_synthetic")
    fn = "epo_synthetic"

    def direction(dtype):
        return jnp.full((n,), 1 / math.sqrt(n), dtype)

    def loss_fn(params):
        params = _check_params(params, n, fn)
        a = direction(params.dtype)
        d1 = jnp.sum((params - a) ** 2)
        d2 = jnp.sum((params + a) ** 2)
        # −expm1(−d) = 1 − e^{−d} without cancellation near the front's end points.
        return -jnp.expm1(-jnp.stack([d1, d2]))

    def init_params(key, kind: str = "easy", dtype=None):
        kind = _check_kind(kind, ("easy", "hard", "box"), fn)
        dtype = _default_float(dtype)
        if kind == "easy":
            return jax.random.uniform(key, (n,), dtype, -0.4, 0.4)
        if kind == "box":
            b = 1 / math.sqrt(n)
            return jax.random.uniform(key, (n,), dtype, -b, b)
        sign = jnp.asarray((-1.0) ** np.arange(n), dtype)
        return sign * jax.random.uniform(key, (n,), dtype, 0.15, 0.5)

    def pareto_set(t):
        t = _float_input(t, "t")
        return jnp.clip(t, -1, 1)[..., None] * direction(t.dtype)

    def pareto_front(num: int, key=None, dtype=None):
        del key  # deterministic
        num = _check_int(num, "num", 1, f"{fn}.pareto_front")
        dtype = _default_float(dtype)
        t = jnp.linspace(1, -1, num, dtype=dtype)
        return -jnp.expm1(-jnp.stack([(1 - t) ** 2, (1 + t) ** 2], axis=1))

    def distance_to_pareto_set(params):
        params = _check_params(params, n, fn)
        a = direction(params.dtype)
        t = jnp.clip(params @ a, -1, 1)
        return jnp.linalg.norm(params - t * a)

    def is_pareto_optimal(params, atol=1e-6):
        return distance_to_pareto_set(params) <= atol

    return Problem(
        name=f"epo_synthetic(n={n})",
        loss_fn=jax.jit(loss_fn),
        num_objectives=2,
        num_params=n,
        init_params=jax.jit(init_params, static_argnames=("kind", "dtype")),
        pareto_front=jax.jit(pareto_front, static_argnames=("num", "dtype")),
        pareto_set=jax.jit(pareto_set),
        distance_to_pareto_set=jax.jit(distance_to_pareto_set),
        is_pareto_optimal=jax.jit(is_pareto_optimal),
    )


# ---------------------------------------------------------------------------
# Convex quadratics.


def convex_quadratics(matrices, centers) -> Problem:
    """``l_i(θ) = ½ (θ − c_i)ᵀ A_i (θ − c_i)``, ``A_i`` symmetric positive definite.

    Strictly convex objectives: θ is Pareto optimal iff it is Pareto-stationary, i.e.
    ``Σ α_i A_i (θ − c_i) = 0`` for some ``α ∈ Δ_m``, so the Pareto set is

    ``θ(α) = (Σ_i α_i A_i)⁻¹ Σ_i α_i A_i c_i``,  ``α ∈ Δ_m``

    (``pareto_set(alpha)``: ``alpha: [..., m]``, negative entries clipped to 0, then
    normalised to sum 1 along the last axis — an all-zero ``alpha`` gives uniform
    weights; returns ``[..., n]``). ``pareto_front(num, key)`` evaluates the losses
    at ``θ(α)`` for ``α = (s, 1 − s)``, ``s = linspace(1, 0, num)`` when m = 2, and
    ``α ~ Dirichlet(𝟙)`` otherwise (not uniform on the front). ``is_pareto_optimal``
    tests ``min_{β∈Δ} ‖Σ β_i ∇l_i(θ)‖ ≤ atol`` exactly (face enumeration, ``m ≤ 12``);
    ``distance_to_pareto_set`` is ``None`` (no closed form). ``init_params(key,
    kind="normal")``: ``θ ~ N(mean_i c_i, I)``.

    Args:
      matrices: ``[m, n, n]`` SPD (checked when concrete), ``m >= 2``.
      centers: ``[m, n]`` minimisers ``c_i``.
    """
    fn = "convex_quadratics"
    matrices = check_float(matrices, "matrices")
    centers = check_float(centers, "centers")
    if matrices.ndim != 3 or matrices.shape[1] != matrices.shape[2]:
        raise ValueError(f"{fn}: `matrices` must have shape [m, n, n], got {matrices.shape}.")
    m, n = matrices.shape[0], matrices.shape[1]
    if m < 2:
        raise ValueError(f"{fn}: `matrices` must hold m >= 2 objectives, got m={m}.")
    if n < 1:
        raise ValueError(f"{fn}: `matrices` must have n >= 1, got shape {matrices.shape}.")
    if centers.shape != (m, n):
        raise ValueError(
            f"{fn}: `centers` must have shape ({m}, {n}) to match `matrices`, got {centers.shape}."
        )
    if is_concrete(matrices):
        a = np.asarray(matrices, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{fn}: `matrices` must be finite.")
        if not np.allclose(a, np.swapaxes(a, 1, 2), rtol=1e-6, atol=1e-12 * np.abs(a).max()):
            raise ValueError(f"{fn}: `matrices` must be symmetric.")
        if np.min(np.linalg.eigvalsh(0.5 * (a + np.swapaxes(a, 1, 2)))) <= 0:
            raise ValueError(f"{fn}: `matrices` must be positive definite.")
    if is_concrete(centers) and not np.all(np.isfinite(np.asarray(centers))):
        raise ValueError(f"{fn}: `centers` must be finite.")

    def loss_fn(params):
        params = _check_params(params, n, fn)
        # Problem data follow the parameters' dtype (no silent upcast of float32 θ).
        d = params - centers.astype(params.dtype)
        return 0.5 * jnp.einsum("mi,mij,mj->m", d, matrices.astype(params.dtype), d)

    def pareto_set(alpha):
        alpha = _float_input(alpha, "alpha")
        if alpha.ndim < 1 or alpha.shape[-1] != m:
            raise ValueError(
                f"{fn}.pareto_set: `alpha` must have shape [..., {m}], got {alpha.shape}."
            )
        dtype = alpha.dtype
        alpha = jnp.maximum(alpha, 0)
        total = jnp.sum(alpha, axis=-1, keepdims=True)
        # An all-zero (or all-negative) α has no direction: fall back to uniform weights.
        alpha = jnp.where(total > 0, alpha / jnp.where(total > 0, total, 1), 1 / m)
        a = matrices.astype(dtype)
        ac = jnp.einsum("mij,mj->mi", a, centers.astype(dtype))
        h = jnp.einsum("...m,mij->...ij", alpha, a)
        rhs = jnp.einsum("...m,mi->...i", alpha, ac)
        # Σ α_i A_i is SPD: Cholesky solve.
        chol = jnp.linalg.cholesky(h)
        return jax.scipy.linalg.cho_solve((chol, True), rhs[..., None])[..., 0]

    def pareto_front(num: int, key=None, dtype=None):
        num = _check_int(num, "num", 1, f"{fn}.pareto_front")
        dtype = _default_float(dtype)
        if m == 2:
            s = jnp.linspace(1, 0, num, dtype=dtype)
            alpha = jnp.stack([s, 1 - s], axis=1)
        else:
            key = jax.random.PRNGKey(0) if key is None else key
            # Dirichlet(𝟙) as normalised exponentials (compiles far faster than the
            # gamma sampler behind jax.random.dirichlet).
            e = jax.random.exponential(key, (num, m), dtype)
            alpha = e / jnp.sum(e, axis=1, keepdims=True)
        return jax.vmap(loss_fn)(pareto_set(alpha))

    def init_params(key, kind: str = "normal", dtype=None):
        _check_kind(kind, ("normal",), fn)
        dtype = _default_float(dtype)
        return jnp.mean(centers, axis=0).astype(dtype) + jax.random.normal(key, (n,), dtype)

    def is_pareto_optimal(params, atol=1e-6):
        if m > 12:
            raise ValueError(f"{fn}.is_pareto_optimal: exact check supports m <= 12, got m={m}.")
        params = _check_params(params, n, fn)
        return _stationarity(loss_fn, params) <= atol

    return Problem(
        name=f"convex_quadratics(m={m}, n={n})",
        loss_fn=jax.jit(loss_fn),
        num_objectives=m,
        num_params=n,
        init_params=jax.jit(init_params, static_argnames=("kind", "dtype")),
        pareto_front=jax.jit(pareto_front, static_argnames=("num", "dtype")),
        pareto_set=jax.jit(pareto_set),
        distance_to_pareto_set=None,
        is_pareto_optimal=jax.jit(is_pareto_optimal),
    )


@functools.partial(jax.jit, static_argnums=(1, 2, 4))
def _random_quadratic_data(key, m, n, log_condition, dtype):
    kq, kl, kc = jax.random.split(key, 3)
    q, _ = jnp.linalg.qr(jax.random.normal(kq, (m, n, n), dtype))
    lam = jnp.exp(jax.random.uniform(kl, (m, n), dtype) * log_condition)
    a = jnp.einsum("mij,mj,mkj->mik", q, lam, q)
    # Exactly symmetric, whatever the rounding of the product.
    a = 0.5 * (a + jnp.swapaxes(a, 1, 2))
    return a, jax.random.normal(kc, (m, n), dtype)


def random_convex_quadratics(
    key, num_objectives: int, num_params: int, *, condition_number: float = 10.0, dtype=None
) -> Problem:
    """:func:`convex_quadratics` with random data.

    ``A_i = Q_i diag(λ_i) Q_iᵀ`` with ``Q_i`` random orthogonal and ``λ_i`` log-uniform
    in ``[1, condition_number]``; ``c_i ~ N(0, I)``.

    Args:
      key: PRNG key.
      num_objectives: ``m >= 2``.
      num_params: ``n >= 1``.
      condition_number: ``>= 1``, condition number bound of every ``A_i``.
      dtype: float dtype of the data; default the JAX default float.
    """
    fn = "random_convex_quadratics"
    m = _check_int(num_objectives, "num_objectives", 2, fn)
    n = _check_int(num_params, "num_params", 1, fn)
    if not (np.isfinite(condition_number) and condition_number >= 1):
        raise ValueError(
            f"{fn}: `condition_number` must be finite and >= 1, got {condition_number}."
        )
    dtype = _default_float(dtype)
    a, c = _random_quadratic_data(key, m, n, math.log(condition_number), dtype)
    return convex_quadratics(a, c)


# ---------------------------------------------------------------------------
# DTLZ2.


def _dtlz2_objectives(x: jax.Array, m: int) -> jax.Array:
    """DTLZ2 on ``x ∈ [0, 1]^n`` (0-based): ``f_i = (1 + g) Π_{j ≤ m−2−i} cos(x_j π/2) ·
    sin(x_{m−1−i} π/2)`` (no sine factor for ``i = 0``), ``g = Σ_{j ≥ m−1} (x_j − ½)²``."""
    angles = x[: m - 1] * (jnp.pi / 2)
    g = jnp.sum((x[m - 1 :] - 0.5) ** 2)
    # cos products: [1, c0, c0c1, …, c0…c_{m−2}]; objective i uses the first m−1−i.
    cos_prod = jnp.concatenate([jnp.ones((1,), x.dtype), jnp.cumprod(jnp.cos(angles))])
    sin_tail = jnp.concatenate([jnp.ones((1,), x.dtype), jnp.sin(angles)[::-1]])
    return (1 + g) * cos_prod[::-1] * sin_tail


def dtlz2(m: int = 3, n: int | None = None) -> Problem:
    """DTLZ2 (Deb, Thiele, Laumanns, Zitzler 2005) with unconstrained parameters.

    The box ``[0, 1]^n`` of DTLZ2 is reached through the smooth bijection
    ``x = sigmoid(θ)``, ``θ ∈ R^n``, so plain gradient methods apply. With ``x₀ … x_{m−2}``
    the position variables and ``x_M = (x_{m−1}, …, x_{n−1})`` the distance variables
    (``k = n − m + 1`` of them):

    ``f_i = (1 + g(x_M)) cos(x₀π/2)…cos(x_{m−2−i}π/2) sin(x_{m−1−i}π/2)``, ``g = Σ (x_M − ½)²``

    (``f₀`` has no sine factor, ``f_{m−1} = (1+g) sin(x₀π/2)``). ``Σ f_i² = (1 + g)²``, so

    * Pareto set: ``x_M = ½`` ⇔ ``θ_M = 0``, position variables free. ``pareto_set(position)``
      maps ``position ∈ (0, 1)^{m−1}`` (``[..., m−1]``, clipped to ``[ε, 1−ε]`` so the
      logit is finite) to ``θ = (logit(position), 0)``.
    * distance in θ-space: ``‖θ_M‖₂`` exactly; ``is_pareto_optimal``: ``‖θ_M‖ ≤ atol``.
    * front: ``{f ≥ 0, ‖f‖₂ = 1}``. ``pareto_front(num, key)``: the arc at
      ``linspace(0, π/2, num)`` for m = 2 (``f₀`` decreasing); for m ≥ 3, ``|z|/‖z‖``
      with ``z ~ N(0, I_m)`` (uniform on the orthant).

    The sigmoid never reaches 0 or 1, so the boundary of the front (some ``f_i = 0``) is
    approached only as ``|θ_j| → ∞``; interior points are reached at finite θ.
    ``init_params(key, kind="normal")``: ``θ ~ N(0, I)``.

    Args:
      m: number of objectives, ``>= 2``.
      n: number of parameters, ``>= m``; default ``m + 9`` (``k = 10`` as in the
        DTLZ paper).
    """
    fn = "dtlz2"
    m = _check_int(m, "m", 2, fn)
    n = m + 9 if n is None else _check_int(n, "n", 1, fn)
    if n < m:
        raise ValueError(f"{fn}: `n` must be >= m={m} (at least one distance variable), got {n}.")

    def loss_fn(params):
        params = _check_params(params, n, fn)
        return _dtlz2_objectives(jax.nn.sigmoid(params), m)

    def pareto_set(position):
        position = _float_input(position, "position")
        if position.ndim < 1 or position.shape[-1] != m - 1:
            raise ValueError(
                f"{fn}.pareto_set: `position` must have shape [..., {m - 1}], got {position.shape}."
            )
        eps = jnp.finfo(position.dtype).eps
        p = jnp.clip(position, eps, 1 - eps)
        theta_pos = jnp.log(p) - jnp.log1p(-p)
        return jnp.concatenate(
            [theta_pos, jnp.zeros(position.shape[:-1] + (n - m + 1,), position.dtype)], axis=-1
        )

    def pareto_front(num: int, key=None, dtype=None):
        num = _check_int(num, "num", 1, f"{fn}.pareto_front")
        dtype = _default_float(dtype)
        if m == 2:
            phi = jnp.linspace(0, jnp.pi / 2, num, dtype=dtype)
            return jnp.stack([jnp.cos(phi), jnp.sin(phi)], axis=1)
        key = jax.random.PRNGKey(0) if key is None else key
        z = jnp.abs(jax.random.normal(key, (num, m), dtype))
        return z / jnp.linalg.norm(z, axis=1, keepdims=True)

    def distance_to_pareto_set(params):
        params = _check_params(params, n, fn)
        return jnp.linalg.norm(params[m - 1 :])

    def is_pareto_optimal(params, atol=1e-6):
        return distance_to_pareto_set(params) <= atol

    def init_params(key, kind: str = "normal", dtype=None):
        _check_kind(kind, ("normal",), fn)
        return jax.random.normal(key, (n,), _default_float(dtype))

    return Problem(
        name=f"dtlz2(m={m}, n={n})",
        loss_fn=jax.jit(loss_fn),
        num_objectives=m,
        num_params=n,
        init_params=jax.jit(init_params, static_argnames=("kind", "dtype")),
        pareto_front=jax.jit(pareto_front, static_argnames=("num", "dtype")),
        pareto_set=jax.jit(pareto_set),
        distance_to_pareto_set=jax.jit(distance_to_pareto_set),
        is_pareto_optimal=jax.jit(is_pareto_optimal),
    )
