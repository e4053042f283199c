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
* :func:`dtlz1`, :func:`dtlz3` … :func:`dtlz7` (Deb et al. 2005), :func:`zdt1` …
  :func:`zdt4`, :func:`zdt6` (Zitzler, Deb & Thiele 2000) — box-constrained, exposed on
  ``θ ∈ R^n`` through ``x = l + (u − l) sin²(θ/2)``; losses and fronts match pymoo.
* :func:`vlmop1`, :func:`vlmop2` (Van Veldhuizen & Lamont 1999),
  :func:`fonseca_fleming` (Fonseca & Fleming 1995) — small unconstrained problems.
* :func:`re_problem` — the continuous RE engineering problems (Tanabe & Ishibuchi
  2020); their fronts are sampled approximations and their Pareto sets unknown.

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
    "dtlz1",
    "dtlz2",
    "dtlz3",
    "dtlz4",
    "dtlz5",
    "dtlz6",
    "dtlz7",
    "zdt1",
    "zdt2",
    "zdt3",
    "zdt4",
    "zdt6",
    "vlmop1",
    "vlmop2",
    "fonseca_fleming",
    "re_problem",
    "RE_PROBLEMS",
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
        factory) to parameters ``[..., n]``; jittable. ``None`` where the Pareto set is
        not known (RE problems).
      distance_to_pareto_set: ``θ: [n] -> scalar`` Euclidean distance to the Pareto set
        in parameter space, or ``None`` where no closed form is known.
      is_pareto_optimal: ``(params: [n], atol) -> bool scalar``; jittable; ``None``
        where the Pareto set is not known.
    """

    name: str
    loss_fn: Callable[[jax.Array], jax.Array]
    num_objectives: int
    num_params: int
    init_params: Callable[..., jax.Array]
    pareto_front: Callable[..., jax.Array]
    pareto_set: Callable[..., jax.Array] | None
    distance_to_pareto_set: Callable[[jax.Array], jax.Array] | None
    is_pareto_optimal: Callable[..., jax.Array] | None


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


# ---------------------------------------------------------------------------
# Box-constrained benchmarks (ZDT, DTLZ, RE): the smooth reparametrisation.
#
# Every box-constrained problem below is exposed on unconstrained parameters θ ∈ R^n
# through the surjective smooth map
#
#     x = l + (u − l) sin²(θ/2) = l + (u − l)(1 − cos θ)/2,
#
# which reaches the whole closed box (x = l at θ = 0, x = u at θ = π) at finite θ,
# unlike a sigmoid. It is 2π-periodic and its derivative (u − l) sin(θ)/2 vanishes on
# the box faces, so every face point is a stationary point of the composed loss in the
# direction of that coordinate (a property of the map, not of the problem).


def _to_box(theta, lower, upper):
    """``x = l + (u − l) sin²(θ/2)`` (elementwise)."""
    return lower + (upper - lower) * jnp.sin(0.5 * theta) ** 2


def _from_box(x, lower, upper):
    """``θ = 2 arcsin(√((x − l)/(u − l))) ∈ [0, π]``: a right inverse of :func:`_to_box`
    (``x`` clipped to the box)."""
    r = jnp.clip((x - lower) / (upper - lower), 0, 1)
    return 2 * jnp.arcsin(jnp.sqrt(r))


def _safe_pow(x, p):
    """``x^p`` for ``x ≥ 0``, ``0 < p < 1``, with gradient 0 (not ∞/NaN) at ``x = 0``."""
    pos = x > 0
    return jnp.where(pos, jnp.where(pos, x, 1) ** p, 0)


def _record_intervals(psi, num: int = 2_000_001) -> np.ndarray:
    """Maximal intervals of ``t ∈ [0, 1]`` where ``ψ(t) > max_{s < t} ψ(s)`` (strict
    running records), on a grid of ``num`` points (endpoint accuracy ``1/(num − 1)``).

    For a two-objective trade-off ``(t, c − ψ(t))`` these are exactly the ``t`` that no
    ``s < t`` dominates: the non-dominated pieces of ZDT3's and DTLZ7's fronts."""
    t = np.linspace(0.0, 1.0, num)
    v = psi(t)
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(v)[:-1]])
    rec = v > best_before
    edges = np.flatnonzero(np.diff(np.concatenate([[0], rec.astype(np.int8), [0]])))
    return np.stack([t[edges[0::2]], t[edges[1::2] - 1]], axis=1)


def _in_intervals(t, intervals, atol):
    a = jnp.asarray(intervals[:, 0], t.dtype)
    b = jnp.asarray(intervals[:, 1], t.dtype)
    return jnp.any((t[..., None] >= a - atol) & (t[..., None] <= b + atol), axis=-1)


def _from_union(u, intervals):
    """Map ``u ∈ [0, 1]`` linearly onto the union of disjoint ``intervals`` (by length)."""
    lengths = intervals[:, 1] - intervals[:, 0]
    cum = np.concatenate([[0.0], np.cumsum(lengths)])
    s = u * cum[-1]
    idx = jnp.clip(
        jnp.searchsorted(jnp.asarray(cum[1:-1], u.dtype), s, side="right"), 0, len(lengths) - 1
    )
    return jnp.asarray(intervals[:, 0], u.dtype)[idx] + s - jnp.asarray(cum[:-1], u.dtype)[idx]


def _simplex_front(num, m, key, dtype, scale):
    """``scale · w`` with ``w`` on the simplex: a grid for m = 2, ``Dirichlet(𝟙)`` else."""
    if m == 2:
        s = jnp.linspace(1, 0, num, dtype=dtype)
        return scale * jnp.stack([1 - s, s], axis=1)
    key = jax.random.PRNGKey(0) if key is None else key
    e = jax.random.exponential(key, (num, m), dtype)
    return scale * e / jnp.sum(e, axis=1, keepdims=True)


def _sphere_front(num, m, key, dtype):
    if m == 2:
        phi = jnp.linspace(0, jnp.pi / 2, num, dtype=dtype)
        return jnp.stack([jnp.cos(phi), jnp.sin(phi)], axis=1)
    key = jax.random.PRNGKey(0) if key is None else key
    z = jnp.abs(jax.random.normal(key, (num, m), dtype))
    return z / jnp.linalg.norm(z, axis=1, keepdims=True)


def _box_problem(
    *,
    name: str,
    fn: str,
    objectives,
    lower,
    upper,
    m: int,
    front,
    x_star=None,
    optimal_position=None,
    jit_front: bool = True,
) -> Problem:
    """Assemble a :class:`Problem` on ``θ ∈ R^n`` for ``objectives(x)`` on the box
    ``[lower, upper]`` through ``x = l + (u − l) sin²(θ/2)``.

    ``x_star``: the values of the last ``len(x_star)`` (distance) variables on the
    Pareto set, the first ``p = n − len(x_star)`` (position) variables being free up to
    ``optimal_position(position) -> bool`` (``None``: all optimal). Without ``x_star``
    (RE problems) the Pareto set is unknown: ``pareto_set`` and ``is_pareto_optimal``
    are ``None``.
    """
    lower = np.asarray(lower, np.float64)
    upper = np.asarray(upper, np.float64)
    n = lower.shape[0]

    def box(params):
        params = _check_params(params, n, fn)
        dt = params.dtype
        return _to_box(params, jnp.asarray(lower, dt), jnp.asarray(upper, dt))

    def loss_fn(params):
        return objectives(box(params))

    def init_params(key, kind: str = "uniform", dtype=None):
        _check_kind(kind, ("uniform",), fn)
        return jax.random.uniform(key, (n,), _default_float(dtype), 0, jnp.pi)

    pareto_set = is_pareto_optimal = None
    if x_star is not None:
        x_star = np.asarray(x_star, np.float64)
        p = n - x_star.shape[0]

        def set_at(position):
            position = _float_input(position, "position")
            if position.ndim < 1 or position.shape[-1] != p:
                raise ValueError(
                    f"{fn}.pareto_set: `position` must have shape [..., {p}], got {position.shape}."
                )
            dt = position.dtype
            theta_pos = _from_box(position, jnp.asarray(lower[:p], dt), jnp.asarray(upper[:p], dt))
            theta_dist = _from_box(
                jnp.asarray(x_star, dt), jnp.asarray(lower[p:], dt), jnp.asarray(upper[p:], dt)
            )
            return jnp.concatenate(
                [theta_pos, jnp.broadcast_to(theta_dist, position.shape[:-1] + (n - p,))], axis=-1
            )

        def optimal_at(params, atol=1e-6):
            x = box(params)
            on_set = jnp.all(jnp.abs(x[p:] - jnp.asarray(x_star, x.dtype)) <= atol)
            if optimal_position is None:
                return on_set
            return on_set & optimal_position(x[:p], atol)

        pareto_set = jax.jit(set_at)
        is_pareto_optimal = jax.jit(optimal_at)

    def pareto_front(num: int, key=None, dtype=None):
        num = _check_int(num, "num", 1, f"{fn}.pareto_front")
        return front(num, key, _default_float(dtype))

    return Problem(
        name=name,
        loss_fn=jax.jit(loss_fn),
        num_objectives=m,
        num_params=n,
        init_params=jax.jit(init_params, static_argnames=("kind", "dtype")),
        pareto_front=(
            jax.jit(pareto_front, static_argnames=("num", "dtype")) if jit_front else pareto_front
        ),
        pareto_set=pareto_set,
        distance_to_pareto_set=None,
        is_pareto_optimal=is_pareto_optimal,
    )


_BOX_NOTE = """The box is reached from ``θ ∈ R^n`` through ``x = l + (u − l) sin²(θ/2)``
    (smooth and onto the closed box, so gradient methods need no projection).
    ``init_params(key, kind="uniform")``: ``θ ~ U(0, π)^n``. ``pareto_set(position)``
    maps the box values of the position variables (``[..., p]``) to θ with the distance
    variables at their optimum; ``is_pareto_optimal(θ, atol)`` checks the distance
    variables (box coordinates) within ``atol``; ``distance_to_pareto_set`` is ``None``
    (θ is periodic)."""


_DTLZ_ARGS = """Args:
      m: number of objectives ``>= 2``.
      n: number of variables ``>= m``; default ``m + k − 1`` with the paper's ``k``."""


