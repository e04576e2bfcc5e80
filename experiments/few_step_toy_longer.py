"""Investigation for the few-step table: do CT and shortcut approach the bar with longer training?

``experiments/few_step_toy.py`` trains every method for 8,000 steps; there CT and the shortcut
model stay far from the many-step baseline, and their variants with a fast target (CT with
``theta^- = theta``; shortcut with bootstrap targets from the online weights) do much better,
pointing at training length. This script retrains those variants (and the EDM baseline, for a
same-steps comparison) for ``--steps`` steps (default 32,000, 4x) with the same network, data,
optimizer and evaluation, and writes ``experiments/results/few_step_toy_longer_cpu.md``.

Variants: ``ct_mu0`` (CT, mu = 0, l2), ``ct_mu0_ph`` (CT, mu = 0, pseudo-Huber metric and N(k)
from 10 to 1280 as improved CT), ``sc_online`` (shortcut, online bootstrap targets).

Usage: python experiments/few_step_toy_longer.py [--steps 32000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import few_step_toy as F  # noqa: E402  (the same setup, training loop and evaluation)

import diffjax as dj  # noqa: E402
from diffjax.run.build import build_method  # noqa: E402

CM = [("1 step", dict(sample_ts=(0,))),
      ("2 steps, ts [0, 9, 17] of 18", dict(sample_ts=(0, 9, 17), sample_grid=18))]
VARIANTS = {
    "CT, mu = 0": ("ct", dict(target_ema=""), CM),
    "CT, mu = 0, pseudo-Huber, N 10..1280": (
        "ct", dict(target_ema="", metric="pseudo_huber", start_scales=10, end_scales=1280), CM),
    "iCT (lognormal levels, 1/dsigma weights, pseudo-Huber, N 10..1280, mu = 0)": (
        "ct", dict(target_ema="", schedule="ict", level_sampling="lognormal", weighting="ict",
                   metric="pseudo_huber", start_scales=10, end_scales=1280, start_ema=None), CM),
    "Shortcut, online targets": ("shortcut", dict(bootstrap_ema="", bootstrap_ema_decay=None),
                                 [(f"{n} step{'s' if n > 1 else ''}", dict(sample_steps=n))
                                  for n in (1, 2, 4)]),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=32_000)
    ap.add_argument("--out", default=str(F.RESULTS / "few_step_toy_longer_cpu"))
    ap.add_argument("--only", default="", help="comma-separated substrings of variant names")
    args = ap.parse_args(argv)
    only = [w for w in args.only.split(",") if w]
    B, width, depth, n_eval = 256, 128, 3, 10_000
    gmm = F.mixture()
    draw = jax.jit(gmm.sample_data, static_argnums=1)
    ref = np.asarray(draw(jax.random.key(123), 200_000))
    floor = float(np.mean([
        dj.analytic.sliced_wasserstein(np.asarray(draw(jax.random.key(k), n_eval)), ref)
        for k in range(3)]))
    sw = lambda x: dj.analytic.sliced_wasserstein(np.asarray(x), ref)
    cfgs = F.method_configs(width, depth, args.steps, False)
    key = jax.random.key(7)
    rows = []

    # the EDM baseline for the same number of steps
    b = F.setup(cfgs["edm"], B, 0)
    state, secs, _ = F.train(b, gmm, args.steps)
    model = b.setup.network.bind(state.ema["ema"])
    proc = b.setup.process
    for n, st, label, nfe in ((50, F.S_heun(), "Heun 50 steps (Karras)", 99),
                              (1, F.S_euler(), "Euler 1 step", 1)):
        x = dj.sample(model, key, (n_eval, 2), dj.karras_grid(proc, n), st, process=proc,
                      prediction="x0", mesh=None)
        rows.append(dict(method="EDM", sampler=label, nfe=nfe, sw1=sw(x), train_s=secs))
        print(rows[-1], flush=True)
    for label, (name, over, samplers) in VARIANTS.items():
        if only and not any(w in label for w in only):
            continue
        d = cfgs[name].to_dict()
        d["method"].update(over)
        # None removes a key of the base config the variant does not use (e.g. CT's mu0)
        d["method"] = {k: v for k, v in d["method"].items() if v is not None}
        b = F.setup(ml_collections.ConfigDict(d), B, 0)
        state, secs, _ = F.train(b, gmm, args.steps)
        for text, kw in samplers:
            c2 = ml_collections.ConfigDict(b.config.to_dict())
            c2.method.update(kw)
            m2 = build_method(c2, b.setup)
            x = m2.sample(state.ema["ema"], key, n_eval, None)  # the jitted scan driver
            rows.append(dict(method=label, sampler=text, nfe=m2.nfe, sw1=sw(x), train_s=secs))
            print(rows[-1], flush=True)
    out_json = Path(args.out + ".json")
    if only and out_json.exists():
        # keep the rows of the variants not rerun (same baseline: training is deterministic)
        old = json.loads(out_json.read_text())
        if old.get("steps") == args.steps:
            ran = {r["method"] for r in rows}
            rows += [r for r in old["rows"] if r["method"] not in ran]
            order = ["EDM"] + list(VARIANTS)
            rows.sort(key=lambda r: order.index(r["method"]) if r["method"] in order else 99)
    base = rows[0]["sw1"]
    lines = [f"# Few-step toy, longer training: {args.steps} steps (CPU)", "",
             f"{datetime.date.today().isoformat()}, jax {jax.__version__}. Same data, network, "
             "optimizer (Adam 1e-3, cosine decay, batch 256), EMA and SW1 evaluation as "
             "`few_step_toy_cpu.md` (8,000 steps); noise floor "
             f"{floor:.4f}. Script: `experiments/few_step_toy_longer.py --steps {args.steps}`.", "",
             "| method | sampler | NFE | SW1 | SW1 / many-step baseline | train s |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['sampler']} | {r['nfe']} | {r['sw1']:.4f} | "
                     f"{r['sw1'] / base:.1f} | {r['train_s']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out + ".md").write_text(text)
    out_json.write_text(json.dumps(dict(steps=args.steps, floor=floor, rows=rows),
                                                   indent=2, default=float))
    return rows


if __name__ == "__main__":
    main()
