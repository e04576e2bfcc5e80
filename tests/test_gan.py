"""Adversarial methods: GAN losses and R1 (closed forms), the DDGAN chain (the exact Gaussian
conditional), Diffusion-GAN's adaptive diffusion (the paper's arithmetic, pool statistics and the
invertible shift), and the two-network train step (bit-exact resume, non-finite guard)."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.losses import ddgan as C
from diffjax.losses import gan as gl

# the package re-exports the factory under the module's name: import the module itself
DG = importlib.import_module("diffjax.methods.diffusion_gan")


def test_gan_losses_and_r1_closed_forms():
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal(7), rng.standard_normal(7)
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    # non-saturating: -log sigmoid(D(real)) - log(1 - sigmoid(D(fake))); G: -log sigmoid(D(fake))
    np.testing.assert_allclose(gl.d_loss_nonsaturating(real, fake),
                               -np.log(sig(real)) - np.log(1 - sig(fake)), rtol=1e-5)
    np.testing.assert_allclose(gl.g_loss_nonsaturating(fake), -np.log(sig(fake)), rtol=1e-5)
    np.testing.assert_allclose(gl.d_loss_hinge(real, fake),
                               np.maximum(0, 1 - real) + np.maximum(0, 1 + fake), rtol=1e-6)
    # R1 of a linear D(x) = <w, x> + b is ||w||^2 for every example, and the gradient of
    # (gamma/2) E||grad D||^2 with respect to w is gamma w (double backward through jax.grad)
    x = jnp.asarray(rng.standard_normal((5, 3, 2, 2)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 2, 2)), jnp.float32)
    lin = lambda w, x: jnp.sum(x * w[None], axis=(1, 2, 3)) + 0.3
    np.testing.assert_allclose(gl.r1_penalty(lambda v: lin(w, v), x),
                               np.full(5, np.sum(np.square(w))), rtol=1e-5)
    gamma = 0.05
    g = jax.grad(lambda w: 0.5 * gamma * jnp.mean(gl.r1_penalty(lambda v: lin(w, v), x)))(w)
    np.testing.assert_allclose(g, gamma * np.asarray(w), rtol=1e-5)
    # a quadratic D(x) = x^T A x: the per-example gradient 2 A x (examples stay separate)
    A = rng.standard_normal((4, 4)).astype(np.float32)
    xq = rng.standard_normal((6, 4)).astype(np.float32)
    quad = lambda v: jnp.einsum("bi,ij,bj->b", v, A, v)
    np.testing.assert_allclose(gl.r1_penalty(quad, xq),
                               np.sum(np.square(xq @ (A + A.T).T), axis=1), rtol=1e-4)
    with pytest.raises(ValueError, match="per-example logits"):
        gl.r1_penalty(lambda v: jnp.sum(v), xq)
    # lazy regularisation: every k steps, weight k (StyleGAN2) or 1 (DDGAN's code)
    steps = np.arange(40)
    np.testing.assert_array_equal(gl.lazy_weight(steps, 16),
                                  np.where(steps % 16 == 0, 16.0, 0.0))
    np.testing.assert_array_equal(gl.lazy_weight(steps, 15, scale_by_interval=False),
                                  np.where(steps % 15 == 0, 1.0, 0.0))
    assert float(gl.lazy_weight(7, 1)) == 1.0
    with pytest.raises(ValueError, match="every"):
        gl.lazy_weight(0, 0)


def _gaussian_conditional(A, S, a, b2):
    """Coefficients of E[x_t | x0, x_{t+1}] and Var[x_t | x0, x_{t+1}] from the joint
    covariance of (x0, x_t, x_{t+1}) with x_t = A x0 + S z, x_{t+1} = a x_t + sqrt(b2) z'."""
    vt = A**2 + S**2
    cov = np.array([[1.0, A, a * A], [A, vt, a * vt], [a * A, a * vt, a * a * vt + b2]])
    keep = [0, 2]
    coef = np.linalg.solve(cov[np.ix_(keep, keep)], cov[keep, 1])
    return coef[0], coef[1], vt - coef @ cov[keep, 1]