def _fill_doc(fn):
    """Insert the shared paragraphs into a factory's docstring."""
    if fn.__doc__:  # None under python -OO
        fn.__doc__ = fn.__doc__.replace("{box}", _BOX_NOTE).replace("{dtlz_args}", _DTLZ_ARGS)
    return fn


# ---------------------------------------------------------------------------
# ZDT (Zitzler, Deb, Thiele 2000, "Comparison of multiobjective evolutionary
# algorithms: empirical results", Evolutionary Computation 8(2)).


def _zdt_h_sqrt(f1, g):
    return 1 - _safe_pow(f1 / g, 0.5)


def _zdt3_psi(t):
    return np.sqrt(t) + t * np.sin(10 * np.pi * t)


@functools.cache
def _zdt3_intervals() -> np.ndarray:
    return _record_intervals(_zdt3_psi)


def _zdt6_f1(x):
    return 1 - jnp.exp(-4 * x) * jnp.sin(6 * jnp.pi * x) ** 6


@functools.cache
def _zdt6_f1_min() -> float:
    t = np.linspace(0, 1, 1_000_001)
    v = 1 - np.exp(-4 * t) * np.sin(6 * np.pi * t) ** 6
    i = int(np.argmin(v))
    lo, hi = t[max(i - 1, 0)], t[min(i + 1, t.size - 1)]
    for _ in range(100):  # ternary search on the bracketing cell (unimodal there)
        a, b = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        fa = 1 - np.exp(-4 * a) * np.sin(6 * np.pi * a) ** 6
        fb = 1 - np.exp(-4 * b) * np.sin(6 * np.pi * b) ** 6
        lo, hi = (lo, b) if fa < fb else (a, hi)
    x = 0.5 * (lo + hi)
    return float(1 - np.exp(-4 * x) * np.sin(6 * np.pi * x) ** 6)


