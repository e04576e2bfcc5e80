"""The ideal, local score (LS) and equivariant local score (ELS) machines.

Paper: Kamb & Ganguli, "An analytic theory of creativity in convolutional diffusion models"
(arXiv 2412.20292; ICML 2025). With data ``x0`` from a finite training set
``{phi^mu}_{mu=1..N}`` and ``x = alpha x0 + sigma eps`` (the paper writes ``sqrt(abar_t)`` and
``sqrt(1 - abar_t)``), the machines are closed-form denoisers ``x0_hat(x, t)``:

* **Ideal score machine** (the paper's eq. for the optimal score on a finite set): one softmax
  over whole training images, ``x0_hat = sum_mu W_mu(x) phi^mu`` with
  ``W = softmax_mu(-|x - alpha phi^mu|^2 / (2 sigma^2))``. It memorises: its samples are
  training images. It is :func:`diffjax.analytic.empirical`; :func:`ideal_score_machine` is
  that oracle, and :class:`LocalScoreMachine` with a window covering the image computes the
  same thing chunked (memory independent of ``N``).
* **LS machine** (locality, no equivariance): each pixel ``p`` has its own posterior over
  the training images, seen only through the ``P x P`` patch ``Omega_p`` around ``p``:
  ``x0_hat(p) = sum_mu W_mu(x_{Omega_p}) phi^mu(p)``.
* **ELS machine** (locality and translation equivariance): the posterior at ``p`` runs over
  the patch set ``P_Omega`` of patches taken at *every* position of every training image,
  ``x0_hat(p) = sum_{phi in P_Omega} W(phi | x_{Omega_p}) phi(0)`` with ``phi(0)`` the
  patch's centre pixel and ``W = softmax_phi(-|x_{Omega_p} - alpha phi|^2 / (2 sigma^2))``.
  Patches are padded as the network pads its convolutions: ``'circular'`` (a torus: every
  patch of every image, wrapped) or ``'zeros'``.
* **Boundary-broken ELS** (``boundary_broken=True``, zero padding only): a zero-padded CNN
  can tell how far a pixel is from the border, so equivariance holds only among positions
  whose patches overlap the border in the same way. Per axis, a coordinate ``i`` is in class
  ``i`` if it lies within ``P // 2`` of either end, else in the single interior class; the
  posterior at ``p`` runs over the patches at positions of ``p``'s class (in both axes) of
  every training image. So interior pixels use every fully-inside patch, edge pixels the
  patches at the same distance from that edge (anywhere along it) and corner pixels only
  the patches at the same position: the paper's construction for zero-padded ResNets/UNets.

Time-dependent locality: the effective receptive field of a trained CNN changes with noise
level, so the paper calibrates one patch size per sampler time, ``P(t)`` (pick, at each
``t`` along the CNN's own sampling trajectory, the ``P`` whose machine is closest to the
CNN's denoiser; :func:`calibrate_patch_sizes`), and samples with the calibrated machine.

The paper's process and sampler: ``abar(t) = cos^2(t / 1.008 * pi / 2)``
(:class:`KambCosine`), deterministic DDIM over ``t_n = n / 20``, ``n = 19, ..., 0`` (19
steps), started from ``x = z ~ N(0, I)`` (:func:`paper_grid`, :func:`sample_machine`).

All machines are ``'x0'`` models with the sampler contract ``model(x, t, cond)`` (``x``
channels-last ``(B, H, W, C)``, ``t`` of shape ``(B,)``; the batch shares one ``t`` when
``P(t)`` varies, as in the sampler) and are pytrees whose training data is a leaf, so the
driver traces it instead of baking it into the program. Under the driver with several
devices the batch of queries is sharded over a ``('data',)`` mesh; the training data is
replicated.

Evaluation and memory. The training set is processed in chunks of ``chunk`` images with a
running log-sum-exp (``m``, ``sum exp``, ``sum exp * value``), so memory does not grow with
``N``. Floats held at once (``b`` = bytes per float, 4 in float32):

* LS: ``B * chunk * H * W * (C + 3)`` for the chunk, plus ``B * H * W * (C + 2)`` running.
* ELS / boundary-broken ELS: the chunk's patches ``chunk * H * W * P^2 * C``, the query
  patches ``B * H * W * P^2 * C`` and the logits ``B * (H W)^2 * chunk`` (the last dominates).

Examples: 32x32x3 images, ``B = 16``, ``P = 5``: ELS logits are ``16 * 1024^2 * chunk * 4``
bytes = ``67 MB * chunk``, so ``chunk = 64`` (4.3 GB) fits in 24 GiB of CPU memory and
``chunk = 512`` (34 GB, plus the patches' 1.3 GB) fits in 80 GiB on one GPU; any ``N``
(all 50,000 CIFAR-10 images) fits since memory does not depend on ``N``; only time does
(``B H W * N H W * P^2 C`` multiply-adds per call: 1.5e14 for that example with ``N = 50k``,
minutes per call on a GPU). LS at the same size needs ``B * chunk * 1024 * 6 * 4`` bytes:
``chunk = 50,000`` is 20 GB (24 GiB CPU), i.e. no chunking needed on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from diffjax.analytic import GaussianMixture, empirical
from diffjax.processes import Process

Array = Any

__all__ = [
    "KambCosine",
    "LocalScoreMachine",
    "ideal_score_machine",
    "ls_machine",
    "els_machine",
    "paper_grid",
    "sample_machine",
    "calibrate_patch_sizes",
    "r_squared",
    "max_correlation",
    "patch_nearest_distance",
    "PADDINGS",
]

PADDINGS = ("circular", "zeros")


@struct.dataclass
class KambCosine(Process):
    """The paper's cosine process: ``abar(t) = cos^2(t / s * pi / 2)``, ``s = 1.008``.

    ``alpha = cos(t / s * pi / 2)``, ``sigma = sin(t / s * pi / 2)`` (diffjax time: data at
    0). It is iDDPM's cosine schedule without the ``+ 0.008`` offset inside the cosine, so
    ``t = 0`` is noise-free and ``t = 1`` keeps ``alpha = cos(pi / 2.016) = 0.0039``.
    Computes in the dtype of ``t`` (float64 when given), unlike the float32 processes.
    """

    s: float = 1.008

    def _u(self, t):
        t = jnp.asarray(t)
        t = t.astype(jnp.float32) if not jnp.issubdtype(t.dtype, jnp.floating) else t
        return 0.5 * jnp.pi * t / self.s

    def alpha(self, t):
        return jnp.cos(self._u(t))

    def sigma(self, t):
        return jnp.sin(self._u(t))

    def t_from_log_snr(self, lam):
        lam = jnp.asarray(lam)
        return self.s * (2.0 / jnp.pi) * jnp.arctan(jnp.exp(-0.5 * lam))

    def alpha_dot(self, t):
        return -0.5 * jnp.pi / self.s * self.sigma(t)

    def sigma_dot(self, t):
        return 0.5 * jnp.pi / self.s * self.alpha(t)


def paper_grid(num_steps: int = 20):
    """The paper's sampler times ``t_n = n / num_steps`` for ``n = num_steps - 1, ..., 0``
    (``num_steps - 1`` DDIM steps; 20 in the paper, so 19 steps from ``t = 0.95``)."""
    if int(num_steps) != num_steps or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2; got {num_steps!r}")
    return jnp.arange(num_steps - 1, -1, -1, dtype=jnp.float32) / num_steps


def ideal_score_machine(data, process: Process) -> GaussianMixture:
    """The ideal score machine of a training set ``(N, ...)``: the exact denoiser of its
    empirical distribution, :func:`diffjax.analytic.empirical` (an ``'x0'`` sampler model)."""
    return empirical(data, process)


# ----------------------------------------------------------------------------------------------
# Patches
# ----------------------------------------------------------------------------------------------


def _pad(x, d: int, padding: str):
    """Pad the two spatial axes of ``(..., H, W, C)`` by ``d`` (wrapping any number of times
    for ``'circular'``)."""
    if d == 0:
        return x
    widths = [(0, 0)] * (x.ndim - 3) + [(d, d), (d, d), (0, 0)]
    return jnp.pad(x, widths, mode="wrap" if padding == "circular" else "constant")


def _patches(x, p: int, padding: str):
    """All ``p x p`` patches, one centred on every pixel: ``(B, H, W, C)`` ->
    ``(B, H, W, p * p * C)`` (row-major over the window, then channels)."""
    b, h, w, c = x.shape
    xp = _pad(x, p // 2, padding)
    cols = [xp[:, dy:dy + h, dx:dx + w, :] for dy in range(p) for dx in range(p)]
    return jnp.stack(cols, axis=3).reshape(b, h, w, p * p * c)


def _axis_classes(n: int, p: int) -> np.ndarray:
    """Boundary class of each coordinate: itself within ``p // 2`` of an end, else -1."""
    d = p // 2
    i = np.arange(n)
    return np.where((i < d) | (i >= n - d), i, -1)


