"""Tests for jaxpareto.metrics against independent oracles.

Oracles: brute-force inclusion–exclusion and an exact grid-cell decomposition (both
written here), ``moocore.hypervolume`` (independent C implementation), scipy's
``rel_entr`` for the KL divergence, direct numpy loops for IGD / IGD+, itertools
enumeration for Das–Dennis.
"""

from __future__ import annotations

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import rel_entr

from jaxpareto import metrics


@pytest.fixture(scope="module")
def moocore():
    """The independent C hypervolume (dev extra). Only the tests that compare with it
    take this fixture, so without moocore the oracles written here still run."""
    return pytest.importorskip("moocore")


# ---------------------------------------------------------------------------
# Oracles.


def hv_inclusion_exclusion(points, ref):
    """Σ over non-empty subsets S of (−1)^{|S|+1} vol(∩_{i∈S} [p_i, ref])."""
    pts = [p for p in np.asarray(points, float) if np.all(p < ref)]
    total = 0.0
    for size in range(1, len(pts) + 1):
        for subset in itertools.combinations(pts, size):
            corner = np.max(np.stack(subset), axis=0)
            total += (-1) ** (size + 1) * np.prod(ref - corner)
    return total


def hv_grid_cells(points, ref):
    """Exact: the distinct coordinates cut space into cells; a cell is dominated iff its
    lower corner is weakly dominated by a point."""
    pts = np.asarray([p for p in np.asarray(points, float) if np.all(p < ref)])
    if len(pts) == 0:
        return 0.0
    m = pts.shape[1]
    axes = [np.unique(np.append(pts[:, k], ref[k])) for k in range(m)]
    total = 0.0
    for idx in itertools.product(*[range(len(a) - 1) for a in axes]):
        lo = np.array([axes[k][i] for k, i in enumerate(idx)])
        hi = np.array([axes[k][i + 1] for k, i in enumerate(idx)])
        if np.any(np.all(pts <= lo, axis=1)):
            total += np.prod(hi - lo)
    return total


def random_set(rng, n, m, *, lattice=True):
    """Points on a coarse lattice (ties, duplicates, dominated points) plus some that do
    not dominate the reference (1, …, 1)."""
    if lattice:
        pts = rng.integers(0, 6, size=(n, m)) / 5.0  # 1.0 = on the reference: no volume
    else:
        pts = rng.random((n, m)) * 1.2
    pts[rng.random(n) < 0.25] = pts[0]  # duplicates
    return pts


# ---------------------------------------------------------------------------
# Hypervolume.


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_hypervolume_vs_inclusion_exclusion(m):
    rng = np.random.default_rng(10 + m)
    n, batch = 8, 25
    sets = np.stack([random_set(rng, n, m, lattice=b % 2 == 0) for b in range(batch)])
    ref = np.ones(m)
    got = np.asarray(jax.jit(jax.vmap(metrics.hypervolume, in_axes=(0, None)))(sets, ref))
    want = np.array([hv_inclusion_exclusion(s, ref) for s in sets])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    # Not vacuous: most instances have positive volume.
    assert np.mean(want > 0) > 0.8


@pytest.mark.parametrize("m,n", [(3, 14), (4, 9)])
def test_hypervolume_vs_grid_cells(m, n):
    rng = np.random.default_rng(7 * m)
    ref = np.full(m, 1.1)
    hv = jax.jit(metrics.hypervolume)
    for _ in range(3):
        pts = random_set(rng, n, m, lattice=False)
        np.testing.assert_allclose(float(hv(pts, ref)), hv_grid_cells(pts, ref), rtol=1e-12)


@pytest.mark.parametrize("m,n,seeds", [(2, 400, 4), (3, 150, 4), (4, 40, 3), (5, 14, 3)])
def test_hypervolume_vs_moocore(m, n, seeds, moocore):
    rng = np.random.default_rng(m)
    hv = jax.jit(metrics.hypervolume)
    worst = 0.0
    for s in range(seeds):
        if s % 2:
            # Points near the sphere: many non-dominated points, the hard case.
            z = np.abs(rng.normal(size=(n, m)))
            pts = z / np.linalg.norm(z, axis=1, keepdims=True)
        else:
            pts = rng.random((n, m))
        ref = np.full(m, 1.05)
        got, want = float(hv(pts, ref)), moocore.hypervolume(pts, ref=ref)
        worst = max(worst, abs(got - want) / want)
    assert worst < 1e-12