def _zdt(index: int, n: int | None) -> Problem:
    fn = f"zdt{index}"
    n = (10 if index in (4, 6) else 30) if n is None else _check_int(n, "n", 2, fn)
    lower = np.zeros(n)
    upper = np.ones(n)
    if index == 4:
        lower[1:], upper[1:] = -5.0, 5.0

    def objectives(x):
        x1, rest = x[0], x[1:]
        if index == 4:
            g = 1 + 10 * (n - 1) + jnp.sum(rest**2 - 10 * jnp.cos(4 * jnp.pi * rest))
        elif index == 6:
            g = 1 + 9 * _safe_pow(jnp.mean(rest), 0.25)
        else:
            g = 1 + 9 * jnp.mean(rest)
        f1 = _zdt6_f1(x1) if index == 6 else x1
        r = f1 / g
        if index in (1, 4):
            h = 1 - _safe_pow(r, 0.5)
        elif index in (2, 6):
            h = 1 - r**2
        else:
            h = 1 - _safe_pow(r, 0.5) - r * jnp.sin(10 * jnp.pi * f1)
        return jnp.stack([f1, g * h])

    def front(num, key, dtype):
        del key
        if index == 3:
            t = _from_union(jnp.linspace(0, 1, num, dtype=dtype), _zdt3_intervals())
            return jnp.stack([t, 1 - jnp.sqrt(t) - t * jnp.sin(10 * jnp.pi * t)], axis=1)
        lo = _zdt6_f1_min() if index == 6 else 0.0
        t = jnp.linspace(lo, 1, num, dtype=dtype)
        f2 = 1 - t**2 if index in (2, 6) else 1 - jnp.sqrt(t)
        return jnp.stack([t, f2], axis=1)

    optimal = None
    if index == 3:

        def zdt3_optimal(position, atol):
            return _in_intervals(position[0], _zdt3_intervals(), atol)

        optimal = zdt3_optimal

    return _box_problem(
        name=f"zdt{index}(n={n})",
        fn=fn,
        objectives=objectives,
        lower=lower,
        upper=upper,
        m=2,
        front=front,
        x_star=np.zeros(n - 1),
        optimal_position=optimal,
    )


@_fill_doc
def zdt1(n: int | None = None) -> Problem:
    """ZDT1 (Zitzler, Deb, Thiele 2000): convex front.

    ``x ∈ [0, 1]^n``; ``f₁ = x₁``, ``g = 1 + 9/(n−1) Σ_{i≥2} x_i``,
    ``f₂ = g (1 − √(f₁/g))``. Pareto set ``x_{2..n} = 0``; front ``f₂ = 1 − √f₁``,
    ``f₁ ∈ [0, 1]`` (``pareto_front(num)``: ``f₁ = linspace(0, 1, num)``). The square
    root's gradient at ``f₁ = 0`` is taken as 0 (not ∞).

    {box}

    Args:
      n: number of variables ``>= 2``; default 30 as in the paper.
    """
    return _zdt(1, n)


@_fill_doc
def zdt2(n: int | None = None) -> Problem:
    """ZDT2 (Zitzler, Deb, Thiele 2000): concave front.

    As :func:`zdt1` with ``f₂ = g (1 − (f₁/g)²)``; front ``f₂ = 1 − f₁²``, ``f₁ ∈ [0, 1]``.

    {box}

    Args:
      n: number of variables ``>= 2``; default 30.
    """
    return _zdt(2, n)


@_fill_doc
def zdt3(n: int | None = None) -> Problem:
    """ZDT3 (Zitzler, Deb, Thiele 2000): disconnected front (five pieces).

    As :func:`zdt1` with ``f₂ = g (1 − √(f₁/g) − (f₁/g) sin(10π f₁))``. On ``g = 1`` only
    the ``f₁`` where ``√f₁ + f₁ sin(10πf₁)`` exceeds its value at every smaller ``f₁``
    are non-dominated: five intervals, computed once, on first use, on a grid of 2·10⁶ points
    (endpoints accurate to 5·10⁻⁷; ≈ [0, 0.0830], [0.1822, 0.2578], [0.4093, 0.4539],
    [0.6184, 0.6525], [0.8233, 0.8518]). ``pareto_front(num)`` spreads ``f₁`` evenly over
    their union; ``is_pareto_optimal`` also requires ``x₁`` in one of them.

    {box}

    Args:
      n: number of variables ``>= 2``; default 30.
    """
    return _zdt(3, n)


@_fill_doc
def zdt4(n: int | None = None) -> Problem:
    """ZDT4 (Zitzler, Deb, Thiele 2000): multimodal (``21⁹`` local fronts for n = 10).

    ``x₁ ∈ [0, 1]``, ``x_{2..n} ∈ [−5, 5]``; ``g = 1 + 10(n−1) + Σ_{i≥2} (x_i² −
    10 cos(4π x_i))``, ``f₂ = g (1 − √(f₁/g))``. Pareto set ``x_{2..n} = 0`` (θ = π/2);
    front as :func:`zdt1`.

    {box}

    Args:
      n: number of variables ``>= 2``; default 10 as in the paper.
    """
    return _zdt(4, n)