@pytest.mark.parametrize("T", [1, 2, 4])
def test_ddgan_posterior_is_the_exact_gaussian_conditional(T):
    """float64: with beta_0 = 0 the posterior is the forward chain's exact conditional (1e-12);
    with the paper code's beta_0 = 1e-8 it is off by ~1e-8 (documented in the module)."""
    for beta0, tol in ((0.0, 1e-12), (1e-8, 1e-7)):
        tab = C.ddgan_tables(T, 0.1, 20.0, beta0=beta0)
        for t in range(T):
            want = _gaussian_conditional(tab["a_s_cum"][t], tab["sigmas_cum"][t],
                                         tab["a_s"][t + 1], tab["betas"][t + 1])
            got = (tab["post_c1"][t], tab["post_c2"][t], tab["post_var"][t])
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
        if beta0 > 0:
            err = abs(tab["post_c1"][T - 1] - _gaussian_conditional(
                tab["a_s_cum"][T - 1], tab["sigmas_cum"][T - 1], tab["a_s"][T],
                tab["betas"][T])[0])
            assert err > 1e-12  # the quirk is real, so the exact case above is a real check
    # the chain's end is the VP SDE's alpha at tau = 1 (Song et al. 2021, eq. 33)
    tab = C.ddgan_tables(4, 0.1, 20.0, beta0=0.0)
    tau0 = 1e-3
    a2 = lambda tau: np.exp(-0.5 * tau**2 * 19.9 - tau * 0.1)
    np.testing.assert_allclose(tab["a_s_cum"][-1] ** 2, a2(1.0) / a2(tau0), rtol=1e-12)
    assert tab["post_var"][0] == 0.0 or tab["post_c2"][0] < 1e-12  # t = 0: x0 itself
    # the jnp sampler uses these tables: noise = 0 gives the mean, t = 0 adds no noise
    chain = C.ddgan_chain(4)
    x0 = jnp.asarray([[0.5, -1.0], [0.2, 0.3]], jnp.float32)
    x1 = jnp.asarray([[1.0, 2.0], [-0.4, 0.1]], jnp.float32)
    t = jnp.asarray([0, 3])
    out = C.posterior_sample(chain, x0, x1, t, jnp.ones_like(x0))
    c1, c2, v = (np.asarray(a, np.float64) for a in (chain.post_c1, chain.post_c2,
                                                     chain.post_var))
    np.testing.assert_allclose(out[0], c1[0] * x0[0] + c2[0] * x1[0], rtol=1e-6)
    np.testing.assert_allclose(out[1], c1[3] * x0[1] + c2[3] * x1[1] + np.sqrt(v[3]), rtol=1e-5)
    with pytest.raises(ValueError, match="num_timesteps"):
        C.ddgan_chain(0)