def test_hypervolume_ignores_points_outside_reference_and_nan(moocore):
    rng = np.random.default_rng(3)
    ref = np.ones(3)
    pts = rng.random((24, 3))
    pts[20:] = pts[0]  # padding with duplicates keeps one shape (one compilation)
    hv = jax.jit(metrics.hypervolume)
    base = float(hv(pts, ref))
    assert base == pytest.approx(moocore.hypervolume(pts[:20], ref=ref), rel=1e-13)

    def with_rows(rows):
        out = pts.copy()
        out[20 : 20 + len(rows)] = rows
        return float(hv(out, ref))

    # Not dominating the reference, NaN or inf: no contribution.
    extra = [[0.2, 0.3, 1.0], [1.5, 0.0, 0.0], [np.nan, 0.1, 0.1], [0.1, np.inf, 0.1]]
    assert with_rows(extra) == pytest.approx(base, rel=1e-14)
    assert float(hv(pts[rng.permutation(24)], ref)) == pytest.approx(base, rel=1e-14)
    # A point dominated by an existing one changes nothing; a dominating one does.
    assert with_rows([pts[1] + 0.01]) == pytest.approx(base, rel=1e-14)
    assert with_rows([[0.0, 0.0, 0.0]]) == pytest.approx(1.0)


def test_hypervolume_edge_cases():
    assert float(metrics.hypervolume(np.zeros((0, 3)), np.ones(3))) == 0.0
    assert float(metrics.hypervolume(np.full((4, 2), 2.0), np.ones(2))) == 0.0
    assert float(metrics.hypervolume(np.array([[0.25, 0.5]]), np.ones(2))) == pytest.approx(0.375)
    # Single point in 4-D: a box.
    p = np.array([[0.1, 0.2, 0.3, 0.4]])
    assert float(metrics.hypervolume(p, np.ones(4))) == pytest.approx(np.prod(1 - p))


def test_hypervolume_float32_and_vmap_jit(moocore):
    rng = np.random.default_rng(0)
    sets = rng.random((6, 30, 3))
    ref = np.full(3, 1.1)
    f32 = jax.jit(jax.vmap(metrics.hypervolume, in_axes=(0, None)))(
        jnp.asarray(sets, jnp.float32), jnp.asarray(ref, jnp.float32)
    )
    assert f32.dtype == jnp.float32
    want = [moocore.hypervolume(s, ref=ref) for s in sets]
    np.testing.assert_allclose(np.asarray(f32), want, rtol=2e-6)
    # A float64 reference does not upcast float32 points.
    assert metrics.hypervolume(jnp.asarray(sets[0], jnp.float32), ref).dtype == jnp.float32


def test_hypervolume_gradient_2d_matches_finite_differences(moocore):
    rng = np.random.default_rng(5)
    z = np.abs(rng.normal(size=(6, 2)))
    pts = z / np.linalg.norm(z, axis=1, keepdims=True) * 0.9  # all non-dominated
    ref = np.ones(2)
    g = np.asarray(jax.grad(metrics.hypervolume)(pts, ref))
    fd = np.zeros_like(pts)
    h = 1e-6
    for idx in np.ndindex(*pts.shape):
        e = np.zeros_like(pts)
        e[idx] = h
        fd[idx] = (moocore.hypervolume(pts + e, ref=ref) - moocore.hypervolume(pts - e, ref=ref)) / (2 * h)
    np.testing.assert_allclose(g, fd, atol=1e-7)


def test_hypervolume_contributions_vs_moocore(moocore):
    rng = np.random.default_rng(11)
    for m, n in [(2, 12), (3, 10)]:
        pts = random_set(rng, n, m, lattice=False)
        pts[3] = pts[5]  # duplicate pair: both contribute 0
        ref = np.full(m, 1.1)
        got = np.asarray(jax.jit(metrics.hypervolume_contributions)(pts, ref))
        total = moocore.hypervolume(pts, ref=ref)
        want = np.array([total - moocore.hypervolume(np.delete(pts, i, 0), ref=ref) for i in range(n)])
        np.testing.assert_allclose(got, want, atol=1e-12)
        assert got[3] == pytest.approx(0, abs=1e-12) and got[5] == pytest.approx(0, abs=1e-12)