@_fill_doc
def zdt6(n: int | None = None) -> Problem:
    """ZDT6 (Zitzler, Deb, Thiele 2000): non-uniform, concave front.

    ``f₁ = 1 − exp(−4x₁) sin⁶(6πx₁)``, ``g = 1 + 9 ((Σ_{i≥2} x_i)/(n−1))^{1/4}``,
    ``f₂ = g (1 − (f₁/g)²)``. Pareto set ``x_{2..n} = 0``; front ``f₂ = 1 − f₁²`` for
    ``f₁ ∈ [f₁*, 1]``, ``f₁* = min f₁ ≈ 0.2807753`` (computed once, on first use).
    ``pareto_front(num)``: ``f₁ = linspace(f₁*, 1, num)``. The gradient of the fourth
    root at 0 is taken as 0 (not ∞).

    {box}

    Args:
      n: number of variables ``>= 2``; default 10.
    """
    return _zdt(6, n)


# ---------------------------------------------------------------------------
# DTLZ (Deb, Thiele, Laumanns, Zitzler 2005, "Scalable test problems for
# evolutionary multiobjective optimization", in Evolutionary Multiobjective
# Optimization, Springer).


def _product_objectives(a, b, scale):
    """``f_i = scale · a₀ … a_{m−2−i} · b_{m−1−i}`` (``f₀`` without ``b``), ``a, b: [m−1]``."""
    one = jnp.ones((1,), a.dtype)
    prod = jnp.concatenate([one, jnp.cumprod(a)])
    tail = jnp.concatenate([one, b[::-1]])
    return scale * prod[::-1] * tail


def _sphere_objectives(position, g):
    """DTLZ2's shape on position values ``y ∈ [0, 1]^{m−1}``."""
    angles = position * (jnp.pi / 2)
    return _product_objectives(jnp.cos(angles), jnp.sin(angles), 1 + g)


def _rastrigin_g(xm):
    """DTLZ1/DTLZ3: ``g = 100 (k + Σ ((x − ½)² − cos(20π(x − ½))))``."""
    d = xm - 0.5
    return 100 * (xm.shape[0] + jnp.sum(d**2 - jnp.cos(20 * jnp.pi * d)))


def _dtlz7_phi(t):
    return t * (1 + np.sin(3 * np.pi * t))


@functools.cache
def _dtlz7_intervals() -> np.ndarray:
    return _record_intervals(_dtlz7_phi)


def _dtlz(index: int, m: int, n: int | None, alpha: float = 100.0) -> Problem:
    fn = f"dtlz{index}"
    m = _check_int(m, "m", 2, fn)
    k_default = {1: 5, 7: 20}.get(index, 10)
    n = m + k_default - 1 if n is None else _check_int(n, "n", 1, fn)
    if n < m:
        raise ValueError(f"{fn}: `n` must be >= m={m} (at least one distance variable), got {n}.")
    p = m - 1
    k = n - p

    def objectives(x):
        pos, xm = x[:p], x[p:]
        if index == 1:
            g = _rastrigin_g(xm)
            return _product_objectives(pos, 1 - pos, 0.5 * (1 + g))
        if index == 3:
            return _sphere_objectives(pos, _rastrigin_g(xm))
        if index == 4:
            return _sphere_objectives(pos**alpha, jnp.sum((xm - 0.5) ** 2))
        if index in (5, 6):
            g = jnp.sum((xm - 0.5) ** 2) if index == 5 else jnp.sum(_safe_pow(xm, 0.1))
            y = jnp.concatenate([pos[:1], (1 + 2 * g * pos[1:]) / (2 * (1 + g))])
            return _sphere_objectives(y, g)
        # DTLZ7
        g = 1 + 9 / k * jnp.sum(xm)
        h = m - jnp.sum(pos / (1 + g) * (1 + jnp.sin(3 * jnp.pi * pos)))
        return jnp.concatenate([pos, ((1 + g) * h)[None]])

    def front(num, key, dtype):
        if index == 1:
            return _simplex_front(num, m, key, dtype, 0.5)
        if index in (3, 4):
            return _sphere_front(num, m, key, dtype)
        if index in (5, 6):
            t = jnp.linspace(0, 1, num, dtype=dtype)
            y = jnp.concatenate([t[:, None], jnp.full((num, m - 2), 0.5, dtype)], axis=1)
            f = jax.vmap(lambda yy: _sphere_objectives(yy, jnp.zeros((), dtype)))(y)
            return jnp.maximum(f, 0)  # cos(π/2) rounds to ≈ −4e−8 in float32
        if m == 2:
            t = _from_union(jnp.linspace(0, 1, num, dtype=dtype), _dtlz7_intervals())[:, None]
        else:
            key = jax.random.PRNGKey(0) if key is None else key
            t = _from_union(jax.random.uniform(key, (num, p), dtype), _dtlz7_intervals())
        last = 2 * m - jnp.sum(t * (1 + jnp.sin(3 * jnp.pi * t)), axis=1, keepdims=True)
        return jnp.concatenate([t, last], axis=1)

    optimal = None
    if index == 7:

        def dtlz7_optimal(position, atol):
            return jnp.all(_in_intervals(position, _dtlz7_intervals(), atol))

        optimal = dtlz7_optimal

    x_star = np.zeros(k) if index in (6, 7) else np.full(k, 0.5)
    return _box_problem(
        name=f"dtlz{index}(m={m}, n={n})",
        fn=fn,
        objectives=objectives,
        lower=np.zeros(n),
        upper=np.ones(n),
        m=m,
        front=front,
        x_star=x_star,
        optimal_position=optimal,
    )


