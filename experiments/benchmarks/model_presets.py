"""Model preset benchmark: parameters, GMACs, forward and train-step time per preset.

Prints a Markdown table and writes it to ``experiments/results/model_presets_<device>.md``.
Parameters and GMACs come from abstract models (nothing allocated; XLA cost analysis and the
matmul-only count of :mod:`diffjax.models.flops`); times are measured only for the presets
that fit the machine (``--time`` selects them; default: the tiny ones on CPU, DiT-B/2 and
XL/2 on an accelerator). The train step is the real one: loss + gradients + AdamW + EMA
(:func:`diffjax.train.make_train_step`), bf16 compute with fp32 parameters when ``--bf16``.

Usage:
  python experiments/benchmarks/model_presets.py              # table for this machine
  python experiments/benchmarks/model_presets.py --tiny       # seconds, for the smoke test
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax import models as M
from diffjax import train as T

RESULTS = Path(__file__).resolve().parents[1] / "results"

# name -> (builder(rngs, dtype), input shape without batch, time input kind, label classes)
PRESETS = {
    "DDPM UNet CIFAR-10": (lambda r, d: M.unet_from_preset("ddpm_cifar10", rngs=r, dtype=d),
                           (32, 32, 3), 0),
    "ADM ImageNet-64": (lambda r, d: M.adm_from_preset("adm_imagenet64", rngs=r, dtype=d),
                        (64, 64, 3), 1000),
    "DiT-B/2 (256 px latents)": (lambda r, d: M.DiT(M.dit_config("DiT-B/2", dtype=d), rngs=r),
                                 (32, 32, 4), 1000),
    "DiT-XL/2 (256 px latents)": (lambda r, d: M.DiT(M.dit_config("DiT-XL/2", dtype=d), rngs=r),
                                  (32, 32, 4), 1000),
    "tiny UNet (8x8)": (lambda r, d: M.UNet(image_size=8, in_channels=1, ch=32, ch_mult=(1, 2),
                                            num_res_blocks=1, attn_resolutions=(4,),
                                            norm_groups=8, dtype=d, rngs=r), (8, 8, 1), 0),
    "tiny DiT (8x8x4, patch 2)": (lambda r, d: M.DiT(M.dit_config(
        "DiT-S/2", depth=2, hidden_size=64, num_heads=2, input_size=8, num_classes=10, dtype=d),
        rngs=r), (8, 8, 4), 10),
}
TINY = ("tiny UNet (8x8)", "tiny DiT (8x8x4, patch 2)")


def _inputs(shape, batch, classes):
    x = jnp.zeros((batch,) + shape, jnp.float32)
    t = jnp.full((batch,), 500.0)
    y = jnp.zeros((batch,), jnp.int32) if classes else None
    return x, t, y


def cost(name, dtype):
    build, shape, classes = PRESETS[name]
    model = nnx.eval_shape(lambda: build(nnx.Rngs(0), dtype))
    x, t, y = _inputs(shape, 1, classes)
    return M.forward_cost(model, x, t, y)


def timing(name, batch, dtype, repeats=3):
    build, shape, classes = PRESETS[name]
    model = build(nnx.Rngs(0), dtype)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x, t, y = _inputs(shape, batch, classes)
    x = jax.random.normal(jax.random.key(0), x.shape)

    def fwd(p, x):
        return nnx.merge(graphdef, p, rest)(x, t, y)

    f = jax.jit(fwd)
    jax.block_until_ready(f(params, x))
    fwd_s = min(_timed(lambda: f(params, x)) for _ in range(repeats))

    def loss_fn(p, key, batch):
        out = nnx.merge(graphdef, p, rest)(batch, t, y)
        return jnp.mean((out[..., : batch.shape[-1]] - batch) ** 2, axis=(1, 2, 3)), {}

    opt = T.make_optimizer("adamw", 1e-4)
    state = T.create_train_state(lambda k: params, opt, ema_names=("ema",))
    step = T.jit_train_step(T.make_train_step(loss_fn, opt, {"ema": T.EMASpec(decay=0.9999)}, batch))
    state, _ = step(state, x)
    jax.block_until_ready(state.params)

    def run():
        nonlocal state
        state, m = step(state, x)
        return m["loss"]

    step_s = min(_timed(run) for _ in range(repeats))
    return fwd_s, step_s


def _timed(fn):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny presets only (smoke test)")
    ap.add_argument("--bf16", action="store_true", help="bf16 compute, fp32 parameters")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--time", nargs="*", default=None, help="presets to time")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    dtype = jnp.bfloat16 if args.bf16 else jnp.float32
    on_cpu = jax.devices()[0].platform == "cpu"
    names = list(TINY) if args.tiny else list(PRESETS)
    to_time = args.time if args.time is not None else (
        list(TINY) if on_cpu else ["DiT-B/2 (256 px latents)", "DiT-XL/2 (256 px latents)"])
    batch = args.batch or (4 if on_cpu else 64)
    rows = []
    for name in names:
        c = cost(name, dtype)
        fwd_s = step_s = None
        if name in to_time:
            fwd_s, step_s = timing(name, batch, dtype, repeats=1 if args.tiny else 3)
        rows.append((name, c, fwd_s, step_s))

    dev = jax.devices()[0]
    device = getattr(dev, "device_kind", dev.platform)
    lines = [
        f"# Model presets: parameters, GMACs, step times ({'tiny' if args.tiny else 'full'} run)",
        "",
        f"Device: {device}; jax {jax.__version__}; {datetime.date.today().isoformat()}; compute "
        f"{'bf16' if args.bf16 else 'fp32'}; timing batch {batch}. GMACs per image at the "
        "preset's input size: matmul/conv MACs (the papers' convention) and XLA's cost "
        "analysis / 2 (adds elementwise work).",
        "Script: `experiments/benchmarks/model_presets.py`" + (" --tiny" if args.tiny else ""),
        "",
        "| preset | params (total) | trainable | GMACs (matmul) | GMACs (XLA) | forward ms | train step ms | img/s (train) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, c, f, s in rows:
        ms = lambda v: "-" if v is None else f"{v * 1e3:.1f}"
        ips = "-" if s is None else f"{batch / s:.1f}"
        lines.append(f"| {name} | {c.params:,} | {c.trainable_params:,} | {c.matmul_gmacs:.3f} | "
                     f"{c.xla_gmacs:.3f} | {ms(f)} | {ms(s)} | {ips} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out) if args.out else RESULTS / (
        f"model_presets_{device.replace(' ', '_').lower()}{'_tiny' if args.tiny else ''}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