def boundary_mask(h: int, w: int, p: int) -> np.ndarray:
    """``(H W, H W)`` boolean: position ``q`` may use the patches at position ``q'``
    (the boundary-broken ELS rule: same boundary class in both axes)."""
    cy, cx = _axis_classes(h, p), _axis_classes(w, p)
    cls = np.stack(np.broadcast_arrays(cy[:, None], cx[None, :]), -1).reshape(h * w, 2)
    return np.all(cls[:, None, :] == cls[None, :, :], axis=-1)


# ----------------------------------------------------------------------------------------------
# Chunked softmax-averages with a running log-sum-exp
# ----------------------------------------------------------------------------------------------


def _chunks(data, chunk: int):
    """``(N, ...)`` -> ``(n_chunks, chunk, ...)`` and a validity mask (last chunk padded)."""
    n = data.shape[0]
    k = -(-n // chunk)
    pad = k * chunk - n
    valid = jnp.arange(k * chunk) < n
    data = jnp.concatenate([data, jnp.zeros((pad,) + data.shape[1:], data.dtype)]) if pad else data
    return data.reshape((k, chunk) + data.shape[1:]), valid.reshape(k, chunk)


def _lse_update(carry, logits, values, axis):
    """Fold one chunk into the running ``(m, s, num)``: ``logits`` has the reduced ``axis``,
    ``values`` has it too plus a trailing channel axis."""
    m, s, num = carry
    m_new = jnp.maximum(m, jnp.max(logits, axis=axis))
    # -inf everywhere so far (all masked): keep the shift finite so exp gives 0, not nan
    m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
    scale = jnp.exp(m - m_safe)
    e = jnp.exp(logits - jnp.expand_dims(m_safe, axis))
    s = s * scale + jnp.sum(e, axis=axis)
    num = num * scale[..., None] + jnp.sum(e[..., None] * values, axis=axis)
    return m_new, s, num


def _ls_x0(x, data, a, s2, p: int, padding: str, chunk: int):
    """LS machine: per-pixel posterior over training images through the ``p x p`` window."""
    b, h, w, c = x.shape
    d = p // 2
    chunks, valid = _chunks(data.astype(x.dtype), chunk)
    neg_inf = jnp.asarray(-jnp.inf, x.dtype)

    def body(carry, inp):
        dc, vc = inp  # (chunk, H, W, C), (chunk,)
        a5 = a[:, None, None, None, None]
        err = jnp.sum((x[:, None] - a5 * dc[None]) ** 2, axis=-1)  # (B, k, H, W)
        # zero padding: padded pixels are 0 in both x and the image, so their error is 0
        err = _pad(err[..., None], d, padding)[..., 0]
        win = jax.lax.reduce_window(err, jnp.asarray(0, x.dtype), jax.lax.add,
                                    (1, 1, p, p), (1, 1, 1, 1), "VALID")
        logits = -win / (2.0 * s2[:, None, None, None])
        logits = jnp.where(vc[None, :, None, None], logits, neg_inf)
        vals = jnp.broadcast_to(dc[None], (b,) + dc.shape)
        return _lse_update(carry, logits, vals, axis=1), None

    init = (jnp.full((b, h, w), -jnp.inf, x.dtype), jnp.zeros((b, h, w), x.dtype),
            jnp.zeros((b, h, w, c), x.dtype))
    (_, sm, num), _ = jax.lax.scan(body, init, (chunks, valid))
    return num / sm[..., None]


def _els_x0(x, data, a, s2, p: int, padding: str, boundary_broken: bool, chunk: int):
    """ELS machine: per-pixel posterior over every patch of every training image."""
    b, h, w, c = x.shape
    hw = h * w
    q = _patches(x, p, padding).reshape(b, hw, p * p * c)
    qn = jnp.sum(q**2, axis=-1)  # (B, HW)
    chunks, valid = _chunks(data.astype(x.dtype), chunk)
    mask = jnp.asarray(boundary_mask(h, w, p)) if boundary_broken else None
    ctr = (p // 2) * p + p // 2  # index of the centre pixel in the flattened window
    neg_inf = jnp.asarray(-jnp.inf, x.dtype)

    def body(carry, inp):
        dc, vc = inp
        k = _patches(dc, p, padding).reshape(-1, hw, p * p * c)  # (chunk, HW', P^2 C)
        kn = jnp.sum(k**2, axis=-1)  # (chunk, HW')
        dot = jnp.einsum("bqz,kpz->bqkp", q, k)  # (B, HW, chunk, HW')
        dist = qn[:, :, None, None] - 2.0 * a[:, None, None, None] * dot + \
            (a**2)[:, None, None, None] * kn[None, None]
        logits = -dist / (2.0 * s2[:, None, None, None])
        ok = vc[None, None, :, None]
        if mask is not None:
            ok = ok & mask[None, :, None, :]
        logits = jnp.where(ok, logits, neg_inf).reshape(b, hw, -1)
        centres = k.reshape(-1, hw, p * p, c)[:, :, ctr, :].reshape(1, 1, -1, c)
        return _lse_update(carry, logits, centres, axis=2), None

    init = (jnp.full((b, hw), -jnp.inf, x.dtype), jnp.zeros((b, hw), x.dtype),
            jnp.zeros((b, hw, c), x.dtype))
    (_, sm, num), _ = jax.lax.scan(body, init, (chunks, valid))
    return (num / sm[..., None]).reshape(b, h, w, c)


# ----------------------------------------------------------------------------------------------
# The machine
# ----------------------------------------------------------------------------------------------


@struct.dataclass
class LocalScoreMachine:
    """The LS or ELS machine of a training set as an ``'x0'`` sampler model.

    Build it with :func:`ls_machine` or :func:`els_machine`. ``patch_sizes`` holds one odd
    patch size, or one per time interval: size ``i`` is used for ``t`` with
    ``t_bounds[i-1] <= t < t_bounds[i]`` (``t_bounds`` increasing, one fewer than sizes;
    :func:`calibrate_patch_sizes` builds them from a sampler grid).
    """

    data: Array  # (N, H, W, C)
    process: Process
    patch_sizes: tuple = struct.field(pytree_node=False, default=(3,))
    t_bounds: tuple = struct.field(pytree_node=False, default=())
    kind: str = struct.field(pytree_node=False, default="els")  # 'ls' | 'els'
    padding: str = struct.field(pytree_node=False, default="circular")
    boundary_broken: bool = struct.field(pytree_node=False, default=False)
    chunk: int = struct.field(pytree_node=False, default=64)
    prediction = "x0"

    def with_patch_sizes(self, patch_sizes, t_bounds=()) -> LocalScoreMachine:
        """The same machine with another patch size (schedule)."""
        sizes, bounds = _check_sizes(patch_sizes, t_bounds)
        return self.replace(patch_sizes=sizes, t_bounds=bounds)

    def denoise(self, x, t, patch_size: int):
        """``x0_hat`` with a fixed patch size (``t``: scalar or ``(B,)``)."""
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"x must be (B, H, W, C) channels-last images; got shape {x.shape}")
        if tuple(x.shape[1:]) != tuple(self.data.shape[1:]):
            raise ValueError(f"x has image shape {tuple(x.shape[1:])}, the training data "
                             f"{tuple(self.data.shape[1:])}")
        dt = jnp.result_type(x.dtype, jnp.float32)
        x = x.astype(dt)
        t = jnp.asarray(t)
        t = jnp.broadcast_to(t, (x.shape[0],)) if t.ndim == 0 else t
        a = self.process.alpha(t).astype(dt)
        s2 = self.process.sigma(t).astype(dt) ** 2
        if self.kind == "ls":
            return _ls_x0(x, self.data, a, s2, patch_size, self.padding, self.chunk)
        return _els_x0(x, self.data, a, s2, patch_size, self.padding, self.boundary_broken,
                       self.chunk)

    def __call__(self, x, t, cond=None):
        if len(self.patch_sizes) == 1:
            return self.denoise(x, t, self.patch_sizes[0])
        t = jnp.asarray(t)
        t0 = t if t.ndim == 0 else t[0]
        idx = jnp.searchsorted(jnp.asarray(self.t_bounds, t0.dtype), t0, side="right")
        branches = [lambda xx, tt, p=p: self.denoise(xx, tt, p) for p in self.patch_sizes]
        return jax.lax.switch(idx, branches, x, t)


def _check_sizes(patch_sizes, t_bounds):
    sizes = (patch_sizes,) if isinstance(patch_sizes, (int, np.integer)) else tuple(patch_sizes)
    if not sizes or any(int(p) != p or p < 1 or p % 2 == 0 for p in sizes):
        raise ValueError(f"patch_size(s) must be positive odd integers; got {patch_sizes!r}")
    bounds = tuple(float(b) for b in t_bounds)
    if len(bounds) != len(sizes) - 1 or bool(np.any(np.diff(bounds) <= 0)):
        raise ValueError(f"t_bounds must be increasing with one fewer entry than patch sizes "
                         f"({len(sizes)}); got {t_bounds!r}")
    return tuple(int(p) for p in sizes), bounds


def _build(data, process, patch_size, t_bounds, kind, padding, boundary_broken, chunk):
    data = np.asarray(data)
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4 or data.shape[0] < 1:
        raise ValueError(f"data must be (N, H, W, C) (or (N, H, W)) images; got {data.shape}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}; got {padding!r}")
    if boundary_broken and padding != "zeros":
        raise ValueError("boundary_broken=True is the zero-padding variant; use padding='zeros'")
    if int(chunk) != chunk or chunk < 1:
        raise ValueError(f"chunk must be a positive integer; got {chunk!r}")
    if not isinstance(process, Process):
        raise TypeError(f"process must be a diffjax Process; got {type(process).__name__}")
    sizes, bounds = _check_sizes(patch_size, t_bounds)
    return LocalScoreMachine(jnp.asarray(data), process, sizes, bounds, kind, padding,
                             bool(boundary_broken), int(min(chunk, data.shape[0])))


def ls_machine(data, process: Process, patch_size=3, *, t_bounds=(), padding: str = "zeros",
               chunk: int = 256) -> LocalScoreMachine:
    """The LS machine (locality without equivariance) of ``data`` ``(N, H, W, C)``.

    Each pixel's ``x0`` is the posterior mean of the training images' value there, given only
    the noisy ``patch_size x patch_size`` window around it (Kamb & Ganguli 2024, sec. 3).
    A window covering every pixel from every position (``'zeros'``: ``P >= 2 max(H, W) - 1``;
    ``'circular'``: ``P = H = W`` odd) is the ideal score machine.
    """
    return _build(data, process, patch_size, t_bounds, "ls", padding, False, chunk)


def els_machine(data, process: Process, patch_size=3, *, t_bounds=(),
                padding: str = "circular", boundary_broken: bool = False,
                chunk: int = 16) -> LocalScoreMachine:
    """The ELS machine (locality and equivariance) of ``data`` ``(N, H, W, C)``.

    Each pixel's ``x0`` is a softmax-weighted average of the centre pixels of all training
    patches, weighted by how well each explains the noisy patch around the pixel (Kamb &
    Ganguli 2024, sec. 3, the ELS machine). ``boundary_broken=True`` (with
    ``padding='zeros'``) restricts each pixel to the patches at positions of its boundary
    class (module docstring), the paper's model of zero-padded CNNs.
    """
    return _build(data, process, patch_size, t_bounds, "els", padding, boundary_broken, chunk)


# ----------------------------------------------------------------------------------------------
# Sampling and calibration with the paper's setting
# ----------------------------------------------------------------------------------------------


def sample_machine(model, noise, *, process: Process | None = None, prediction: str = "x0",
                   num_steps: int = 20, grid=None, return_trajectory: bool = False, **kw):
    """Deterministic DDIM from ``noise`` (``x = z`` at ``t_0``, as the paper) on
    :func:`paper_grid` through :func:`diffjax.samplers.sample`.

    ``model`` is any sampler model (a machine, a network wrapped as ``model(x, t, cond)``);
    the same ``noise`` for a CNN and a machine gives the paper's paired comparison.
    """
    from diffjax.samplers import DDIM, sample  # samplers sit beside this module in the core

    process = getattr(model, "process", None) if process is None else process
    if process is None:
        raise ValueError("process is required when the model has no .process")
    grid = paper_grid(num_steps) if grid is None else grid
    noise = jnp.asarray(noise, jnp.float32)
    return sample(model, jax.random.key(0), noise.shape, grid, DDIM(eta=0.0), process=process,
                  prediction=prediction, x_init=noise, return_trajectory=return_trajectory, **kw)


def calibrate_patch_sizes(machine: LocalScoreMachine, cnn, noise, *, cnn_prediction: str = "eps",
                          candidates: Sequence[int] = (3, 5, 7, 9, 11), num_steps: int = 20,
                          grid=None, metric: str = "l2"):
    """Calibrate ``P(t)`` against a trained CNN as Kamb & Ganguli do.

    Runs the CNN's own DDIM trajectory from ``noise`` on the grid; at each step ``t_n`` and
    for each sample, picks the candidate ``P`` whose machine denoiser is closest to the CNN's
    (``'l2'``: smallest ``|x0_cnn - x0_P|``, the same argmin as for the scores at one ``t``;
    ``'cos'``: largest cosine between the two score estimates), then takes the median over
    samples (rounded to an odd size). Returns ``(machine with the P(t) schedule, info)``,
    ``info`` holding the grid, the per-step sizes and the per-(P, step) mean errors.
    """
    from diffjax.parameterization import to_x0_eps

    if metric not in ("l2", "cos"):
        raise ValueError(f"metric must be 'l2' or 'cos'; got {metric!r}")
    cands = _check_sizes(tuple(candidates), np.arange(len(candidates) - 1))[0]
    grid = paper_grid(num_steps) if grid is None else jnp.asarray(grid, jnp.float32)
    proc = machine.process
    _, traj = sample_machine(cnn, noise, process=proc, prediction=cnn_prediction, grid=grid,
                             return_trajectory=True)
    states = jnp.concatenate([jnp.asarray(noise, jnp.float32)[None], traj[:-1]])  # x at t_n
    fns = {p: jax.jit(lambda x, t, p=p: machine.denoise(x, t, p)) for p in cands}
    cnn_x0 = jax.jit(lambda x, t: to_x0_eps(cnn_prediction, cnn(x, t, None), x, t, proc)[0])
    n_steps = grid.shape[0] - 1
    errs = np.zeros((len(cands), n_steps))
    chosen = []
    for n in range(n_steps):
        x = states[n]
        tb = jnp.full((x.shape[0],), grid[n])
        ref = np.asarray(cnn_x0(x, tb), np.float64)
        per = []
        for j, p in enumerate(cands):
            est = np.asarray(fns[p](x, tb), np.float64)
            if metric == "l2":
                e = np.sqrt(np.sum((ref - est) ** 2, axis=(1, 2, 3)))
            else:  # score direction is that of alpha x0_hat - x
                a = float(proc.alpha(grid[n]))
                u = (a * ref - np.asarray(x)).reshape(len(x), -1)
                v = (a * est - np.asarray(x)).reshape(len(x), -1)
                e = -np.sum(u * v, 1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
            per.append(e)
            errs[j, n] = float(np.mean(e))
        best = np.asarray(cands)[np.argmin(np.stack(per), axis=0)]
        med = int(np.median(best))
        chosen.append(med if med % 2 else min(cands, key=lambda c: (abs(c - med), c)))
    g = np.asarray(grid[:-1], np.float64)  # t of each step, decreasing
    order = np.argsort(g)
    sizes = [chosen[i] for i in order]
    ts = g[order]
    bounds = tuple(0.5 * (ts[i] + ts[i + 1]) for i in range(len(ts) - 1))
    info = dict(t=g.tolist(), patch_size=chosen, candidates=list(cands), mean_error=errs.tolist(),
                metric=metric)
    return machine.with_patch_sizes(sizes, bounds), info


# ----------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------


def r_squared(target, pred) -> np.ndarray:
    """Per-sample coefficient of determination of ``pred`` for ``target``:
    ``1 - sum (target - pred)^2 / sum (target - mean(target))^2`` over each sample's pixels."""
    y = np.asarray(target, np.float64).reshape(len(target), -1)
    f = np.asarray(pred, np.float64).reshape(len(pred), -1)
    if y.shape != f.shape:
        raise ValueError(f"target and pred must have the same shape; got {y.shape}, {f.shape}")
    ss = np.sum((y - y.mean(1, keepdims=True)) ** 2, axis=1)
    return 1.0 - np.sum((y - f) ** 2, axis=1) / ss


def max_correlation(samples, data):
    """For each sample, the largest Pearson correlation with any training image, and that
    image's index: ``(corr (B,), index (B,))``. 1.0 means a copy of a training image."""
    x = np.asarray(samples, np.float64).reshape(len(samples), -1)
    d = np.asarray(data, np.float64).reshape(len(data), -1)
    x = x - x.mean(1, keepdims=True)
    d = d - d.mean(1, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    c = x @ d.T
    return c.max(1), c.argmax(1)


def patch_nearest_distance(samples, data, patch_size: int, padding: str = "circular",
                           chunk: int = 64):
    """RMS distance (per pixel) from every ``P x P`` patch of each sample to its nearest
    training patch (any position, any image): ``(B, H, W)``. The paper's "patch mosaic"
    measurement; small everywhere means every local patch is a training patch."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}; got {padding!r}")
    x = jnp.asarray(samples, jnp.float32)
    b, h, w, c = x.shape
    q = _patches(x, patch_size, padding).reshape(b * h * w, -1)
    qn = jnp.sum(q**2, 1)
    best = jnp.full((b * h * w,), jnp.inf)
    d = np.asarray(data, np.float32)
    for i in range(0, len(d), chunk):
        k = _patches(jnp.asarray(d[i:i + chunk]), patch_size, padding).reshape(-1, q.shape[1])
        dist = qn[:, None] - 2.0 * q @ k.T + jnp.sum(k**2, 1)[None]
        best = jnp.minimum(best, jnp.min(dist, 1))
    return np.sqrt(np.maximum(np.asarray(best), 0.0) / q.shape[1]).reshape(b, h, w)