@_fill_doc
def dtlz1(m: int = 3, n: int | None = None) -> Problem:
    """DTLZ1 (Deb et al. 2005): linear front, multimodal ``g``.

    Position ``x₀ … x_{m−2}``, distance ``x_M`` (``k = n − m + 1``, default 5);
    ``g = 100 (k + Σ ((x_M − ½)² − cos(20π(x_M − ½))))``,
    ``f_i = ½ (1 + g) x₀ … x_{m−2−i} (1 − x_{m−1−i})`` (``f₀`` without the last factor).
    Pareto set ``x_M = ½``; front the simplex ``Σ f_i = ½, f ≥ 0``
    (``pareto_front``: a grid for m = 2, ``½·Dirichlet(𝟙)`` samples for m ≥ 3).

    {box}

    {dtlz_args}
    """
    return _dtlz(1, m, n)


@_fill_doc
def dtlz3(m: int = 3, n: int | None = None) -> Problem:
    """DTLZ3 (Deb et al. 2005): DTLZ2's spherical front with DTLZ1's multimodal ``g``
    (``3^k − 1`` local fronts; ``k`` default 10). Pareto set ``x_M = ½``; front
    ``{f ≥ 0, ‖f‖ = 1}`` (sampled as in :func:`dtlz2`).

    {box}

    {dtlz_args}
    """
    return _dtlz(3, m, n)


@_fill_doc
def dtlz4(m: int = 3, n: int | None = None, alpha: float = 100.0) -> Problem:
    """DTLZ4 (Deb et al. 2005): DTLZ2 with position variables ``x_i^α`` (α = 100), which
    biases solutions towards the front's edges. Pareto set ``x_M = ½``; spherical front.

    {box}

    {dtlz_args}
      alpha: the exponent ``α > 0``; default 100 as in the paper.
    """
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"dtlz4: `alpha` must be finite and > 0, got {alpha}.")
    return _dtlz(4, m, n, float(alpha))


@_fill_doc
def dtlz5(m: int = 3, n: int | None = None) -> Problem:
    """DTLZ5 (Deb et al. 2005): degenerate front (a curve).

    DTLZ2's shape on ``y₀ = x₀``, ``y_i = (1 + 2 g x_i) / (2(1 + g))`` (i ≥ 1),
    ``g = Σ (x_M − ½)²``. Pareto set ``x_M = ½``, so ``y_i = ½`` (angles π/4) and the
    front is the curve ``f(t) = sphere(t, ½, …, ½)``, ``t ∈ [0, 1]``
    (``pareto_front(num)``: ``t = linspace(0, 1, num)``). Its points are never
    dominated (any ``g > 0`` point has ``‖f‖ = 1 + g > 1``), but for m ≥ 4 the original
    definition has further non-dominated points off the curve (Huband et al. 2006, IEEE
    TEVC 10(5)); like pymoo, ``pareto_front`` returns the curve only.

    {box}

    {dtlz_args}
    """
    return _dtlz(5, m, n)


@_fill_doc
def dtlz6(m: int = 3, n: int | None = None) -> Problem:
    """DTLZ6 (Deb et al. 2005): DTLZ5 with ``g = Σ x_M^{0.1}`` (harder to converge).
    Pareto set ``x_M = 0``; front the curve of :func:`dtlz5`. The gradient of
    ``x^{0.1}`` at 0 is taken as 0 (not ∞).

    {box}

    {dtlz_args}
    """
    return _dtlz(6, m, n)


@_fill_doc
def dtlz7(m: int = 3, n: int | None = None) -> Problem:
    """DTLZ7 (Deb et al. 2005): disconnected front (``2^{m−1}`` pieces).

    ``f_i = x_i`` (i < m−1), ``g = 1 + 9/k Σ x_M`` (``k`` default 20),
    ``f_{m−1} = (1 + g)(m − Σ_i f_i/(1+g) (1 + sin(3π f_i)))``. Pareto set ``x_M = 0``
    with every ``x_i`` in the non-dominated intervals of ``φ(t) = t (1 + sin 3πt)``
    (``t`` where ``φ`` exceeds its value at every smaller ``t``: ≈ [0, 0.2514] ∪
    [0.6316, 0.8594], computed once, on first use): a point with ``g = 1`` is dominated iff one of
    its coordinates is, so the front is the product of these pieces.
    ``pareto_front``: evenly spread for m = 2, uniform samples of the pieces for m ≥ 3.

    {box}

    {dtlz_args}
    """
    return _dtlz(7, m, n)


# ---------------------------------------------------------------------------
# VLMOP and Fonseca–Fleming (unconstrained, as epo_synthetic).


def vlmop1() -> Problem:
    """VLMOP1 (Van Veldhuizen & Lamont 1999, "Multiobjective evolutionary algorithm test
    suites", SAC): ``f₁ = x²``, ``f₂ = (x − 2)²``, ``x ∈ R`` (the paper's box
    ``[−10⁵, 10⁵]`` is never active, so no reparametrisation).

    Pareto set ``[0, 2]`` (``pareto_set(t)``: ``t`` clipped to ``[0, 2]``, ``[...] →
    [..., 1]``); distance ``|x − clip(x, 0, 2)|``; front ``(t², (t − 2)²)`` for
    ``t = linspace(0, 2, num)``, i.e. ``√f₁ + √f₂ = 2`` (convex).
    ``init_params(key, kind="uniform")``: ``x ~ U(−4, 4)``.
    """
    fn = "vlmop1"

    def loss_fn(params):
        params = _check_params(params, 1, fn)
        x = params[0]
        return jnp.stack([x**2, (x - 2) ** 2])

    def pareto_set(t):
        t = _float_input(t, "t")
        return jnp.clip(t, 0, 2)[..., None]

    def pareto_front(num: int, key=None, dtype=None):
        del key
        num = _check_int(num, "num", 1, f"{fn}.pareto_front")
        t = jnp.linspace(0, 2, num, dtype=_default_float(dtype))
        return jnp.stack([t**2, (t - 2) ** 2], axis=1)

    def distance_to_pareto_set(params):
        params = _check_params(params, 1, fn)
        return jnp.abs(params[0] - jnp.clip(params[0], 0, 2))

    def is_pareto_optimal(params, atol=1e-6):
        return distance_to_pareto_set(params) <= atol

    def init_params(key, kind: str = "uniform", dtype=None):
        _check_kind(kind, ("uniform",), fn)
        return jax.random.uniform(key, (1,), _default_float(dtype), -4, 4)

    return Problem(
        name="vlmop1",
        loss_fn=jax.jit(loss_fn),
        num_objectives=2,
        num_params=1,
        init_params=jax.jit(init_params, static_argnames=("kind", "dtype")),
        pareto_front=jax.jit(pareto_front, static_argnames=("num", "dtype")),
        pareto_set=jax.jit(pareto_set),
        distance_to_pareto_set=jax.jit(distance_to_pareto_set),
        is_pareto_optimal=jax.jit(is_pareto_optimal),
    )


