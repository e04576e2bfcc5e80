"""Video Diffusion Models (Ho et al. 2022): the factorised 3D UNet against the 2-D UNet it is
built from, the temporal attention's relative positions and image mask, the 3-D guidance path
against the 2-D one on independent Gaussian frames, the moving-shapes data and the video
method."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffjax as dj
from diffjax import guidance as G
from diffjax import samplers as S
from diffjax.models import unet3d as U3

PROC = dj.VP()


# ------------------------------------------------------------------------------ the 3D UNet


def _randomised(model, seed=0, scale=0.2):
    """Every parameter redrawn N(0, scale^2): zero-initialised output projections (temporal
    blocks, conv_out) would make the comparisons below vacuous."""
    st = nnx.state(model, nnx.Param)
    leaves, tdef = jax.tree.flatten(st)
    rng = np.random.default_rng(seed)
    nnx.update(model, jax.tree.unflatten(
        tdef, [jnp.asarray(rng.normal(0, scale, x.shape), x.dtype) for x in leaves]))
    return model


@pytest.fixture(scope="module")
def net():
    """A tiny 3D UNet on 8x8 frames (attention at 4x4), random weights everywhere, and its
    jitted 3-D and 2-D forwards (one compile per input shape)."""
    m = _randomised(U3.unet3d_from_preset("tiny", frame_size=8, attn_resolutions=(4,),
                                          in_channels=1, rngs=nnx.Rngs(0)))
    g3, s3 = nnx.split(m)
    g2, s2 = nnx.split(U3.spatial_unet(m))
    f3 = jax.jit(lambda s, x, t, img: nnx.merge(g3, s)(x, t, {"is_image": img}))
    f2 = jax.jit(lambda s, x, t: nnx.merge(g2, s)(x, t))
    return m, (lambda x, t, img: np.asarray(f3(s3, x, t, img))), (
        lambda x, t: np.asarray(f2(s2, x, t)))


def test_unet3d_image_path_is_the_2d_unet_and_temporal_attention_is_relative_and_masked(net):
    """One F = 4 forward over four clips (same noise level) checks:

    * image frames (and, separately, a one-frame clip) equal the 2-D UNet built from the 3-D
      network's spatial weights, frame by frame;
    * video frames differ from it (the temporal blocks are active: the checks are not vacuous);
    * masking: changing an image frame changes no other frame (exactly);
    * relative positions: a 3-frame video placed at frames 1-3 (an image at 0) and at frames
      0-2 (an image at 3) gives the same outputs: only ``j - i`` enters. An absolute position
      embedding would fail this;
    * a clip of 4 equal frames stays frame-constant.
    """
    _, f3, f2 = net
    rng = np.random.default_rng(1)
    clip = rng.normal(size=(3, 8, 8, 1)).astype(np.float32)
    z, z2 = rng.normal(size=(2, 1, 8, 8, 1)).astype(np.float32)
    const = np.repeat(clip[:1], 4, axis=0)
    x = np.stack([np.concatenate([z, clip]), np.concatenate([clip, z]),
                  np.concatenate([z2, clip]), const])
    img = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
    t = np.full((4,), 300.0, np.float32)
    out = f3(x, t, img)
    per_frame = f2(x.reshape(16, 8, 8, 1), np.full((16,), 300.0, np.float32)).reshape(out.shape)
    scale = np.abs(per_frame).max()
    # image frames are the 2-D network's output
    for b, f in ((0, 0), (1, 3), (2, 0)):
        np.testing.assert_allclose(out[b, f], per_frame[b, f], atol=1e-5 * scale)
    # video frames are not (temporal attention mixes frames)
    assert np.abs(out[0, 1:] - per_frame[0, 1:]).max() > 1e-2 * scale
    # changing the image frame leaves the video frames exactly unchanged
    np.testing.assert_array_equal(out[2, 1:], out[0, 1:])
    assert np.abs(out[2, 0] - out[0, 0]).max() > 1e-2 * scale
    # time shift: the same video at frames 1..3 and 0..2
    np.testing.assert_allclose(out[0, 1:], out[1, :3], atol=1e-5 * scale)
    # equal frames stay equal
    np.testing.assert_allclose(out[3], np.broadcast_to(out[3, :1], out[3].shape),
                               atol=1e-5 * scale)
    # a single-frame clip is an image
    one = f3(x[:, :1], t, np.zeros((4, 1), bool))
    np.testing.assert_allclose(one[:, 0], per_frame[:, 0], atol=1e-5 * scale)


def test_relative_position_buckets_depend_only_on_the_offset():
    """T5 buckets (Raffel et al. 2020, sec. 2.1): a Toeplitz table; exact buckets for the first
    ``num_buckets // 4`` offsets of each sign, logarithmic beyond, saturating at
    ``max_distance``; the two signs never share a bucket."""
    nb, md = 32, 128  # T5's defaults
    pos = np.arange(300)
    table = U3.relative_position_bucket(pos[None, :] - pos[:, None], nb, md)
    for k in range(-50, 51):  # Toeplitz: constant along every diagonal
        assert len(set(np.diagonal(table, k).tolist())) == 1
    b = {d: int(U3.relative_position_bucket(np.array(d), nb, md)) for d in range(-299, 300)}
    assert [b[-d] for d in range(8)] == list(range(8))  # j - i <= 0: buckets 0..7 exact
    assert [b[d] for d in range(1, 8)] == list(range(17, 24))  # j - i > 0: 16 + exact
    assert {b[d] for d in range(-299, 1)} <= set(range(16))
    assert {b[d] for d in range(1, 300)} <= set(range(16, 32))
    # log buckets: offset 8 * 2^(k/1) ... the bucket of n >= 8 is 8 + floor(8 log(n/8) / log 16)
    for n in (8, 11, 16, 31, 32, 64, 100, 127):
        assert b[-n] == 8 + int(np.floor(8 * np.log(n / 8) / np.log(16))), n
    assert b[-128] == b[-299] == 15 and b[128] == b[299] == 31
    with pytest.raises(ValueError, match="num_buckets"):
        U3.relative_position_bucket(np.zeros(2), 7, 32)


def test_unet3d_bad_inputs_name_the_argument(net):
    m = net[0]
    with pytest.raises(ValueError, match=r"\(B, F, H, W, C\)"):
        m(np.zeros((2, 8, 8, 1), np.float32), np.zeros((2,), np.float32))
    with pytest.raises(ValueError, match="is_image"):
        m.temporal_mid(np.zeros((2, 3, 2, 2, 32), np.float32), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="image_frames"):
        U3.TemporalAttention(8, groups=4, image_frames="nope", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("mode", U3.IMAGE_FRAME_MODES)
def test_temporal_block_jacobian_is_zero_between_image_frames(mode):
    """The joint-training mask as a Jacobian: d out_i / d in_j = 0 whenever frame i or j is an
    image frame (i != j), nonzero between video frames; in ``'skip'`` mode an image frame's
    block is the identity."""
    blk = _randomised(U3.TemporalAttention(4, num_heads=2, groups=1, image_frames=mode,
                                           num_buckets=8, max_distance=8, rngs=nnx.Rngs(1)))
    g, s = nnx.split(blk)
    img = np.array([[0, 1, 0, 1]], bool)
    x = np.random.default_rng(2).normal(size=(1, 4, 2, 2, 4)).astype(np.float32)
    jac = np.asarray(jax.jacobian(lambda xx: nnx.merge(g, s)(xx, img))(x)).reshape(64, 64)
    block = np.abs(jac.reshape(4, 16, 4, 16)).sum(axis=(1, 3))  # (frame out, frame in)
    video = [0, 2]
    for i in range(4):
        for j in range(4):
            if i != j and (i not in video or j not in video):
                assert block[i, j] == 0.0, (i, j)
    assert block[0, 2] > 1e-3 and block[2, 0] > 1e-3
    if mode == "skip":
        np.testing.assert_allclose(jac[16:32, 16:32], np.eye(16), atol=1e-6)
    else:
        assert np.abs(jac[16:32, 16:32] - np.eye(16)).max() > 1e-3


# ------------------------------------------------------- guidance on (B, F, H, W, C) vs 2-D


def test_reconstruction_guidance_3d_path_equals_2d_path_on_independent_frames():
    """Jointly Gaussian "videos" whose frames are independent (covariance ``I_F (x) Sigma``):
    reconstruction guidance (Ho et al. 2022, eq. 7) over ``(B, F, H, W, C)`` conditioned on the
    first two frames must give the same samples as the 2-D path, which treats the ``B F``
    frames as images (known frames guided to ``x^a``, the others unconditional): with
    independent frames the guidance gradient never reaches an unknown frame. Deterministic
    DDIM from a shared ``x_init`` makes the comparison exact up to float32 rounding."""
    F_, H, W, C, B = 4, 2, 2, 1, 6
    P = H * W * C
    rng = np.random.default_rng(0)
    a = rng.normal(size=(P, P))
    sig = 0.2 * a @ a.T / P + 0.05 * np.eye(P)
    video_model = dj.analytic.Gaussian.create(np.zeros(F_ * P), np.kron(np.eye(F_), sig), PROC)
    frame_model = dj.analytic.Gaussian.create(np.zeros(P), sig, PROC)
    known = rng.normal(size=(B, F_, H, W, C)).astype(np.float32)
    mask = (np.arange(F_) < 2).astype(np.float32)[:, None, None, None]  # (F, 1, 1, 1)
    x_init = rng.normal(size=(B, F_, H, W, C)).astype(np.float32)
    grid = dj.uniform_grid(40, 1.0, 0.0)  # ends at t = 0: DDIM returns x0_hat
    step = S.get_step("ddim", eta=0.0)
    g3 = G.ReconstructionGuidance(video_model, PROC, known, mask, 2.0, prediction_in="x0")
    x3 = np.asarray(S.sample(g3, jax.random.key(0), known.shape, grid, step, process=PROC,
                             prediction="x0", x_init=x_init, mesh=None))
    mask2 = np.broadcast_to(mask[None], (B, F_, 1, 1, 1)).reshape(B * F_, 1, 1, 1)
    g2 = G.ReconstructionGuidance(frame_model, PROC, known.reshape(B * F_, H, W, C), mask2, 2.0,
                                  prediction_in="x0")
    x2 = np.asarray(S.sample(g2, jax.random.key(0), (B * F_, H, W, C), grid, step, process=PROC,
                             prediction="x0", x_init=x_init.reshape(B * F_, H, W, C), mesh=None))
    np.testing.assert_allclose(x3.reshape(x2.shape), x2, atol=2e-5)
    np.testing.assert_allclose(x3[:, :2], known[:, :2], atol=2e-5)  # known frames reproduced
    # the unknown frames are not the known ones (the comparison is not between copies)
    assert np.abs(x3[:, 2:] - known[:, 2:]).mean() > 0.1


# ------------------------------------------------------------------------------------ data


def test_moving_shapes_bounce_deterministically_and_positions_match_the_pixels():
    """The generated squares: deterministic from the seed, the returned centres equal the
    pixel centroids (an independent read-out), every step moves by the velocity or reflects
    off a wall, and a square never leaves the frame."""
    from diffjax.data.video import moving_shapes, object_position

    a = moving_shapes(64, num_frames=12, size=16, square=4, max_speed=2, seed=3)
    b = moving_shapes(64, num_frames=12, size=16, square=4, max_speed=2, seed=3)
    np.testing.assert_array_equal(a["videos"], b["videos"])
    assert not np.array_equal(a["videos"], moving_shapes(64, num_frames=12, seed=4)["videos"])
    v, p = a["videos"], a["positions"][:, :, 0]
    assert v.shape == (64, 12, 16, 16, 1) and set(np.unique(v)) == {-1.0, 1.0}
    assert ((v > 0).sum(axis=(2, 3, 4)) == 16).all()  # one whole 4x4 square per frame
    np.testing.assert_allclose(object_position(v), p, atol=1e-9)
    step = np.abs(np.diff(p, axis=1))
    assert step.max() <= 2 and (step.sum(axis=-1) > 0).all()  # |v| <= max_speed, never still
    assert p.min() >= 1.5 and p.max() <= 16 - 2.5  # centres of squares inside the frame
    with pytest.raises(ValueError, match="size"):
        moving_shapes(2, size=6, square=4, max_speed=2)


def test_tfds_video_source_strides_frames_under_mock_data():
    """``bair_robot_pushing_small`` through ``tfds.data_source`` under ``tfds.testing.mock_data``
    (offline, random pixels, no TensorFlow): clips are the record's frames ``s, s + stride,
    ...``, non-overlapping, and batch through grain."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from diffjax import data as D
    from diffjax.data.video import TFDSVideoSource, clip_starts

    with tfds.testing.mock_data(num_examples=2):
        src = TFDSVideoSource("bair_robot_pushing_small", num_frames=4, frame_stride=3)
        raw = tfds.data_source("bair_robot_pushing_small", split="train")
        starts = clip_starts(30, 4, 3)  # 30 frames per record, clips of span 10 every 12
        assert list(starts) == [0, 12] and len(src) == 2 * len(starts)
        np.testing.assert_array_equal(src[1]["image"], raw[0]["image_main"][12:22:3])
        np.testing.assert_array_equal(src[2]["image"], raw[1]["image_main"][0:10:3])
        batch = next(iter(D.make_loader(src, batch_size=2, seed=0)))
        assert batch["image"].shape == (2, 4, 64, 64, 3) and batch["image"].dtype == np.float32
        assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
        via_name = D.get_source("video:bair_robot_pushing_small", num_frames=4, frame_stride=3)
        assert len(via_name) == len(src)
    with pytest.raises(ValueError, match="shorter"):
        clip_starts(5, 4, 2)


