"""Training and sampling throughput on one accelerator: img/s, MFU, peak memory, HLO checks.

The issue-6 table (the targets are the PyTorch peers' measured speed): DiT-XL/2 and DiT-B/2 train
steps at ImageNet-256 latent shapes (32x32x4, 1000 classes, learned sigma: 8 output channels),
the DDPM/ADM UNets at CIFAR-10 and ImageNet-64 sizes, and DiT-XL/2 sampling with classifier-free
guidance (batch 64, 250 DDPM steps). Everything is the library's real code path:

* train step = :func:`diffjax.train.make_train_step` (eps MSE of :func:`diffjax.losses.ddpm_loss`
  on the first C output channels, gradients, AdamW lr 1e-4, EMA 0.9999, non-finite guard),
  jitted with the state donated; bf16 compute with fp32 master weights (``--precision``);
* sampling = :func:`diffjax.sample` (one ``lax.scan``) with
  :class:`diffjax.guidance.ClassifierFreeGuidance` (one batched forward of ``[y, null]``),
  DDPM ancestral steps with the learned variance.

Timing protocol (as the peers' measurements): 3 warm-up steps, then the median of 3
blocks of 10 steps (``--tiny``: 1 block of 2). MFU = model FLOPs / (time x peak), model FLOPs =
3 x the forward's matmul FLOPs (2 x the papers' MACs: DiT-XL/2 237.2 GFLOP per image), peak =
the chip's dense bf16 (H100/H200 SXM: 989 TFLOP/s; ``--peak_tflops`` otherwise). Also
reported: XLA's cost analysis of the compiled step, peak device memory
(``memory_stats()['peak_bytes_in_use']``, GPU/TPU only) and XLA's compile-time memory
analysis, and two HLO checks: the share of ``dot_general`` ops in bf16 (StableHLO before
optimisation) and whether cuDNN fused attention appears in the optimised HLO.

``--max_batch`` searches the largest DiT-XL/2 training batch that fits, with and without
remat, from XLA's memory analysis of the compiled step (compile only; nothing is run, so an
out-of-memory never kills the script).

Usage:
  python experiments/benchmarks/accelerator_speed.py            # full table (accelerator)
  python experiments/benchmarks/accelerator_speed.py --tiny     # seconds on CPU (smoke test)
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import diffjax as dj
from diffjax import models as M
from diffjax import samplers as S
from diffjax import train as T
from diffjax.guidance import ClassifierFreeGuidance

RESULTS = Path(__file__).resolve().parents[1] / "results"
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "TPU v5p": 459.0, "TPU v4": 275.0}
PROC = dj.DiscreteVP.linear(1000)


def _dit(name, **kw):
    return lambda rngs, dtype, remat, attn: M.DiT(M.dit_config(
        name, dtype=dtype, remat=remat, attention_impl=attn, **kw), rngs=rngs)


#: name -> (builder(rngs, dtype, remat, attention_impl), input shape, classes, learned sigma)
MODELS = {
    "DiT-XL/2": (_dit("DiT-XL/2"), (32, 32, 4), 1000, True),
    "DiT-B/2": (_dit("DiT-B/2"), (32, 32, 4), 1000, True),
    "DDPM UNet CIFAR-10": (lambda r, d, remat, a: M.unet_from_preset(
        "ddpm_cifar10", rngs=r, dtype=d, remat=remat), (32, 32, 3), 0, False),
    "ADM ImageNet-64": (lambda r, d, remat, a: M.adm_from_preset(
        "adm_imagenet64", rngs=r, dtype=d, remat=remat), (64, 64, 3), 1000, True),
    "tiny DiT": (_dit("DiT-S/2", depth=2, hidden_size=64, num_heads=2, input_size=8,
                      num_classes=10), (8, 8, 4), 10, True),
    "tiny UNet": (lambda r, d, remat, a: M.UNet(
        image_size=8, in_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1,
        attn_resolutions=(4,), norm_groups=8, dtype=d, remat=remat, rngs=r), (8, 8, 1), 0, False),
}
POLICY = "dots_with_no_batch_dims_saveable"  # remat that keeps the weight matmuls' outputs
FULL_TRAIN = [("DiT-XL/2", 64, False), ("DiT-XL/2", 256, False), ("DiT-XL/2", 256, POLICY),
              ("DiT-B/2", 256, False), ("DDPM UNet CIFAR-10", 128, False),
              ("ADM ImageNet-64", 64, False)]
TINY_TRAIN = [("tiny DiT", 8, False)]


def device_info():
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    peak = next((v for k, v in PEAK_TFLOPS.items() if k.lower() in kind.lower()), None)
    return dev, kind, peak


def _build(name, dtype, remat, attn):
    build, shape, classes, learned = MODELS[name]
    model = build(nnx.Rngs(0), dtype, remat, attn)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, params, rest, shape, classes, learned


def _apply(graphdef, rest, shape):
    """``model(params, x, t, y)`` in diffjax time (DDPM index input), eps channels only."""
    c = shape[-1]

    def fn(params, x, t, y):
        net = nnx.merge(graphdef, params, rest)
        return net(x, jnp.round(t * 1000.0 - 1.0), y)

    return fn, c


def forward_flops(name, batch):
    """Matmul/conv FLOPs of one forward at ``batch`` (2 x MACs, the papers' convention)."""
    build, shape, classes, _ = MODELS[name]
    model = nnx.eval_shape(lambda: build(nnx.Rngs(0), jnp.float32, False, None))
    x = jnp.zeros((1,) + shape)
    y = jnp.zeros((1,), jnp.int32) if classes else None
    return 2e9 * M.forward_cost(model, x, jnp.full((1,), 500.0), y).matmul_gmacs * batch


def hlo_checks(lowered, compiled):
    """(bf16 dot_generals, all dot_generals) in StableHLO; cuDNN fused attention present."""
    text = lowered.as_text()
    dots = [ln for ln in text.splitlines() if "dot_general" in ln]
    # both operands bf16 (the MXU/tensor-core path); accumulation precision is XLA's choice
    bf16 = sum(1 for ln in dots if re.search(r"\(tensor<[0-9x]*xbf16>, tensor<[0-9x]*xbf16>\)", ln))
    try:
        opt = (compiled.as_text() or "") if compiled is not None else ""
    except Exception:  # noqa: BLE001 -- some backends cannot print
        opt = ""
    fused = bool(re.search(r"cudnn\$fmha|__cudnn\$fmha|fused_attention|flash", opt, re.I))
    return bf16, len(dots), fused


def _cost_flops(compiled):
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return float((ca or {}).get("flops", float("nan")))


def _mem_analysis_gb(compiled):
    try:
        m = compiled.memory_analysis()
        total = (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
                 - m.alias_size_in_bytes)
        return total / 2**30
    except Exception:  # noqa: BLE001 -- not every backend reports it
        return float("nan")


def _peak_gb(dev):
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    return (stats or {}).get("peak_bytes_in_use", float("nan")) / 2**30


def _train_parts(name, batch, dtype, remat, attn):
    graphdef, params, rest, shape, classes, learned = _build(name, dtype, remat, attn)
    apply, c = _apply(graphdef, rest, shape)

    def loss_fn(p, key, b):
        model = lambda x, t, y=None: apply(p, x, t, y)[..., :c]
        return dj.losses.ddpm_loss(model, key, b["image"], process=PROC, cond=b.get("label"))

    opt = T.make_optimizer("adamw", 1e-4, weight_decay=0.0)
    emas = {"ema": T.EMASpec(decay=0.9999)}
    state = T.create_train_state(lambda k: params, opt, ema_names=("ema",))
    step = jax.jit(T.make_train_step(loss_fn, opt, emas, batch), donate_argnums=0)
    k1, k2 = jax.random.split(jax.random.key(0))
    b = {"image": jax.random.normal(k1, (batch,) + shape)}
    if classes:
        b["label"] = jax.random.randint(k2, (batch,), 0, classes)
    return state, step, b


def time_train(name, batch, dtype, remat, attn, blocks, steps, warmup):
    state, step, b = _train_parts(name, batch, dtype, remat, attn)
    t0 = time.perf_counter()
    lowered = step.lower(state, b)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        state, m = compiled(state, b)
    jax.block_until_ready(state)
    times = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(steps):
            state, m = compiled(state, b)
        jax.block_until_ready((state, m))
        times.append((time.perf_counter() - t0) / steps)
    if not np.isfinite(float(m["loss"])):
        raise FloatingPointError(f"{name}: non-finite loss in the benchmark")
    bf16, dots, fused = hlo_checks(lowered, compiled)
    return dict(step_s=statistics.median(times), compile_s=compile_s,
                xla_flops=_cost_flops(compiled), mem_analysis_gb=_mem_analysis_gb(compiled),
                bf16_dots=bf16, dots=dots, fused_attention=fused)


def time_sampling(name, batch, num_steps, scale, dtype, attn, repeats):
    graphdef, params, rest, shape, classes, learned = _build(name, dtype, False, attn)
    apply, c = _apply(graphdef, rest, shape)
    model = jax.tree_util.Partial(lambda p, x, t, y=None: apply(p, x, t, y), params)
    guided = ClassifierFreeGuidance(model, scale, null_label=classes, learned_variance=learned,
                                    channels=3 if shape[-1] == 4 else "all")
    grid = dj.discrete_grid(dj.processes.space_timesteps(1000, str(num_steps)), 1000)
    step = S.DDPMAncestral("learned" if learned else "small")
    labels = jnp.arange(batch, dtype=jnp.int32) % classes

    def run(key):
        return dj.sample(guided, key, (batch,) + shape, grid, step, process=PROC,
                         prediction="eps", cond=labels, learned_variance=learned)

    t0 = time.perf_counter()
    x = jax.block_until_ready(run(jax.random.key(0)))  # includes compilation
    first = time.perf_counter() - t0
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        x = jax.block_until_ready(run(jax.random.key(i + 1)))
        times.append(time.perf_counter() - t0)
    if not np.all(np.isfinite(np.asarray(x, np.float32))):
        raise FloatingPointError("non-finite samples in the benchmark")
    secs = statistics.median(times)
    return dict(seconds=secs, img_s=batch / secs, compile_s=first - secs,
                ms_per_step=1e3 * secs / num_steps)


def max_batch(name, dtype, remat, attn, candidates, capacity_gb):
    """The largest candidate batch whose compiled train step fits ``capacity_gb`` (XLA's memory
    analysis; compile only)."""
    best = None
    for batch in candidates:
        state, step, b = _train_parts(name, batch, dtype, remat, attn)
        abstract = jax.tree_util.tree_map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), (state, b))
        del state
        try:
            gb = _mem_analysis_gb(step.lower(*abstract).compile())
        except Exception:  # noqa: BLE001 -- XLA refuses programs that cannot fit
            break
        if not gb <= capacity_gb:
            break
        best = (batch, gb)
    return best


