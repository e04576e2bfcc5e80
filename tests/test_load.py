"""``diffjax.load``: a trained run back in a fresh process, sampling without retracing, and the
shipped notebook executed end to end (so it never rots)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def conditional_digits_run(tmp_path_factory):
    """The quickstart ``:smoke`` recipe with a tiny class-conditional DiT (label dropout 0.1,
    so it has a null class for guidance), trained 20 steps on the embedded digits; no warm-up,
    lr 3e-3 and a fast EMA (0.5) so that 20 steps move the zero-initialised label path enough
    for guidance to change the samples visibly."""
    from diffjax.run.train import train

    cfg = load_script("configs/quickstart.py").get_config("smoke")
    with cfg.unlocked():
        cfg.model = dict(name="dit", preset="DiT-S/2", input_size=8, in_channels=1,
                         hidden_size=32, depth=1, num_heads=2, num_classes=10,
                         class_dropout_prob=0.1, learn_sigma=False, time_input="ddpm_index",
                         prediction="eps")
        cfg.train.sample_every = 0
        cfg.optim.warmup_steps = 0
        cfg.optim.lr = 3e-3
        cfg.ema.ema = 0.5
    work = tmp_path_factory.mktemp("run")
    train(cfg, work)
    return work


FRESH = r"""
import json, sys
import numpy as np
import diffjax as dj
from diffjax import samplers as S
run = dj.load(sys.argv[1])
a = run.sample(8, seed=0)
n = S.trace_count()
b = run.sample(8, seed=0)
c = run.sample(8, seed=0, guidance=3.0)
n2 = S.trace_count()
d = run.sample(8, seed=0, guidance=1.5)
n3 = S.trace_count()
# the same set at any chunk size: samples 4..7 alone equal the second half of the batch
e = run.sample(4, seed=0, offset=4)
print(json.dumps(dict(step=run.step, weights=run.weights, shape=list(a.shape),
                      retrace_same=n3 - n2, retrace_again=n2 - n - 1,
                      same=bool(np.array_equal(a, b)), guided_differs=float(np.abs(c - a).max()),
                      scales_differ=float(np.abs(d - c).max()),
                      chunk=float(np.abs(e - a[4:]).max()))))
"""


def test_load_in_a_fresh_process_samples_without_retracing(conditional_digits_run):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", FRESH, str(conditional_digits_run)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["step"] == 20 and r["weights"] == "ema" and r["shape"] == [8, 8, 8, 1]
    assert r["same"]  # a second call is the same program on the same keys
    assert r["retrace_again"] == 0  # ... and it did not trace again (the guided call did, once)
    assert r["retrace_same"] == 0  # a new guidance scale is a traced value
    assert r["guided_differs"] > 0.02 and r["scales_differ"] > 0.02  # measured 0.18, 0.12
    assert r["chunk"] < 1e-5


def test_load_errors_name_what_is_missing(tmp_path, conditional_digits_run):
    import diffjax as dj

    with pytest.raises(FileNotFoundError, match="run.json"):
        dj.load(tmp_path)
    with pytest.raises(ValueError, match="weights='nope'"):
        dj.load(conditional_digits_run, weights="nope")
    run = dj.load(conditional_digits_run, weights="params")
    assert run.weights == "params" and run.model(np.zeros((2, 8, 8, 1), np.float32),
                                                 np.full((2,), 0.5, np.float32),
                                                 np.zeros((2,), np.int32)).shape == (2, 8, 8, 1)
    with pytest.raises(ValueError, match="unknown sampling overrides"):
        run.sample(2, bogus=1)


def test_sampling_notebook_executes(conditional_digits_run):
    """experiments/notebooks/sampling.ipynb on the trained run: every cell runs (its own
    asserts check that repeated calls and new guidance scales do not retrace)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "experiments" / "notebooks" / "sampling.ipynb", as_version=4)
    os.environ["DIFFJAX_WORKDIR"] = str(conditional_digits_run)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        os.environ.pop("DIFFJAX_WORKDIR", None)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "new traces: 0" in text and "new traces after the first scale: 0" in text
    images = [o for c in nb.cells for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 7  # the run's grid, three samplers, three guidance scales