# ---------------------------------------------------------------------------------- method


def test_joint_batch_appends_independent_images_from_other_clips():
    """Joint image-video batches (Ho et al. 2022, sec. 3): every appended image is a frame of
    another clip of the batch, flagged in ``is_image``; the video frames are untouched."""
    from diffjax.methods.video import frame_mask, joint_batch

    vids = np.arange(5 * 3).reshape(5, 3, 1, 1, 1).astype(np.float32)  # value = 3 b + f
    x, img = joint_batch(jax.random.key(0), jnp.asarray(vids), 4)
    x, img = np.asarray(x), np.asarray(img)
    assert x.shape == (5, 7, 1, 1, 1) and img.shape == (5, 7)
    assert not img[:, :3].any() and img[:, 3:].all()
    np.testing.assert_array_equal(x[:, :3], vids)
    src_clip = x[:, 3:, 0, 0, 0] // 3
    assert (src_clip != np.arange(5)[:, None]).all()  # from another clip
    np.testing.assert_array_equal(frame_mask(6, first=2)[:, 0, 0, 0], [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(frame_mask(7, every=3)[:, 0, 0, 0], [1, 0, 0, 1, 0, 0, 1])
    with pytest.raises(ValueError, match="first"):
        frame_mask(4)


@pytest.mark.slow  # ~60 s of single-core compile and 2 x 2 blocks of 100 steps at n = 4000
def test_autoregressive_extension_continues_an_ar1_gaussian_video():
    """Block-autoregressive extension (Ho et al. 2022, sec. 3.1) with the exact denoiser of an
    AR(1) Gaussian video (frame correlation rho = 0.9, 4-frame window, 2 frames of overlap)
    from 2 given frames to 8: the result starts with the given frames, and every generated
    frame regresses on the frame before it with the AR(1) coefficient ``rho`` and residual
    variance ``var (1 - rho^2)`` (the exact conditional law of a Markov chain), better with
    reconstruction guidance than with replacement."""
    from diffjax.methods.video import extend_autoregressive

    rho, var, win, n = 0.9, 0.25, 4, 4000
    ar = var * rho ** np.abs(np.subtract.outer(np.arange(win), np.arange(win)))
    model = dj.analytic.Gaussian.create(np.zeros(win), ar, PROC)  # (B, F, 1, 1, 1) clips
    rng = np.random.default_rng(0)
    x1 = rng.normal(0, np.sqrt(var), n)
    x2 = rho * x1 + rng.normal(0, np.sqrt(var * (1 - rho ** 2)), n)
    first = np.stack([x1, x2], 1).reshape(n, 2, 1, 1, 1).astype(np.float32)
    grid = dj.discrete_grid(range(3, 1000, 10), 1000)
    kw = dict(process=PROC, grid=grid, step=S.DDPMAncestral("small"), prediction="x0")
    errs = {}
    for how in ("reconstruction", "replacement"):
        out = np.asarray(extend_autoregressive(model, jax.random.key(1), first, 8, window=win,
                                               overlap=2, conditioning=how, w_r=2.0, **kw))
        assert out.shape == (n, 8, 1, 1, 1)
        np.testing.assert_array_equal(out[:, :2], first)
        v = out.reshape(n, 8)
        coef = [np.polyfit(v[:, f - 1], v[:, f], 1)[0] for f in range(2, 8)]
        resid = [np.var(v[:, f] - rho * v[:, f - 1]) for f in range(2, 8)]
        errs[how] = (np.abs(np.array(coef) - rho).mean(),
                     np.abs(np.array(resid) / (var * (1 - rho ** 2)) - 1).mean())
        print(how, np.round(coef, 3), np.round(resid, 4), errs[how])
    assert errs["reconstruction"][0] < 0.05 and errs["reconstruction"][1] < 0.25
    assert errs["reconstruction"][0] < errs["replacement"][0]


# --------------------------------------------------------------------------------------- FVD


def test_fvd_is_the_frechet_distance_of_the_video_features():
    """FVD with a pluggable feature map on Gaussian "videos" whose features are exactly known:
    with ``feature_fn`` = the per-frame pixel mean, clips of i.i.d. N(m, s^2) pixels (P per
    frame) have features N(m 1, s^2 / P I_F), so FVD -> F ((m_a - m_b)^2 + (s_a - s_b)^2 / P)
    (closed form of the Frechet distance between isotropic Gaussians). Per-frame FID with the
    same map is the 1-D distance."""
    from diffjax.metrics.fvd import frame_difference_features, frechet_video_distance, per_frame_fid

    rng = np.random.default_rng(0)
    n, f, p = 20000, 3, 4
    a = rng.normal(0.1, 1.0, (n, f, 2, 2, 1)).astype(np.float32)
    b = rng.normal(-0.2, 2.0, (n, f, 2, 2, 1)).astype(np.float32)
    mean_fn = lambda v: np.asarray(v).mean(axis=(2, 3, 4))  # noqa: E731
    want = f * (0.3 ** 2 + (1.0 - 2.0) ** 2 / p)
    assert abs(frechet_video_distance(a, b, mean_fn, batch_size=4096) - want) < 0.03 * want
    assert frechet_video_distance(a, a, mean_fn, batch_size=4096) < 1e-9
    frame_mean = lambda x: np.asarray(x).mean(axis=(1, 2, 3))[:, None]  # noqa: E731
    assert abs(per_frame_fid(a, b, frame_mean, batch_size=8192) - want / f) < 0.03 * want / f
    assert frame_difference_features(a[:5]).shape == (5, 4 * f - 2)
    with pytest.raises(ValueError, match="videos_a"):
        frechet_video_distance(a[:, 0], b, mean_fn)
