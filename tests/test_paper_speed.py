"""``benchmarks/paper_speed.py``, the GPU head-to-head at the paper's size, run with ``--toy`` on
the CPU: the same code path at mini's size, so that the script is ready when a GPU is."""
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import paper_speed  # noqa: E402

COLUMNS = ["device", "gpu", "dtype", "image_size", "n_masks", "steps", "engine", "s_per_image", "peak_gib",
           "tflop_per_image", "fraction_of_peak", "speedup_vs_naive", "mode", "max_abs_diff_vs_eager", "compile_s"]


def test_toy_run_writes_both_tables(tmp_path):
    # a compile mode costs minutes on a CPU: test_inpaint checks the compiled engine
    paper_speed.main(["--toy", "--device", "cpu", "--finetune-steps", "1", "--modes", "channels_last",
                      "--out", str(tmp_path)])
    speed = pd.read_csv(tmp_path / "bench_paper_speed.csv")
    assert list(speed.columns[:len(COLUMNS)]) == COLUMNS
    assert set(speed["engine"]) == {"batched inpaint", "one pipeline call per mask"}
    nhwc = speed[speed["mode"] == "channels_last"]
    assert len(nhwc) == 1 and nhwc["max_abs_diff_vs_eager"].iloc[0] < 1e-4 and nhwc["compile_s"].iloc[0] == 0
    speed = speed[speed["mode"] == "eager"]
    assert (speed["dtype"] == "float32").all() and (speed["n_masks"] == 6).all()  # 1 + 4 grid masks + M^(p)
    assert (speed["s_per_image"] > 0).all() and (speed["tflop_per_image"] > 0).all()
    # the work over the time over the measured peak (on a shared CI CPU the toy's share can pass 1)
    assert (speed["fraction_of_peak"] > 0).all()
    assert speed["fraction_of_peak"].to_numpy() == pytest.approx(
        (speed["tflop_per_image"] / speed["s_per_image"] / speed["peak_tflops_matmul"]).to_numpy())
    naive = speed.set_index("engine").loc["one pipeline call per mask"]
    assert naive["speedup_vs_naive"] == pytest.approx(1.0)
    batched = speed.set_index("engine").loc["batched inpaint"]
    assert batched["speedup_vs_naive"] == pytest.approx(naive["s_per_image"] / batched["s_per_image"])
    ft = pd.read_csv(tmp_path / "bench_paper_finetune.csv")
    assert len(ft) == 1 and ft.loc[0, "s_per_step"] > 0
    assert ft.loc[0, "paper_finetune_minutes"] == pytest.approx(ft.loc[0, "s_per_step"] * 8000 / 60)
    eq = pd.read_csv(tmp_path / "bench_paper_equivalence.csv")
    assert len(eq) == 1 and eq.loc[0, "masks"] == 4 and eq.loc[0, "dtype"] == "float32"
    assert eq.loc[0, "engine_vs_pipeline"] < 1e-3 and eq.loc[0, "batched_vs_one_at_a_time"] < 1e-3
    prov = json.loads((tmp_path / "bench_paper_speed.provenance.json").read_text())
    assert prov["argv"][0] == "--toy" and prov["modes"] == ["channels_last"] and prov["device"].startswith("cpu")


def test_the_paper_size_refuses_a_cpu(tmp_path):
    with pytest.raises(SystemExit, match="needs a GPU"):
        paper_speed.main(["--device", "cpu", "--out", str(tmp_path)])


def test_an_unknown_mode_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="fast"):
        paper_speed.main(["--toy", "--modes", "fast", "--out", str(tmp_path)])


def test_the_naive_pipeline_runs_where_our_vae_stays_float32():
    """Under float16 ``models.vae_dtype`` keeps our VAE in float32, while a diffusers pipeline feeds
    its VAE in the U-Net's dtype: the naive engine gets a copy in that dtype and leaves ours alone."""
    import torch
    from naive_pipeline import NaiveEngine

    from anomalysd_core.method.masks import grid_masks

    dev = torch.device("cpu")
    unet, vae, size, text_dim = paper_speed.models_for(True, dev)
    comp = paper_speed.components(unet, vae, dev, torch.float16)  # the benchmark's own float16 components
    masks = grid_masks(size, (2,))[0].float()[:2]
    ctx = torch.randn(1, 77, text_dim, generator=torch.Generator().manual_seed(0)).to(torch.float16)
    out = NaiveEngine(comp)(comp, torch.rand(1, 3, size, size), masks, ctx, 0.5, 4)
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()
    assert next(comp.vae.parameters()).dtype == torch.float32