def vlmop2(n: int = 2) -> Problem:
    """VLMOP2 (Van Veldhuizen & Lamont 1999): ``f_{1,2} = 1 − exp(−‖x ∓ 𝟙/√n‖²)``.

    The same function as :func:`epo_synthetic` (and Fonseca & Fleming's problem), with
    the paper's ``n = 2``; the box ``[−2, 2]^n`` never binds on the Pareto set, so it is
    dropped. Pareto set, front and initialisations as :func:`epo_synthetic`.

    Args:
      n: dimension ``>= 1``; default 2.
    """
    return epo_synthetic(n)._replace(name=f"vlmop2(n={n})")


def fonseca_fleming(n: int = 3) -> Problem:
    """Fonseca & Fleming (1995, "An overview of evolutionary algorithms in multiobjective
    optimization", Evolutionary Computation 3(1)): ``f_{1,2} = 1 − exp(−Σ (x_i ∓ 1/√n)²)``
    on ``[−4, 4]^n``, usually with ``n = 3``.

    Identical to :func:`epo_synthetic` and :func:`vlmop2` (the box never binds); see
    :func:`epo_synthetic` for the Pareto set, front and initialisations.

    Args:
      n: dimension ``>= 1``; default 3.
    """
    return epo_synthetic(n)._replace(name=f"fonseca_fleming(n={n})")


# ---------------------------------------------------------------------------
# RE: real-world engineering problems (Tanabe & Ishibuchi 2020, "An easy-to-use
# real-world multi-objective optimization problem suite", Applied Soft Computing 89,
# 106078). Constrained originals are reformulated there with one extra objective:
# the total constraint violation Σ_j max(−g_j(x), 0) (g_j ≥ 0 feasible).


def _violation(*g):
    return sum(jnp.maximum(-gj, 0) for gj in g)


def _re21(x):
    f, sigma, e, length = 10.0, 10.0, 2e5, 200.0
    del sigma
    x1, x2, x3, x4 = x[0], x[1], x[2], x[3]
    s2 = math.sqrt(2.0)
    f1 = length * (2 * x1 + s2 * x2 + jnp.sqrt(x3) + x4)
    f2 = (f * length / e) * (2 / x1 + 2 * s2 / x2 - 2 * s2 / x3 + 2 / x4)
    return jnp.stack([f1, f2])


def _re24(x):
    x1, x2 = x[0], x[1]
    e, sigma_b_max, tau_max, delta_max = 700_000.0, 700.0, 450.0, 1.5
    sigma_k = e * x1 * x1 / 100
    sigma_b = 4500 / (x1 * x2)
    tau = 1800 / x2
    delta = 56.2e4 / (e * x1 * x2 * x2)
    cv = _violation(
        1 - sigma_b / sigma_b_max, 1 - tau / tau_max, 1 - delta / delta_max, 1 - sigma_b / sigma_k
    )
    return jnp.stack([x1 + 120 * x2, cv])


def _re31(x):
    x1, x2, x3 = x[0], x[1], x[2]
    f1 = x1 * jnp.sqrt(16 + x3 * x3) + x2 * jnp.sqrt(1 + x3 * x3)
    f2 = 20 * jnp.sqrt(16 + x3 * x3) / (x1 * x3)
    cv = _violation(0.1 - f1, 1e5 - f2, 1e5 - 80 * jnp.sqrt(1 + x3 * x3) / (x3 * x2))
    return jnp.stack([f1, f2, cv])


def _re32(x):
    x1, x2, x3, x4 = x[0], x[1], x[2], x[3]
    p, length, e, g_mod, tau_max, sigma_max = 6000.0, 14.0, 30e6, 12e6, 13600.0, 30000.0
    f1 = 1.10471 * x1 * x1 * x2 + 0.04811 * x3 * x4 * (14 + x2)
    f2 = 4 * p * length**3 / (e * x4 * x3**3)
    moment = p * (length + x2 / 2)
    r = jnp.sqrt(x2 * x2 / 4 + ((x1 + x3) / 2) ** 2)
    j = 2 * math.sqrt(2) * x1 * x2 * (x2 * x2 / 12 + ((x1 + x3) / 2) ** 2)
    tau2 = moment * r / j
    tau1 = p / (math.sqrt(2) * x1 * x2)
    tau = jnp.sqrt(tau1 * tau1 + 2 * tau1 * tau2 * x2 / (2 * r) + tau2 * tau2)
    sigma = 6 * p * length / (x4 * x3 * x3)
    # √(x3² x4⁶ / 36) = x3 x4³ / 6 for positive x.
    pc = (
        4.013
        * e
        * (x3 * x4**3 / 6)
        / length**2
        * (1 - x3 / (2 * length) * math.sqrt(e / (4 * g_mod)))
    )
    cv = _violation(tau_max - tau, sigma_max - sigma, x4 - x1, pc - p)
    return jnp.stack([f1, f2, cv])


