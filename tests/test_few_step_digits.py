"""Smoke test of ``experiments/few_step_digits.py --tiny`` (the few-step digits table)."""

import json
import math

import pytest
from _scripts import load_script


def _module():
    return load_script("experiments/few_step_digits.py")


@pytest.mark.slow  # ~40 s: three compiles of a tiny NCSN++ train step (reference, EDM, CD)
def test_few_step_digits_tiny_writes_a_finite_table(tmp_path):
    res = _module().run(tiny=True, out=tmp_path / "digits", grids=tmp_path / "grids")
    rows = json.loads((tmp_path / "digits.json").read_text())["rows"]
    md = (tmp_path / "digits.md").read_text()
    assert res["rows"] == rows
    assert {"real training digits", "Gaussian fit", "EDM", "CD"} <= {r["method"] for r in rows}
    # every row scored with finite numbers; generated rows also carry a finite final loss
    for r in rows:
        assert r["finite"] and math.isfinite(r["fid"]) and math.isfinite(r["score"]), r
        if r["method"] not in ("real training digits", "Gaussian fit"):
            assert math.isfinite(r["final_loss"]) and r["train_s"] > 0, r
    # one markdown line per row (plus the header and its rule), one PNG per gridded row
    assert md.count("\n| ") == len(rows) + 2
    grids = [r["grid"] for r in rows if r.get("grid")]
    assert grids and all((tmp_path / "grids" / g).stat().st_size > 0 for g in grids)