def test_hypervolume_bad_input():
    with pytest.raises(ValueError, match="points"):
        metrics.hypervolume(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="reference"):
        metrics.hypervolume(np.ones((4, 3)), np.ones(2))
    with pytest.raises(ValueError, match="reference"):
        metrics.hypervolume(np.ones((4, 2)), np.array([1.0, np.nan]))
    with pytest.raises(TypeError, match="points"):
        metrics.hypervolume(np.ones((4, 2), int), np.ones(2))
    with pytest.raises(ValueError, match="reference"):
        metrics.hypervolume_contributions(np.ones((4, 3)), np.ones(4))


# ---------------------------------------------------------------------------
# Non-uniformity and ray cosine.


def kl_oracle(losses, r):
    rl = np.maximum(r * losses, 0)
    if rl.sum() == 0:
        return 0.0
    lhat = rl / rl.sum()
    return float(np.sum(rel_entr(lhat, np.full_like(lhat, 1 / len(lhat)))))


class TestNonUniformity(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_vs_scipy_kl(self):
        rng = np.random.default_rng(0)
        fn = self.variant(metrics.non_uniformity)
        for m in (2, 3, 7, 20):
            losses = rng.random((50, m)) * 3
            losses[::5, 0] = 0.0  # 0 log 0 = 0
            r = rng.random(m) + 0.05
            got = np.asarray(fn(losses, r))  # leading batch axis
            want = np.array([kl_oracle(l, r) for l in losses])
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
            assert np.all(got <= math.log(m) + 1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_zero_on_ray_and_degenerate(self):
        fn = self.variant(metrics.non_uniformity)
        r = np.array([0.2, 0.3, 0.5])
        assert float(fn(2.5 / r, r)) == pytest.approx(0, abs=1e-15)
        assert float(fn(np.zeros(3), r)) == 0.0
        # One-hot: maximal non-uniformity log m.
        assert float(fn(np.array([1.0, 0, 0]), r)) == pytest.approx(math.log(3))
        # Negative entries are clipped to 0.
        assert float(fn(np.array([-1.0, 1, 1]), r)) == pytest.approx(kl_oracle(np.array([0.0, 1, 1]), r))
        assert float(fn(np.array([-1.0, -2, -3]), r)) == 0.0

    def test_vmap_grad_dtype(self):
        rng = np.random.default_rng(1)
        losses = rng.random((8, 4))
        prefs = rng.random((8, 4)) + 0.1
        got = jax.vmap(metrics.non_uniformity)(losses, prefs)
        want = [kl_oracle(l, r) for l, r in zip(losses, prefs)]
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
        g = jax.grad(metrics.non_uniformity)(jnp.array([0.0, 1.0, 2.0]), jnp.ones(3))
        assert np.all(np.isfinite(np.asarray(g)))
        g0 = jax.grad(metrics.non_uniformity)(jnp.zeros(3), jnp.ones(3))
        assert np.all(np.isfinite(np.asarray(g0)))
        out = metrics.non_uniformity(jnp.asarray(losses, jnp.float32), prefs[0])
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(out), [kl_oracle(l, prefs[0]) for l in losses], rtol=1e-4, atol=1e-6)


def test_non_uniformity_bad_input():
    with pytest.raises(ValueError, match="preference"):
        metrics.non_uniformity(np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="preference"):
        metrics.non_uniformity(np.ones(3), np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="losses"):
        metrics.non_uniformity(np.float64(1.0), None)
    with pytest.raises(TypeError, match="losses"):
        metrics.non_uniformity(np.ones(3, int), np.ones(3))
    with pytest.raises(ValueError, match="preference"):
        metrics.ray_cosine(np.ones((4, 3)), np.ones((2, 3)))


class TestRayCosine(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_vs_numpy(self):
        rng = np.random.default_rng(2)
        fn = self.variant(metrics.ray_cosine)
        for m in (2, 5):
            losses = rng.random((40, m))
            r = rng.random(m) + 0.1
            rl = losses * r
            want = rl.sum(1) / (np.sqrt(m) * np.linalg.norm(rl, axis=1))
            np.testing.assert_allclose(np.asarray(fn(losses, r)), want, rtol=1e-13)
            assert np.all(want >= 1 / np.sqrt(m) - 1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_on_ray_and_degenerate(self):
        fn = self.variant(metrics.ray_cosine)
        r = np.array([0.7, 0.1, 0.2])
        assert float(fn(3.0 / r, r)) == pytest.approx(1.0, abs=1e-15)
        assert float(fn(1e-300 / r, r)) == pytest.approx(1.0, abs=1e-15)  # no underflow
        assert float(fn(1e200 / r, r)) == pytest.approx(1.0, abs=1e-15)  # no overflow
        assert float(fn(np.zeros(3), r)) == 1.0
        assert float(fn(np.array([1.0, 0, 0]), r)) == pytest.approx(1 / np.sqrt(3))

    def test_float32(self):
        out = metrics.ray_cosine(jnp.array([0.2, 0.8], jnp.float32), np.array([0.8, 0.2]))
        assert out.dtype == jnp.float32
        assert float(out) == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------------------
# IGD.


def igd_oracle(points, front, plus=False):
    total = 0.0
    for z in front:
        best = np.inf
        for p in points:
            if not np.all(np.isfinite(p)):
                continue
            d = np.maximum(p - z, 0) if plus else p - z
            best = min(best, math.sqrt(float(np.sum(d * d))))
        total += best
    return total / len(front)


@pytest.mark.parametrize("plus", [False, True])
def test_igd_vs_double_loop(plus):
    rng = np.random.default_rng(4)
    fn = jax.jit(metrics.igd_plus if plus else metrics.igd)
    for m in (2, 3):
        pts = rng.random((25, m))
        pts[3] = np.nan
        front = rng.random((40, m))
        assert float(fn(pts, front)) == pytest.approx(igd_oracle(pts, front, plus), rel=1e-12)
    front = rng.random((10, 2))
    assert float(fn(front, front)) == 0.0
    assert float(fn(np.full((3, 2), np.nan), front)) == np.inf


def test_igd_plus_zero_when_dominating():
    front = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    assert float(metrics.igd_plus(front - 0.1, front)) == 0.0
    assert float(metrics.igd(front - 0.1, front)) == pytest.approx(0.1 * np.sqrt(2))


def test_igd_vmap_dtype_and_bad_input():
    rng = np.random.default_rng(6)
    pts = rng.random((4, 10, 2))
    front = rng.random((15, 2))
    got = jax.vmap(metrics.igd, in_axes=(0, None))(pts, front)
    np.testing.assert_allclose(np.asarray(got), [igd_oracle(p, front) for p in pts], rtol=1e-12)
    assert metrics.igd(jnp.asarray(pts[0], jnp.float32), jnp.asarray(front, jnp.float32)).dtype == jnp.float32
    with pytest.raises(ValueError, match="front"):
        metrics.igd(pts[0], rng.random((5, 3)))
    with pytest.raises(ValueError, match="points"):
        metrics.igd(pts[0, 0], front)
    with pytest.raises(ValueError, match="non-empty"):
        metrics.igd(np.zeros((0, 2)), front)


# ---------------------------------------------------------------------------
# Preference grids.


@pytest.mark.parametrize("m,h", [(1, 3), (2, 1), (2, 5), (3, 4), (5, 3)])
def test_das_dennis_vs_enumeration(m, h):
    got = np.asarray(metrics.das_dennis(m, h))
    want = {k for k in itertools.product(range(h + 1), repeat=m) if sum(k) == h}
    assert got.shape == (math.comb(h + m - 1, m - 1), m) == (len(want), m)
    assert {tuple(int(v) for v in np.rint(row * h)) for row in got} == want
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-15)
    np.testing.assert_array_equal(got[0], np.eye(m)[0])


def test_das_dennis_and_circle_points_bad_input():
    with pytest.raises(ValueError, match="num_partitions"):
        metrics.das_dennis(3, 0)
    with pytest.raises(ValueError, match="`m`"):
        metrics.das_dennis(0, 3)
    with pytest.raises(TypeError, match="num_partitions"):
        metrics.das_dennis(3, 2.0)
    with pytest.raises(ValueError, match="num"):
        metrics.circle_points(0)
    with pytest.raises(ValueError, match="end"):
        metrics.circle_points(3, 0.0, np.inf)


def test_circle_points():
    r = np.asarray(metrics.circle_points(5, np.pi / 20, 9 * np.pi / 20))
    phi = np.linspace(np.pi / 20, 9 * np.pi / 20, 5)
    np.testing.assert_allclose(r, np.stack([np.cos(phi), np.sin(phi)], 1), rtol=1e-15)
    d = np.asarray(metrics.circle_points(3))
    np.testing.assert_allclose(d[[0, -1]], [[1, 0], [0, 1]], atol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0)
    assert metrics.circle_points(2, dtype=jnp.float32).dtype == jnp.float32


# ---------------------------------------------------------------------------
# GD / GD+ / spacing (oracle: pymoo 0.6 indicators), sparsity and Lmin (numpy versions
# of the PGMORL / LibMOON definitions), Δm% (published table rows).

pymoo_ind = pytest.importorskip("pymoo.indicators.gd")
from pymoo.indicators.gd_plus import GDPlus  # noqa: E402
from pymoo.indicators.igd import IGD  # noqa: E402
from pymoo.indicators.igd_plus import IGDPlus  # noqa: E402
from pymoo.indicators.spacing import SpacingIndicator  # noqa: E402

_gd = jax.jit(metrics.gd)
_gd_plus = jax.jit(metrics.gd_plus)
_igd = jax.jit(metrics.igd)
_igd_plus = jax.jit(metrics.igd_plus)


def test_distance_indicators_vs_pymoo():
    rng = np.random.default_rng(21)
    for m in (2, 3):
        for _ in range(4):
            pts = rng.random((30, m))
            front = rng.random((50, m)) * 0.9
            assert float(_gd(pts, front)) == pytest.approx(pymoo_ind.GD(front)(pts), rel=1e-12)
            assert float(_gd_plus(pts, front)) == pytest.approx(GDPlus(front)(pts), rel=1e-12)
            assert float(_igd(pts, front)) == pytest.approx(IGD(front)(pts), rel=1e-12)
            assert float(_igd_plus(pts, front)) == pytest.approx(IGDPlus(front)(pts), rel=1e-12)
    # GD+ is 0 for points dominating the front, GD is not.
    front = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    assert float(metrics.gd_plus(front - 0.1, front)) == 0.0
    assert float(metrics.gd(front - 0.1, front)) == pytest.approx(0.1 * np.sqrt(2))


def test_gd_nonfinite_rows_vmap_float32_and_bad_input():
    rng = np.random.default_rng(22)
    pts = rng.random((12, 2))
    front = rng.random((20, 2))
    bad = pts.copy()
    bad[[2, 7]] = np.nan
    assert float(_gd(bad, front)) == pytest.approx(pymoo_ind.GD(front)(np.delete(pts, [2, 7], 0)), rel=1e-12)
    assert float(_gd(np.full((3, 2), np.inf), front)) == np.inf
    batch = rng.random((5, 12, 2))
    got = jax.vmap(metrics.gd, in_axes=(0, None))(batch, front)
    np.testing.assert_allclose(np.asarray(got), [pymoo_ind.GD(front)(b) for b in batch], rtol=1e-12)
    out = metrics.gd_plus(jnp.asarray(pts, jnp.float32), jnp.asarray(front, jnp.float32))
    assert out.dtype == jnp.float32
    assert float(out) == pytest.approx(GDPlus(front)(pts), rel=1e-5)
    with pytest.raises(ValueError, match="objectives"):
        metrics.gd(pts, rng.random((4, 3)))
    with pytest.raises(ValueError, match="non-empty"):
        metrics.gd_plus(np.zeros((0, 2)), front)


def test_spacing_vs_pymoo_and_schott():
    rng = np.random.default_rng(23)
    sp = jax.jit(metrics.spacing)
    for m, n in [(2, 10), (3, 25)]:
        pts = rng.random((n, m))
        # pymoo divides by n, Schott (1995) by n − 1.
        want = SpacingIndicator()(pts) * np.sqrt(n / (n - 1))
        assert float(sp(pts)) == pytest.approx(want, rel=1e-12)
    # Evenly spaced points on a line: S = 0; one point or none finite: 0.
    line = np.stack([np.linspace(0, 1, 9), np.linspace(1, 0, 9)], 1)
    assert float(metrics.spacing(line)) == pytest.approx(0, abs=1e-15)
    assert float(metrics.spacing(line[:1])) == 0.0
    with_nan = np.concatenate([line, np.full((2, 2), np.nan)])
    assert float(metrics.spacing(with_nan)) == pytest.approx(0, abs=1e-15)
    assert metrics.spacing(jnp.asarray(line, jnp.float32)).dtype == jnp.float32


def sparsity_np(f, filter_dominated=True):
    """PGMORL / LibMOON sparsity, written as a plain loop."""
    f = f[np.all(np.isfinite(f), axis=1)]
    if filter_dominated:
        f = np.array([a for a in f if not any(np.all(b <= a) and np.any(b < a) for b in f)])
    if len(f) < 2:
        return 0.0
    total = 0.0
    for k in range(f.shape[1]):
        s = np.sort(f[:, k])
        total += sum((s[i] - s[i + 1]) ** 2 for i in range(len(s) - 1))
    return total / (len(f) - 1)


def test_sparsity_and_lmin_vs_loops():
    rng = np.random.default_rng(24)
    spars = jax.jit(metrics.sparsity, static_argnames="non_dominated")
    lm = jax.jit(metrics.lmin)
    for m in (2, 3):
        pts = rng.random((40, m))
        pts[5] = np.nan
        for nd in (True, False):
            assert float(spars(pts, non_dominated=nd)) == pytest.approx(sparsity_np(pts, nd), rel=1e-12)
        finite = pts[np.all(np.isfinite(pts), 1)]
        want = min(np.linalg.norm(a - b) for i, a in enumerate(finite) for b in finite[i + 1:])
        assert float(lm(pts)) == pytest.approx(want, rel=1e-12)
    # Not vacuous: the dominance filter changes the value on random points.
    same = rng.random((30, 2))
    assert sparsity_np(same) != pytest.approx(sparsity_np(same, False))
    assert float(metrics.lmin(np.ones((1, 2)))) == np.inf
    assert float(metrics.sparsity(np.ones((1, 2)))) == 0.0
    assert float(metrics.lmin(np.array([[0.0, 0.0], [0.0, 0.0]]))) == 0.0
    for f in (metrics.spacing, metrics.sparsity, metrics.lmin):
        with pytest.raises(ValueError, match="points"):
            f(np.ones(3))
        with pytest.raises(TypeError, match="points"):
            f(np.ones((3, 2), int))


def test_delta_m_published_rows():
    # NYUv2 (Navon et al. 2022, Nash-MTL, NYUv2 table): STL baseline and two rows with
    # their published Δm%. Metrics: mIoU↑, PixAcc↑, AbsErr↓, RelErr↓, angle mean↓,
    # median↓, within 11.25°↑, 22.5°↑, 30°↑. Inputs are the table's rounded values,
    # so the result agrees with the published two decimals up to rounding.
    stl = [38.30, 63.76, 0.6754, 0.2780, 25.01, 19.21, 30.14, 57.20, 69.15]
    hib = [True, True, False, False, False, False, True, True, True]
    rows = {
        "Nash-MTL": ([40.13, 65.93, 0.5261, 0.2171, 25.26, 20.08, 28.40, 55.47, 68.15], -4.04),
        "MGDA-UB": ([30.47, 59.90, 0.6070, 0.2555, 24.88, 19.45, 29.18, 56.88, 69.36], 1.38),
    }
    vals = np.array([v for v, _ in rows.values()])
    got = np.asarray(jax.jit(metrics.delta_m)(vals, np.array(stl), np.array(hib)))
    np.testing.assert_allclose(got, [d for _, d in rows.values()], atol=0.01)
    # Hand computation for a 2-metric case, and the baseline itself scores 0.
    assert float(metrics.delta_m([0.9, 2.0], [1.0, 1.0], [True, False])) == pytest.approx(55.0)
    assert float(metrics.delta_m(np.array(stl), stl, hib)) == 0.0
    assert metrics.delta_m(np.asarray(stl, np.float32), stl, hib).dtype == jnp.float32
    with pytest.raises(ValueError, match="baseline"):
        metrics.delta_m([1.0, 2.0], [0.0, 1.0], [True, True])
    with pytest.raises(TypeError, match="higher_is_better"):
        metrics.delta_m([1.0, 2.0], [1.0, 1.0], [1, 0])
    with pytest.raises(ValueError, match="higher_is_better"):
        metrics.delta_m([1.0, 2.0], [1.0, 1.0], [True])