def _re33(x):
    x1, x2, x3, x4 = x[0], x[1], x[2], x[3]
    d2 = x2 * x2 - x1 * x1
    d3 = x2**3 - x1**3
    f1 = 4.9e-5 * d2 * (x4 - 1)
    f2 = 9.82e6 * d2 / (x3 * x4 * d3)
    cv = _violation(
        (x2 - x1) - 20,
        0.4 - x3 / (3.14 * d2),
        1 - 2.22e-3 * x3 * d3 / d2**2,
        2.66e-2 * x3 * x4 * d3 / d2 - 900,
    )
    return jnp.stack([f1, f2, cv])


def _re34(x):
    x1, x2, x3, x4, x5 = x[0], x[1], x[2], x[3], x[4]
    f1 = (
        1640.2823
        + 2.3573285 * x1
        + 2.3220035 * x2
        + 4.5688768 * x3
        + 7.7213633 * x4
        + 4.4559504 * x5
    )
    f2 = (
        6.5856
        + 1.15 * x1
        - 1.0427 * x2
        + 0.9738 * x3
        + 0.8364 * x4
        - 0.3695 * x1 * x4
        + 0.0861 * x1 * x5
        + 0.3628 * x2 * x4
        - 0.1106 * x1 * x1
        - 0.3437 * x3 * x3
        + 0.1764 * x4 * x4
    )
    f3 = (
        -0.0551
        + 0.0181 * x1
        + 0.1024 * x2
        + 0.0421 * x3
        - 0.0073 * x1 * x2
        + 0.024 * x2 * x3
        - 0.0118 * x2 * x4
        - 0.0204 * x3 * x4
        - 0.008 * x3 * x5
        - 0.0241 * x2 * x2
        + 0.0109 * x4 * x4
    )
    return jnp.stack([f1, f2, f3])


def _re37(x):
    a, ha, oa, op = x[0], x[1], x[2], x[3]
    f1 = (
        0.692
        + 0.477 * a
        - 0.687 * ha
        - 0.080 * oa
        - 0.0650 * op
        - 0.167 * a * a
        - 0.0129 * ha * a
        + 0.0796 * ha * ha
        - 0.0634 * oa * a
        - 0.0257 * oa * ha
        + 0.0877 * oa * oa
        - 0.0521 * op * a
        + 0.00156 * op * ha
        + 0.00198 * op * oa
        + 0.0184 * op * op
    )
    f2 = (
        0.153
        - 0.322 * a
        + 0.396 * ha
        + 0.424 * oa
        + 0.0226 * op
        + 0.175 * a * a
        + 0.0185 * ha * a
        - 0.0701 * ha * ha
        - 0.251 * oa * a
        + 0.179 * oa * ha
        + 0.0150 * oa * oa
        + 0.0134 * op * a
        + 0.0296 * op * ha
        + 0.0752 * op * oa
        + 0.0192 * op * op
    )
    f3 = (
        0.370
        - 0.205 * a
        + 0.0307 * ha
        + 0.108 * oa
        + 1.019 * op
        - 0.135 * a * a
        + 0.0141 * ha * a
        + 0.0998 * ha * ha
        + 0.208 * oa * a
        - 0.0301 * oa * ha
        - 0.226 * oa * oa
        + 0.353 * op * a
        - 0.0497 * op * oa
        - 0.423 * op * op
        + 0.202 * ha * a * a
        - 0.281 * oa * a * a
        - 0.342 * ha * ha * a
        - 0.245 * ha * ha * oa
        + 0.281 * oa * oa * ha
        - 0.184 * op * op * a
        - 0.281 * ha * a * oa
    )
    return jnp.stack([f1, f2, f3])


def _re41(x):
    x1, x2, x3, x4, x5, x6, x7 = (x[i] for i in range(7))
    f1 = 1.98 + 4.9 * x1 + 6.67 * x2 + 6.98 * x3 + 4.01 * x4 + 1.78 * x5 + 1e-5 * x6 + 2.73 * x7
    f2 = 4.72 - 0.5 * x4 - 0.19 * x2 * x3
    v_mbp = 10.58 - 0.674 * x1 * x2 - 0.67275 * x2
    v_fd = 16.45 - 0.489 * x3 * x7 - 0.843 * x5 * x6
    f3 = 0.5 * (v_mbp + v_fd)
    cv = _violation(
        1 - (1.16 - 0.3717 * x2 * x4 - 0.0092928 * x3),
        0.32
        - (
            0.261
            - 0.0159 * x1 * x2
            - 0.06486 * x1
            - 0.019 * x2 * x7
            + 0.0144 * x3 * x5
            + 0.0154464 * x6
        ),
        0.32
        - (
            0.214
            + 0.00817 * x5
            - 0.045195 * x1
            - 0.0135168 * x1
            + 0.03099 * x2 * x6
            - 0.018 * x2 * x7
            + 0.007176 * x3
            + 0.023232 * x3
            - 0.00364 * x5 * x6
            - 0.018 * x2 * x2
        ),
        0.32 - (0.74 - 0.61 * x2 - 0.031296 * x3 - 0.031872 * x7 + 0.227 * x2 * x2),
        32 - (28.98 + 3.818 * x3 - 4.2 * x1 * x2 + 1.27296 * x6 - 2.68065 * x7),
        32 - (33.86 + 2.95 * x3 - 5.057 * x1 * x2 - 3.795 * x2 - 3.4431 * x7 + 1.45728),
        32 - (46.36 - 9.9 * x2 - 4.4505 * x1),
        4 - f2,
        9.9 - v_mbp,
        15.7 - v_fd,
    )
    return jnp.stack([f1, f2, f3, cv])


