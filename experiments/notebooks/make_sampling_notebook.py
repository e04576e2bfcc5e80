"""Writes ``experiments/notebooks/sampling.ipynb`` (run once after editing the cells below;
``tests/test_notebook.py`` executes the notebook itself, so it never rots)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell("""# Sampling a trained diffjax run

Load a run trained by `python -m diffjax train` (the README's first command writes
`workdir/quickstart`), draw a grid of samples, then swap samplers and guidance scales. Sampling
goes through one jitted `lax.scan` driver: a new guidance scale or new step values are traced
values, so they run the already compiled program; a new sampler family compiles once."""),
    new_code_cell("""import os, time
import io
import numpy as np
from IPython.display import Image as PNG, display
from PIL import Image
import diffjax as dj
from diffjax.utils import image_grid
from diffjax import samplers as S

WORKDIR = os.environ.get("DIFFJAX_WORKDIR", "workdir/quickstart")
run = dj.load(WORKDIR)          # newest checkpoint, EMA weights
print(f"step {run.step}, weights {run.weights!r}, method {run.method.name!r}, "
      f"process {type(run.process).__name__}, predicts {run.prediction!r}, "
      f"samples of shape {run.x_shape}, classes {run.num_classes}")"""),
    new_code_cell("""def show(x, title):
    grid = image_grid(np.asarray(x)[..., :3])   # [0, 1], small samples enlarged
    buf = io.BytesIO()
    Image.fromarray(np.round(grid * 255).astype(np.uint8)).save(buf, "PNG")
    print(title)
    display(PNG(data=buf.getvalue()))

t0 = time.perf_counter(); x = run.sample(32, seed=0); first = time.perf_counter() - t0
traces = S.trace_count()
t0 = time.perf_counter(); x = run.sample(32, seed=1); second = time.perf_counter() - t0
print(f"first call {first:.2f} s (compiles), second {second:.3f} s, "
      f"new traces: {S.trace_count() - traces}")
assert S.trace_count() == traces, "the second call must not trace again"
show(x, "the run's own sampler")"""),
    new_markdown_cell("""## Swap the sampler

Plain diffusion runs accept any step and grid (`diffjax.samplers`, `diffjax.grids`);
`run.model` is the bound network for calling `dj.sample` directly."""),
    new_code_cell("""grids = {"DDIM, 20 steps": (S.DDIM(0.0), dj.uniform_grid(20, 1.0, 1e-3)),
         "Heun, 10 steps": (S.Heun(), dj.karras_grid(run.process, 10)),
         "DPM-Solver++(2M), 10 steps": (S.DPMSolverPP2M(), dj.karras_grid(run.process, 10))}
if run.method.name == "diffusion":
    for title, (step, grid) in grids.items():
        show(run.sample(16, seed=0, step=step, grid=grid), title)
    traces = S.trace_count()
    run.sample(16, seed=5, step=S.DDIM(0.5), grid=dj.uniform_grid(20, 1.0, 1e-3))
    print("DDIM with eta = 0.5 reuses DDIM's program: new traces", S.trace_count() - traces)
else:
    print(f"{run.method.name!r} samples with its own few-step sampler "
          f"({run.method.nfe} network evaluations)")"""),
    new_markdown_cell("""## Guidance scales

For a class-conditional run, classifier-free guidance (DiT convention: 1 = none) at several
scales; the scale is a traced value, so every scale after the first reuses one program."""),
    new_code_cell("""if run.num_classes and run.method.name == "diffusion":
    labels = np.arange(16) % run.num_classes
    traces = None
    for scale in (1.5, 3.0, 6.0):
        x = run.sample(16, seed=0, cond=labels, guidance=scale)
        if traces is None:
            traces = S.trace_count()
        show(x, f"guidance scale {scale}")
    print("new traces after the first scale:", S.trace_count() - traces)
    assert S.trace_count() == traces
else:
    print("this run is unconditional: no guidance to sweep")"""),
]


def main():
    nb = new_notebook(cells=CELLS, metadata={"kernelspec": {"name": "python3",
                                                            "display_name": "Python 3",
                                                            "language": "python"}})
    path = Path(__file__).with_name("sampling.ipynb")
    nbformat.write(nb, path)
    print("wrote", path)


if __name__ == "__main__":
    main()