def test_diffusion_gan_adaptation_pool_and_invertible_shift():
    # eq. 7 with ADA's pace: p moves by B * interval / (1000 * kimg) towards r_d's side
    kw = dict(d_target=0.6, batch_size=64, ada_interval=4, ada_kimg=100.0)
    dp = 64 * 4 / (100 * 1000)
    np.testing.assert_allclose(float(DG.adapt_p(0.5, 0.8, **kw)), 0.5 + dp, rtol=1e-6)
    np.testing.assert_allclose(float(DG.adapt_p(0.5, 0.4, **kw)), 0.5 - dp, rtol=1e-6)
    assert float(DG.adapt_p(0.0, 0.1, **kw)) == 0.0 and float(DG.adapt_p(1.0, 0.9, **kw)) == 1.0
    ps = np.array([0.0, 0.00256, 0.3, 0.50050505, 1.0], np.float32)
    np.testing.assert_array_equal(DG.steps_from_p(ps, 10, 1000),
                                  np.clip(10 + np.round(ps * 990), 10, 1000))
    # alphabar of linspace(1e-4, 2e-2, T), recomputed for a traced T inside a t_max table
    T, t_max = 37, 100
    abar = np.asarray(DG.alpha_bars(jnp.int32(T), t_max))
    want = np.concatenate([[1.0], np.cumprod(1 - np.linspace(1e-4, 2e-2, T))])
    np.testing.assert_allclose(abar[: T + 1], want, rtol=1e-5)
    np.testing.assert_allclose(abar[T + 1:], want[-1], rtol=1e-5)
    # pool statistics: half zeros, P(t = k) ∝ k - 1 (so never 1), E[t | t > 0] = 2(T+1)/3
    T = 12
    draw = jax.jit(jax.vmap(lambda k: DG.draw_pool(k, T, 50, "priority")))
    pools = np.asarray(draw(jax.random.split(jax.random.key(0), 2000)))
    assert pools.shape == (2000, 64) and np.all(pools[:, 32:] == 0)
    nz = pools[:, :32].ravel()
    assert nz.min() >= 2 and nz.max() <= T
    freq = np.bincount(nz, minlength=T + 1)[1:] / nz.size
    prob = np.arange(T) / np.arange(T).sum()
    np.testing.assert_allclose(freq, prob, atol=4 * np.sqrt(prob.max() / nz.size))
    np.testing.assert_allclose(nz.mean(), 2 * (T + 1) / 3, rtol=0.01)
    uni = np.asarray(jax.vmap(lambda k: DG.draw_pool(k, T, 50, "uniform"))(
        jax.random.split(jax.random.key(1), 500)))[:, :32]
    np.testing.assert_allclose(uni.mean(), (T + 1) / 2, rtol=0.02)
    assert uni.min() == 1
    # the same diffusion shifts real and fake alike and is invertible: the characteristic
    # function of y = sqrt(ab) x + sqrt(1 - ab) sigma eps is phi_x(sqrt(ab) w) times a
    # Gaussian factor, for x = +-1 (real) and x ~ N(0, 1) (fake) with one shared (t, eps) map
    n, sigma, ab = 200_000, 0.5, float(abar[20])
    rng = np.random.default_rng(0)
    xs = {"real": rng.choice([-1.0, 1.0], n), "fake": rng.standard_normal(n)}
    phi = {"real": lambda w: np.cos(np.sqrt(ab) * w),
           "fake": lambda w: np.exp(-0.5 * ab * w**2)}
    omega = np.array([0.5, 1.0, 2.0])
    for name, x in xs.items():
        eps = rng.standard_normal(n)
        y = np.asarray(DG.diffuse(jnp.asarray(x, jnp.float32), jnp.full((n,), 20),
                                  jnp.asarray(abar), sigma, jnp.asarray(eps, jnp.float32)))
        ecf = np.mean(np.cos(omega[:, None] * y[None]), axis=1)
        recovered = ecf / np.exp(-0.5 * (1 - ab) * sigma**2 * omega**2)
        np.testing.assert_allclose(recovered, phi[name](omega), atol=0.01)
    with pytest.raises(ValueError, match="ts_dist"):
        DG.draw_pool(jax.random.key(0), 5, 10, "nope")


# ----------------------------------------------------------------------------------------------
# the two-network train step (toy MLPs on 2-D points)
# ----------------------------------------------------------------------------------------------


def _toy(method_name, **kw):
    from diffjax import methods as M
    from diffjax import processes
    from diffjax.models.denoiser import Network
    from diffjax.models.gan import MLPGenerator

    cond = method_name == "ddgan"
    net = Network(lambda rngs: MLPGenerator(2, 4, 32, 2, time_dim=16, conditional=cond,
                                            rngs=rngs), processes.VP())
    setup = M.Setup(net, (2,), None, 16, 100)
    return M.METHODS[method_name](setup, d_width=32, d_depth=2, **kw)


def _state(m):
    from diffjax import train as T

    return T.create_train_state(m.init_params, m.optimizer, ema_names=tuple(m.ema_specs),
                                init_extra=m.init_extra)


def _batches(n):
    rng = np.random.default_rng(0)
    return [{"image": jnp.asarray(rng.standard_normal((16, 2)), jnp.float32)} for _ in range(n)]


