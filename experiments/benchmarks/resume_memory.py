"""Peak host memory of a fresh start vs a resume, for a DiT-B/2 training state on 8 devices.

The state is DiT-B/2 (130.5M parameters, ImageNet-256 latents, 1000 classes) with Adam and one
EMA in float32 (4 copies of the parameters, ~2.1 GB), FSDP-sharded on a ``(data=1, fsdp=8)``
mesh of 8 fake CPU devices. Each mode runs in its own process and reports its peak resident
set size (``ru_maxrss``) minus the resident size after imports and model tracing:

* ``fresh``: :func:`diffjax.train.create_train_state` (the jitted, sharded init);
* ``resume (concrete target)``: the old path: a fresh state is built, then the checkpoint is
  restored onto its shapes and shardings (``restore_or_init`` without ``abstract_state``);
* ``resume (abstract target)``: the checkpoint is restored into
  :func:`diffjax.train.abstract_train_state` (``jax.ShapeDtypeStruct`` leaves with
  shardings, nothing allocated first).

On CPU the 8 devices share the host's memory and ``Device.memory_stats()`` returns ``None``,
so process RSS is the measure here; XLA's compiled memory analysis of the init gives the bytes
per device of the state it outputs (the same on an accelerator). The checkpoint is written
once to a temporary folder.

Usage:
  python experiments/benchmarks/resume_memory.py            # DiT-B/2, writes the table
  python experiments/benchmarks/resume_memory.py --preset=DiT-S/2   # quicker, same table
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"
MODES = ("save", "fresh", "resume_concrete", "resume_abstract")


def _worker(mode: str, preset: str, ckdir: str) -> dict:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import resource

    import jax
    import optax
    from flax import nnx

    from diffjax import train as T
    from diffjax.models.dit import DiT, dit_config

    def rss_mb():  # current resident set
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    cfg = dit_config(preset, num_classes=1000)
    init = lambda key: nnx.state(DiT(cfg, rngs=nnx.Rngs(key)), nnx.Param)
    opt = optax.adam(1e-4)
    mesh = T.make_mesh(data=1, fsdp=8)
    abstract = T.abstract_train_state(init, opt, mesh=mesh)  # traces the model once
    state_mb = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract)) / 2**20
    base = rss_mb()
    out = {"mode": mode, "state_mb": state_mb}
    ck = T.Checkpointer(Path(ckdir), max_to_keep=1)
    if mode == "save":
        state = T.create_train_state(init, opt, mesh=mesh)
        ck.save(0, state)
        ck.wait()
    elif mode == "fresh":
        state = T.create_train_state(init, opt, mesh=mesh)
        jax.block_until_ready(state)
        # XLA's view: bytes the compiled init outputs per device (the sharded state)
        fn = lambda r: T.state._init_state(init, opt, ("ema",), None, r)
        rng = jax.random.key_data(jax.random.key(0))
        shard = T.state_shardings(jax.eval_shape(fn, rng), mesh)
        ma = jax.jit(fn, out_shardings=shard).lower(rng).compile().memory_analysis()
        if ma is not None:
            out["xla_output_mb_per_device"] = ma.output_size_in_bytes / 2**20
            out["xla_temp_mb_per_device"] = ma.temp_size_in_bytes / 2**20
    elif mode == "resume_concrete":
        state = T.restore_or_init(ck, lambda: T.create_train_state(init, opt, mesh=mesh))
        jax.block_until_ready(state)
    elif mode == "resume_abstract":
        state = T.restore_or_init(ck, lambda: T.create_train_state(init, opt, mesh=mesh),
                                  abstract_state=abstract)
        jax.block_until_ready(state)
        leaf = jax.tree.leaves(state.params)[0]
        out["restored_sharding"] = str(leaf.sharding.spec)
    ck.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.update(peak_rss_mb=peak, base_rss_mb=base, peak_over_base_mb=peak - base)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="DiT-B/2")
    ap.add_argument("--worker", choices=MODES)
    ap.add_argument("--ckdir")
    a = ap.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(_worker(a.worker, a.preset, a.ckdir)), flush=True)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            p = subprocess.run([sys.executable, __file__, f"--worker={mode}",
                                f"--preset={a.preset}", f"--ckdir={tmp}"],
                               capture_output=True, text=True, check=False)
            line = [s for s in p.stdout.splitlines() if s.startswith("RESULT ")]
            if p.returncode or not line:
                raise SystemExit(f"{mode} failed:\n{p.stdout}\n{p.stderr[-4000:]}")
            rows.append(json.loads(line[0][7:]))
            print(rows[-1], flush=True)
    state_mb = rows[0]["state_mb"]
    names = {"fresh": "fresh start", "resume_concrete": "resume, concrete target (old)",
             "resume_abstract": "resume, abstract target (new)"}
    lines = [f"# Peak host memory: fresh start vs resume, {a.preset} + Adam + 1 EMA, "
             "8 fake CPU devices (data=1, fsdp=8)", "",
             f"Measured {datetime.date.today()} by `experiments/benchmarks/resume_memory.py` "
             f"(state: {state_mb:,.0f} MB in float32). Peak RSS of one process per mode "
             "(`ru_maxrss`) minus its RSS after imports and abstract tracing; CPU devices "
             "share host memory and report no `memory_stats()`.", "",
             "| mode | peak over baseline (MB) | / state size |", "|---|---:|---:|"]
    for r in rows[1:]:
        lines.append(f"| {names[r['mode']]} | {r['peak_over_base_mb']:,.0f} | "
                     f"{r['peak_over_base_mb'] / state_mb:.2f} |")
    fresh = rows[1]
    if "xla_output_mb_per_device" in fresh:
        lines += ["", f"XLA memory analysis of the compiled sharded init: "
                  f"{fresh['xla_output_mb_per_device']:,.1f} MB output and "
                  f"{fresh['xla_temp_mb_per_device']:,.1f} MB temporaries per device "
                  f"(state / 8 = {state_mb / 8:,.1f} MB)."]
    lines += ["", "Reading: the abstract target removes one full copy of the state (the throwaway "
              "fresh state of the old path). It still peaks above a fresh start here because "
              "on CPU the 8 devices *are* host memory: orbax reads each array into host buffers "
              "and then places it, so RSS holds both for a moment. On a GPU/TPU those buffers "
              "are host RAM, and the device memory of a resume is the sharded state alone "
              "(the XLA figure above), as for a fresh start."]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "resume_memory_cpu.md").write_text(text)
    (RESULTS / "resume_memory_cpu.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