def _remat_name(remat):
    return {False: "no", True: "full"}.get(remat, remat)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny models, few steps (CPU smoke)")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--attention", default="auto",
                    help="jax.nn.dot_product_attention implementation: auto (cudnn on GPU "
                         "with bf16, else XLA), xla, cudnn")
    ap.add_argument("--max_batch", action="store_true", help="search DiT-XL/2's largest batch")
    ap.add_argument("--skip_sampling", action="store_true")
    ap.add_argument("--peak_tflops", type=float, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    dev, kind, peak = device_info()
    peak = args.peak_tflops or peak
    dtype = jnp.bfloat16 if args.precision == "bf16" else jnp.float32
    attn = {"auto": "cudnn" if dev.platform == "gpu" and dtype == jnp.bfloat16 else None,
            "xla": "xla", "cudnn": "cudnn"}[args.attention]
    blocks, steps, warmup = (1, 2, 1) if args.tiny else (3, 10, 3)
    train_cases = TINY_TRAIN if args.tiny else FULL_TRAIN
    rows = []
    for name, batch, remat in train_cases:
        r = time_train(name, batch, dtype, remat, attn, blocks, steps, warmup)
        model_flops = 3.0 * forward_flops(name, batch)
        r.update(name=name, batch=batch, remat=remat, img_s=batch / r["step_s"],
                 model_gflop_per_img=model_flops / batch / 1e9,
                 mfu=(model_flops / r["step_s"] / (peak * 1e12)) if peak else float("nan"),
                 xla_mfu=(r["xla_flops"] / r["step_s"] / (peak * 1e12)) if peak else float("nan"),
                 peak_gb=_peak_gb(dev))
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items()}, default=str), flush=True)
    sampling = None
    if not args.skip_sampling:
        if args.tiny:
            sampling = time_sampling("tiny DiT", 4, 4, 1.5, dtype, attn, 1)
            sampling.update(name="tiny DiT", batch=4, steps=4, scale=1.5)
        else:
            sampling = time_sampling("DiT-XL/2", 64, 250, 4.0, dtype, attn, 2)
            sampling.update(name="DiT-XL/2", batch=64, steps=250, scale=4.0)
        print(json.dumps(sampling), flush=True)
    fits = {}
    if args.max_batch and not args.tiny:
        cap = (dev.memory_stats() or {}).get("bytes_limit", 0) / 2**30
        for remat in (False, POLICY, True):
            fits[remat] = max_batch("DiT-XL/2", dtype, remat, attn, (128, 256, 384, 512, 768, 1024),
                                    cap)

    def f(v, fmt):
        return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)

    lines = [
        f"# Accelerator speed ({'tiny smoke run' if args.tiny else 'full run'})",
        "",
        f"Device: {kind} ({dev.platform}); peak {f(peak, '.0f')} TFLOP/s dense bf16; jax "
        f"{jax.__version__}, flax {__import__('flax').__version__}, optax "
        f"{__import__('optax').__version__}; {datetime.date.today().isoformat()}; compute "
        f"{args.precision} (fp32 master weights), attention implementation {attn or 'XLA default'}.",
        "Script: `experiments/benchmarks/accelerator_speed.py" + (" --tiny" if args.tiny else "")
        + "`. Train step = loss + grads + AdamW + EMA + non-finite guard (the library's "
        "`make_train_step`), state donated; median of "
        f"{blocks} block(s) of {steps} steps after {warmup} warm-up step(s).",
        "",
        "| model | batch | remat | step ms | img/s | GFLOP/img (3x fwd matmul) | MFU | XLA-count MFU "
        "| peak GB | XLA mem GB | bf16 dots | cuDNN attention | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['batch']} | {_remat_name(r['remat'])} | "
            f"{r['step_s'] * 1e3:.1f} | {r['img_s']:.1f} | {r['model_gflop_per_img']:.1f} | "
            f"{f(100 * r['mfu'], '.1f')} % | {f(100 * r['xla_mfu'], '.1f')} % | "
            f"{f(r['peak_gb'], '.1f')} | {f(r['mem_analysis_gb'], '.2f')} | "
            f"{r['bf16_dots']}/{r['dots']} | {'yes' if r['fused_attention'] else 'no'} | "
            f"{r['compile_s']:.1f} |")
    if sampling:
        lines += ["", "| sampling | batch | steps | CFG scale | s per batch | ms/step | img/s | "
                  "compile s |", "|---|---|---|---|---|---|---|---|",
                  f"| {sampling['name']} (CFG: one batched forward of 2 x batch) | "
                  f"{sampling['batch']} | {sampling['steps']} | {sampling['scale']} | "
                  f"{sampling['seconds']:.2f} | {sampling['ms_per_step']:.1f} | "
                  f"{sampling['img_s']:.2f} | {sampling['compile_s']:.1f} |"]
    if fits:
        lines += ["", "Largest DiT-XL/2 training batch (XLA memory analysis, compile only):"]
        for remat, best in fits.items():
            lines.append(f"- remat {_remat_name(remat)}: "
                         + (f"{best[0]} ({best[1]:.1f} GB)" if best else "none of the candidates"))
    text = "\n".join(lines) + "\n"
    print(text)
    slug = re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_")
    out = Path(args.out) if args.out else RESULTS / f"accelerator_speed_{slug}{'_tiny' if args.tiny else ''}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return dict(rows=rows, sampling=sampling, fits=fits)


if __name__ == "__main__":
    main()
