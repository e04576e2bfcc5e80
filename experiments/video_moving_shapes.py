"""Video Diffusion Models (Ho et al. 2022) at CPU scale: a tiny 3D UNet on bouncing squares.

Trains :class:`diffjax.models.unet3d.UNet3D` (preset ``tiny``: 16x16 frames, 8 frames per clip)
with the ``video`` method (joint image-video training: ``--image_frames`` independent images per
clip, temporal attention masked for them) for ``--steps`` Adam steps, then measures

1. **motion statistics** of unconditional clips (DDIM) against held-out data: the square's
   per-frame displacement (intensity centroid, :func:`diffjax.data.video.object_position`) and
   the mean absolute frame-to-frame pixel difference;
2. **extension** (Ho et al. 2022, sec. 3.1): condition on the first 4 frames of held-out clips
   and generate frames 5-8 by reconstruction guidance (eq. 7, ``w_r``) or by replacement; the
   error is the distance (pixels) between the generated square's centroid and the true
   position, per generated frame, over 3 sampling seeds.

Writes ``experiments/results/video_moving_shapes_cpu.{md,json}`` and a frame strip PNG
(``video_moving_shapes_cpu.png``: data, unconditional, reconstruction, replacement rows).

Command: ``python experiments/video_moving_shapes.py`` (about 10 minutes on one CPU core,
most of it compilation).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np
import optax

import diffjax as dj
from diffjax.data.video import moving_shapes, object_position
from diffjax.methods import Setup
from diffjax.methods.video import conditional_sample, frame_mask, video_grid
from diffjax.methods.video import video as video_method
from diffjax.models.denoiser import Network
from diffjax.models.unet3d import unet3d_from_preset
from diffjax.utils import image_grid, save_png

RESULTS = Path(__file__).resolve().parent / "results"


def motion_stats(clips):
    """Mean per-frame centroid displacement (pixels) and mean |frame difference|."""
    pos = object_position(clips)  # (n, F, 2)
    disp = np.linalg.norm(np.diff(pos, axis=1), axis=-1)
    return float(np.nanmean(disp)), float(np.abs(np.diff(clips, axis=1)).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--image_frames", type=int, default=2)
    ap.add_argument("--sample_steps", type=int, default=50)
    ap.add_argument("--n_eval", type=int, default=32)
    ap.add_argument("--w_r", type=float, default=2.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tag", default="cpu")
    args = ap.parse_args(argv)
    t_start = time.time()
    F_, size = 8, 16
    train = moving_shapes(4096, num_frames=F_, size=size, seed=0)["videos"]
    held = moving_shapes(args.n_eval, num_frames=F_, size=size, seed=1)
    process = dj.DiscreteVP.cosine(1000)
    net = Network(lambda rngs: unet3d_from_preset("tiny", frame_size=size, in_channels=1,
                                                   rngs=rngs), process, time_input="ddpm_index")
    setup = Setup(net, (F_, size, size, 1), None, args.batch, args.steps, process)
    method = video_method(setup, image_frames=args.image_frames, sampler="ddim",
                     sample_steps=args.sample_steps, step={"eta": 0.0})
    params = net.init(jax.random.key(0))
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, key, x):
        def loss_fn(p):
            per, _ = method.loss(p, key, {"image": x}, None)
            return per.mean()
        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss

    rng = np.random.default_rng(0)
    losses = []
    for i in range(args.steps):
        x = train[rng.integers(0, len(train), args.batch)]
        params, opt_state, loss = step(params, opt_state, jax.random.key(i), x)
        losses.append(float(loss))
        if i % 250 == 0 or i == args.steps - 1:
            print(f"step {i:5d}  loss {np.mean(losses[-50:]):.4f}  ({time.time() - t_start:.0f} s)",
                  flush=True)
    t_train = time.time() - t_start

    # 1. unconditional motion statistics
    uncond = np.asarray(method.sample(params, jax.random.key(100), args.n_eval))
    data_disp, data_diff = motion_stats(held["videos"])
    gen_disp, gen_diff = motion_stats(uncond)
    print(f"motion: data disp {data_disp:.3f} diff {data_diff:.3f} | samples disp "
          f"{gen_disp:.3f} diff {gen_diff:.3f}", flush=True)

    # 2. extension: frames 1-4 known, 5-8 generated
    model = net.bind(params)
    mask = frame_mask(F_, first=4)
    known = held["videos"] * mask[None]
    grid = video_grid(process, args.sample_steps)
    stp = dj.samplers.get_step("ddim", eta=0.0)
    true_pos = held["positions"][:, 4:, 0]
    errs = {"reconstruction": [], "replacement": []}
    outs = {}
    for how in errs:
        for seed in range(args.seeds):
            out = np.asarray(conditional_sample(
                model, jax.random.key(1000 + seed), known, mask, process=process, grid=grid,
                step=stp, prediction="eps", conditioning=how, w_r=args.w_r, clip_x0=1.0))
            pos = object_position(out[:, 4:])
            errs[how].append(float(np.nanmean(np.linalg.norm(pos - true_pos, axis=-1))))
            outs.setdefault(how, out)
        print(f"{how}: position error {np.mean(errs[how]):.3f} +- {np.std(errs[how]):.3f}",
              flush=True)
    # a baseline that needs no model: the square frozen at its last known position
    last = object_position(held["videos"][:, 3])[:, None]
    frozen = float(np.nanmean(np.linalg.norm(last - true_pos, axis=-1)))

    res = dict(steps=args.steps, batch=args.batch, image_frames=args.image_frames,
               sample_steps=args.sample_steps, n_eval=args.n_eval, w_r=args.w_r,
               final_loss=float(np.mean(losses[-100:])), train_seconds=round(t_train, 1),
               total_seconds=round(time.time() - t_start, 1),
               motion={"data": {"displacement": data_disp, "frame_diff": data_diff},
                       "unconditional": {"displacement": gen_disp, "frame_diff": gen_diff}},
               extension_position_error={k: {"mean": float(np.mean(v)), "std": float(np.std(v)),
                                             "per_seed": v} for k, v in errs.items()},
               frozen_last_frame_error=frozen)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"video_moving_shapes_{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2))
    md = [f"# Video diffusion on bouncing squares ({args.tag})", "",
          f"Tiny 3D UNet, {args.steps} steps at batch {args.batch}, {args.image_frames} image "
          f"frames per clip (joint training), DDIM {args.sample_steps} steps; final loss "
          f"{res['final_loss']:.4f}; {res['total_seconds']:.0f} s in all.", "",
          "| motion statistic | data | unconditional samples |", "|---|---|---|",
          f"| centroid displacement / frame (px) | {data_disp:.3f} | {gen_disp:.3f} |",
          f"| mean abs frame difference | {data_diff:.3f} | {gen_diff:.3f} |", "",
          f"Extension (frames 1-4 given, 5-8 generated), centroid error in pixels, "
          f"{args.n_eval} clips x {args.seeds} seeds:", "",
          "| conditioning | error (mean +- std over seeds) |", "|---|---|"]
    for k, v in errs.items():
        label = f"reconstruction guidance w_r={args.w_r:g}" if k == "reconstruction" else k
        md.append(f"| {label} | {np.mean(v):.3f} +- {np.std(v):.3f} |")
    md.append(f"| (no model: square frozen at frame 4) | {frozen:.3f} |")
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    rows = [held["videos"][0], uncond[0], outs["reconstruction"][0], outs["replacement"][0]]
    save_png(stem.with_suffix(".png"), image_grid(np.concatenate(rows), ncols=F_))
    print("\n".join(md))
    return res


if __name__ == "__main__":
    main()
