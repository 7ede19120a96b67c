# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Results files of this build
#
# This page is generated: the book runner executes it after the other notebooks and it reads
# every CSV file of `results/<profile>/`. Other pages ({doc}`../results`, {doc}`../reproduce`)
# show its tables through glue keys, so the numbers in the prose always come from these files.
#
# Glue keys defined here (all always present, with a placeholder when a file is missing):
# `profile`, `results_dir`, `result_files_table`, `n_result_files`, `notebook_times_table`,
# `notebook_total_seconds`, `stage_times_table`, `metrics_table`, `profiles_table` and, for every
# profile P, `P_image_size`, `P_steps` and `P_n_masks`.

# %% tags=["parameters"]
profile = "mini"     # run profile whose results are shown
results_dir = ""     # empty: results/PROFILE under the repository root

# %%
from pathlib import Path

import pandas as pd

from anomalysd_core.book import glue, html_table
from anomalysd_core.config import REPO_ROOT

rdir = Path(results_dir) if results_dir else REPO_ROOT / "results" / profile
files = sorted(p for p in rdir.glob("*.csv") if not p.name.startswith(".")) if rdir.is_dir() else []
tables = {p.name: pd.read_csv(p) for p in files}
glue("profile", profile)
glue("results_dir", f"results/{profile}")
glue("n_result_files", str(len(tables)))
listing = pd.DataFrame([{"file": n, "rows": len(t), "columns": ", ".join(map(str, t.columns[:8]))
                         + (", ..." if len(t.columns) > 8 else "")} for n, t in tables.items()],
                       columns=["file", "rows", "columns"])
if listing.empty:
    listing = pd.DataFrame([{"file": "(none yet)", "rows": 0, "columns": ""}])
glue("result_files_table", html_table(listing), display=False)
listing


# %%
def placeholder(what: str, how: str) -> pd.DataFrame:
    return pd.DataFrame([{"status": f"no {what} in results/{profile} yet", "how to make it": how}])


times = tables.get("notebook_times.csv")
if times is not None and len(times):
    times = times.sort_values("notebook").reset_index(drop=True)
    glue("notebook_total_seconds", f"{times['seconds'].sum():.0f}")
else:
    times = placeholder("notebook_times.csv", f"python -m anomalysd_core.book --profile {profile}")
    glue("notebook_total_seconds", "n/a")
glue("notebook_times_table", html_table(times), display=False)
times

# %% [markdown]
# Stage times written by the pipeline (any other CSV whose name contains `time`):

# %%
stage = [t.assign(file=n) for n, t in tables.items() if "time" in n and n != "notebook_times.csv"]
stage_times = (pd.concat(stage, ignore_index=True) if stage else
               placeholder("stage timing file", f"anomalysd evaluate --profile {profile}"))
glue("stage_times_table", html_table(stage_times), display=False)
stage_times

# %% [markdown]
# Metrics (every `metrics*.csv`, scores in percent):

# %%
metric_files = [n for n in tables if n.startswith("metrics")]
if metric_files:
    metrics = pd.concat([tables[n].assign(file=n) for n in metric_files], ignore_index=True)
    num = [c for c in metrics.columns if c.startswith(("i_", "p_"))]
    metrics[num] = (100 * metrics[num]).round(1)
else:
    metrics = placeholder("metrics.csv", f"anomalysd evaluate --profile {profile}")
glue("metrics_table", html_table(metrics), display=False)
metrics

# %% [markdown]
# The run profiles, as `anomalysd_core/config.py` defines them (shown on {doc}`../reproduce`):

# %%
from anomalysd_core.config import PROFILES, get_config

fields = ["dataset", "data_root", "image_size", "base_model", "text_encoder", "backbone", "distance",
          "unet_steps", "unet_epochs", "decoder_steps", "decoder_epochs", "num_inference_steps",
          "grid_scales", "noise_strength", "shots"]
profiles_table = pd.DataFrame({p: {f: str(getattr(get_config(p), f)) for f in fields} for p in PROFILES})
profiles_table.index.name = "field"
glue("profiles_table", html_table(profiles_table, index=True), display=False)
profiles_table
for p in PROFILES:
    c = get_config(p)
    glue(f"{p}_image_size", str(c.image_size))
    glue(f"{p}_steps", str(c.num_inference_steps))
    glue(f"{p}_n_masks", str(sum(k * k for k in c.grid_scales)))
