"""The main job (analytic demo) and the benchmark scripts run end to end in their small modes."""

import json

import pytest
from _scripts import load_script

from diffjax.run import cli


def test_demo_quick_writes_table_and_images(tmp_path):
    rows = cli.run_demo(str(tmp_path), num_samples=4000, quick=True)
    assert len(rows) == 2
    for r in rows:
        # with the exact denoiser these samplers sit near the two-sample noise floor
        assert r["sw1_over_floor"] < 4.0, r
        assert (tmp_path / r["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "demo.md").read_text()
    assert "| sampler | NFE |" in table and rows[0]["sampler"] in table
    assert json.loads((tmp_path / "demo.json").read_text())["rows"][0]["nfe"] == rows[0]["nfe"]
    with pytest.raises(SystemExit, match="num_samples"):
        cli.main(["demo", "--num_samples=0"])
    with pytest.raises(SystemExit, match="usage"):
        cli.main(["fly"])
    with pytest.raises(SystemExit, match="needs --config"):
        cli.main(["train"])


def _script(name):
    return load_script(f"experiments/benchmarks/{name}.py")


@pytest.mark.slow  # compiles a UNet and a DiT train step (~45 s on 2 cores)
def test_model_presets_benchmark_tiny(tmp_path):
    out = tmp_path / "models.md"
    rows = _script("model_presets").main(["--tiny", "--out", str(out)])
    by_name = {r[0]: r for r in rows}
    unet = by_name["tiny UNet (8x8)"]
    assert unet[1].params == 701_345 and unet[2] > 0 and unet[3] > 0  # timed forward and step
    assert "| tiny DiT (8x8x4, patch 2) |" in out.read_text()


def test_sampler_overhead_benchmark_tiny(tmp_path):
    mod = _script("sampler_overhead")
    out = tmp_path / "table.md"
    res = mod.main(["--tiny", "--out", str(out)])
    assert res["retraces"] == 0
    sizes = [row[3] for row in res["compile"]]
    assert abs(sizes[0] - sizes[1]) / sizes[0] < 0.02  # one scan body whatever the step count
    assert "Retraces when the guidance scale changes" in out.read_text()


def test_accelerator_speed_benchmark_tiny_and_bf16_dots(tmp_path):
    """The issue-6 benchmark runs end to end (tiny models) and its HLO check tells bf16 compute
    from fp32: with ``dtype=bf16`` the DiT train step's matmuls take bf16 operands (all but the
    XLA attention's backward, whose probability cotangent stays fp32), with fp32 none do."""
    import jax.numpy as jnp

    mod = _script("accelerator_speed")
    out = tmp_path / "speed.md"
    res = mod.main(["--tiny", "--out", str(out)])
    (row,) = res["rows"]
    assert row["img_s"] > 0 and row["dots"] > 20
    assert row["bf16_dots"] >= row["dots"] - 4
    assert res["sampling"]["img_s"] > 0
    assert "| tiny DiT | 8 | no |" in out.read_text()
    state, step, batch = mod._train_parts("tiny DiT", 8, jnp.float32, False, None)
    bf16, dots, fused = mod.hlo_checks(step.lower(state, batch), None)
    assert bf16 == 0 and dots == row["dots"] and not fused