# name: (objectives, lower, upper, what it models)
_RE = {
    "RE21": (_re21, [1, math.sqrt(2), math.sqrt(2), 1], [3, 3, 3, 3], "four-bar truss"),
    "RE24": (_re24, [0.5, 0.5], [4, 50], "hatch cover"),
    "RE31": (_re31, [1e-5, 1e-5, 1], [100, 100, 3], "two-bar truss"),
    "RE32": (_re32, [0.125, 0.1, 0.1, 0.125], [5, 10, 10, 5], "welded beam"),
    "RE33": (_re33, [55, 75, 1000, 11], [80, 110, 3000, 20], "disc brake"),
    "RE34": (_re34, [1] * 5, [3] * 5, "vehicle crashworthiness"),
    "RE37": (_re37, [0] * 4, [1] * 4, "rocket injector"),
    "RE41": (
        _re41,
        [0.5, 0.45, 0.5, 0.5, 0.875, 0.4, 0.4],
        [1.5, 1.35, 1.5, 1.5, 2.625, 1.2, 1.2],
        "car side impact",
    ),
}

#: The RE problems available through :func:`re_problem` (continuous variables only).
RE_PROBLEMS = tuple(_RE)


def _dominated_by(rows: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For each row: does some row of ``others`` dominate it?"""
    weak = np.all(others[None, :, :] <= rows[:, None, :], axis=2)
    strict = np.any(others[None, :, :] < rows[:, None, :], axis=2)
    return np.any(weak & strict, axis=1)


def _nondominated(f: np.ndarray, block: int = 256) -> np.ndarray:
    """Boolean mask of the rows of ``f`` that no other row dominates (minimisation;
    exact duplicates are all kept).

    A dominating point has a strictly smaller coordinate sum, so in order of increasing
    sum each block needs comparing only with the non-dominated points found so far and
    with itself: ``O(N · F · m)`` for a front of ``F`` points."""
    order = np.argsort(np.sum(f, axis=1), kind="stable")
    mask = np.zeros(len(f), bool)
    front = np.zeros((0, f.shape[1]), f.dtype)
    for s in range(0, len(f), block):
        idx = order[s : s + block]
        rows = f[idx]
        ok = ~_dominated_by(rows, front) & ~_dominated_by(rows, rows)
        mask[idx[ok]] = True
        front = np.concatenate([front, rows[ok]])
    return mask


def re_problem(name: str, *, num_samples: int = 4096) -> Problem:
    """One of the RE real-world engineering problems of Tanabe & Ishibuchi (2020).

    Implemented (the continuous ones; :data:`RE_PROBLEMS`): RE21 four-bar truss (2
    objectives, 4 variables), RE24 hatch cover (2, 2), RE31 two-bar truss (3, 3), RE32
    welded beam (3, 4), RE33 disc brake (3, 4), RE34 vehicle crashworthiness (3, 5), RE37
    rocket injector (3, 4), RE41 car side impact (4, 7). The formulas are those of the
    paper's supplement and reference code; constrained originals carry the total
    violation ``Σ_j max(−g_j, 0)`` as their last objective (the paper's
    reformulation), which is only piecewise smooth. RE21 keeps the suite's ``√x₃``
    term. Not implemented: RE22, RE23, RE25, RE35, RE36 (discrete variables: rounding
    has no useful gradient), RE42 (fractional powers of a possibly negative
    deadweight), RE61, RE91 (stochastic).

    The box ``[l, u]`` is reached from θ through ``x = l + (u − l) sin²(θ/2)``
    (``init_params(key, kind="uniform")``: ``θ ~ U(0, π)^n``). The Pareto sets are not
    known in closed form: ``pareto_set``, ``is_pareto_optimal`` and
    ``distance_to_pareto_set`` are ``None``, and ``pareto_front(num, key)`` is only an
    **approximation**: the non-dominated points of ``num_samples`` random designs
    (half uniform in the box, half uniform in θ; ``key``, default ``PRNGKey(0)``),
    ``num`` of them picked evenly along the first objective (fewer are repeated). Use it for normalisation or a rough IGD, not
    as ground truth (the paper's fronts come from long evolutionary runs). Not
    jittable.

    Args:
      name: one of :data:`RE_PROBLEMS` (case-insensitive).
      num_samples: box samples behind ``pareto_front``.
    """
    key_name = str(name).upper()
    if key_name not in _RE:
        raise ValueError(f"re_problem: `name` must be one of {RE_PROBLEMS}, got {name!r}.")
    num_samples = _check_int(num_samples, "num_samples", 1, "re_problem")
    objectives, lower, upper, _ = _RE[key_name]
    lower = np.asarray(lower, np.float64)
    upper = np.asarray(upper, np.float64)
    m = jax.eval_shape(objectives, jax.ShapeDtypeStruct(lower.shape, jnp.float32)).shape[0]
    evaluate = jax.jit(jax.vmap(objectives))

    def front(num, key, dtype):
        key = jax.random.PRNGKey(0) if key is None else key
        u = np.asarray(jax.random.uniform(key, (num_samples, lower.size), jnp.float32), np.float64)
        # Half uniform in x, half uniform in θ (denser near the faces, where fronts of
        # constrained designs tend to lie).
        u[1::2] = np.sin(0.5 * np.pi * u[1::2]) ** 2
        x = lower + (upper - lower) * u
        f = np.asarray(evaluate(jnp.asarray(x, dtype)), np.float64)
        f = f[np.all(np.isfinite(f), axis=1)]
        f = f[_nondominated(f)]
        f = f[np.argsort(f[:, 0], kind="stable")]
        idx = np.rint(np.linspace(0, len(f) - 1, num)).astype(int)
        return jnp.asarray(f[idx], dtype)

    return _box_problem(
        name=key_name,
        fn=f"re_problem({key_name})",
        objectives=objectives,
        lower=lower,
        upper=upper,
        m=m,
        front=front,
        jit_front=False,
    )
