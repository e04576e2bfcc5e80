"""One process of the multi-host check (tests/test_multihost.py launches it).

``python tests/_multihost_worker.py --num-processes=P --process-id=I --port=N --out=F``

With ``P = 2`` each process owns 4 fake CPU devices and joins a local coordinator
(``jax.distributed.initialize``; CPU collectives: gloo); with ``P = 1`` one process owns all 8.
Either way the global mesh is ``(data=2, fsdp=4)`` over 8 devices. For a small UNet and a small
DiT (the quickstart recipe with a half-life EMA, built by the run layer like ``diffjax train``)
it runs 3 training steps on the same global batches: host ``I`` feeds rows
``[I * B / P, (I + 1) * B / P)`` of each global batch of ``B = data.batch_size`` rows through
``jax.make_array_from_process_local_data``. Process 0 writes the per-step losses and the final
parameters and EMA (gathered to every host) to ``F`` (``.npz``).
"""

from __future__ import annotations

import argparse
import os
import sys

NUM_DEVICES = 8
GLOBAL_BATCH = 16
NUM_STEPS = 3


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--num-processes", type=int, required=True)
    ap.add_argument("--process-id", type=int, required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    local = NUM_DEVICES // a.num_processes
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

    import jax

    if a.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"localhost:{a.port}",
                                   num_processes=a.num_processes, process_id=a.process_id)
    import numpy as np
    from flax import nnx
    from jax.experimental import multihost_utils

    from diffjax import train as T
    from diffjax.run.build import build
    from diffjax.run.config import load_config

    assert jax.process_count() == a.num_processes and jax.device_count() == NUM_DEVICES
    assert jax.local_device_count() == local
    pid, nproc = jax.process_index(), jax.process_count()
    mesh = T.make_mesh(data=2, fsdp=4)
    here = os.path.dirname(os.path.abspath(__file__))
    models = {
        "unet": None,  # the quickstart UNet (ch 32, mult (1, 2)): its 3x3x64x64 kernels shard
        "dit": dict(name="dit", preset="DiT-S/2", input_size=8, in_channels=1, hidden_size=64,
                    depth=1, num_heads=2, num_classes=0, learn_sigma=False,
                    time_input="ddpm_index",
                    prediction="eps"),
    }
    out = {}
    for name, model in models.items():
        config = load_config(os.path.join(here, "..", "configs", "quickstart.py"))
        if model is not None:
            config.model = model
        config.data.batch_size = GLOBAL_BATCH
        # EDM's half-life EMA is defined in images: its decay depends on the global batch
        config.ema = {"ema": {"halflife_kimg": 0.05}}
        config.optim.warmup_steps = 0
        config.train.num_steps = NUM_STEPS
        built = build(config)
        data = built.data
        # one batch-size meaning: data.batch_size is global, each host loads its share
        assert data.batch_size == GLOBAL_BATCH
        assert data.loader.batch_size == GLOBAL_BATCH // nproc
        assert data.loader.global_batch_size == GLOBAL_BATCH
        state = built.init_state(mesh)
        sh = T.state_shardings(state, mesh)
        kernels = [v for v in jax.tree.leaves(state.params) if v.size >= 4096]
        assert kernels and all(len(k.addressable_shards[0].data.flatten()) * 4 == k.size
                               for k in kernels), "large kernels not FSDP-sharded over 4"
        step = T.jit_train_step(
            T.make_train_step(built.method.loss, built.optimizer, built.ema_specs,
                              data.batch_size, loss_takes_state=True,
                              update_extra=built.method.update_extra),
            sh, {"image": T.batch_sharding(mesh, 4)})
        images = np.asarray(data.source.images[: NUM_STEPS * GLOBAL_BATCH], np.float32)
        per_host = GLOBAL_BATCH // nproc
        losses = []
        for s in range(NUM_STEPS):
            rows = images[s * GLOBAL_BATCH:(s + 1) * GLOBAL_BATCH]
            mine = rows[pid * per_host:(pid + 1) * per_host]
            batch = T.shard_batch({"image": mine}, mesh)
            assert batch["image"].shape == rows.shape
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
        out[f"{name}/loss"] = np.asarray(losses)
        gathered = multihost_utils.process_allgather(
            {"params": nnx.to_pure_dict(state.params),
             "ema": nnx.to_pure_dict(state.ema["ema"])}, tiled=True)
        for path, leaf in jax.tree_util.tree_leaves_with_path(gathered):
            out[f"{name}/{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
    if pid == 0:
        np.savez(a.out, **out)
    if nproc > 1:
        multihost_utils.sync_global_devices("done")
    print(f"process {pid}/{nproc}: ok", flush=True)


if __name__ == "__main__":
    main()