def _resume_is_bit_exact(m, tmp_path):
    from diffjax import train as T

    step = jax.jit(m.train_step)
    batches = _batches(4)
    a = _state(m)
    metrics = []
    for b in batches:
        a, met = step(a, b)
        metrics.append(met)
    b_state = _state(m)
    for b in batches[:2]:
        b_state, _ = step(b_state, b)
    ck = T.Checkpointer(tmp_path / "ck")
    ck.save(2, b_state, None, None, force=True)
    ck.wait()
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), _state(m))
    _, restored, _, _ = ck.restore_latest(abstract)
    ck.close()
    assert int(restored.step) == 2 and set(restored.params) == {"G", "D"}
    assert set(restored.opt_state) == {"G", "D"}
    for b in batches[2:]:
        restored, _ = step(restored, b)
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(restored)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    return step, a, metrics


def test_diffusion_gan_step_resumes_bit_exactly_adapts_T_and_skips_nonfinite(tmp_path):
    """Two networks + adaptive extra state: 4 steps == 2 steps, save, restore, 2 steps (every
    leaf bit-equal, incl. both Adam states, the EMA, T, p and the pool). With ada_kimg tiny, one
    adaptation at step 4 moves p to 0 or 1 by the sign of the mean r_d of steps 1-4 (eq. 7);
    a NaN batch skips the update and leaves the whole state as it was."""
    m = _toy("diffusion_gan", t_min=2, t_max=20, ada_kimg=1e-3, lazy_reg=2, noise_std=0.5)
    step, a, metrics = _resume_is_bit_exact(m, tmp_path)
    r_d = np.mean([float(x["r_d"]) for x in metrics])
    assert int(a.extra["T"]) == (20 if r_d > 0.6 else 2)
    assert float(a.extra["signs_count"]) == 0.0  # the sums restart after an adaptation
    assert all(float(x["finite"]) == 1.0 for x in metrics) and int(a.skipped) == 0
    bad = {"image": jnp.full((16, 2), jnp.nan, jnp.float32)}
    before = jax.tree_util.tree_map(np.asarray, a)
    after, met = step(a, bad)
    assert float(met["finite"]) == 0.0 and int(after.skipped) == 1 and int(after.step) == 5
    kept = lambda s: jax.tree_util.tree_leaves((s.params, s.opt_state, s.ema, s.extra))
    for x, y in zip(kept(before), kept(after), strict=True):
        np.testing.assert_array_equal(x, np.asarray(y))
    # one generator call per sample; sample i depends only on (key, offset + i)
    s = np.asarray(m.sample(after.ema["ema"], jax.random.key(3), 6))
    np.testing.assert_array_equal(s[2:], np.asarray(m.sample(after.ema["ema"],
                                                             jax.random.key(3), 4, offset=2)))


@pytest.mark.slow  # one more two-network compile (~20 s of CPU; minutes on a loaded one)
def test_ddgan_step_resumes_bit_exactly_and_samples_per_index(tmp_path):
    m = _toy("ddgan", num_timesteps=4, lazy_reg=2)
    _, a, metrics = _resume_is_bit_exact(m, tmp_path)
    assert float(metrics[0]["r1"]) > 0 and float(metrics[1]["r1"]) == 0  # lazy: steps 0, 2
    s = np.asarray(m.sample(a.params, jax.random.key(3), 6))
    np.testing.assert_array_equal(s[2:], np.asarray(m.sample(a.params, jax.random.key(3), 4,
                                                             offset=2)))
    assert m.nfe == 4 and np.all(np.isfinite(s))


def test_gan_methods_reject_bad_arguments():
    with pytest.raises(ValueError, match="conditional generator"):
        _toy_wrong()
    with pytest.raises(ValueError, match="t_min"):
        _toy("diffusion_gan", t_min=1)
    with pytest.raises(ValueError, match="lazy"):
        _toy("ddgan", lazy_reg=0)
    with pytest.raises(ValueError, match="loss"):
        _toy("ddgan", loss="wgan")


def _toy_wrong():
    """A Diffusion-GAN generator G(z) handed to DDGAN, which needs G(x_{t+1}, t, z)."""
    from diffjax import methods as M
    from diffjax import processes
    from diffjax.models.denoiser import Network
    from diffjax.models.gan import MLPGenerator

    net = Network(lambda rngs: MLPGenerator(2, 4, 8, 1, conditional=False, rngs=rngs),
                  processes.VP())
    return M.ddgan(M.Setup(net, (2,), None, 16, 10))
