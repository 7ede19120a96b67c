"""The notebook runner (``anomalysd_core.reproduce.book``): every notebook executes at profile smoke (into
tmp folders; notebooks 03-09 fall back to a random stand-in base model when ``models/mini-base``
is absent), failures stop the run, and unchanged notebooks are skipped (stage cache).

The Jupyter Book site: it builds offline from the executed smoke notebooks, fails on a broken
reference or a missing glue key, and its results page renders in headless Chromium."""
import csv
import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from anomalysd_core.reproduce import book

# The notebook runner's tests and the site's tests live in this one file, so that `pytest -n 2
# --dist loadfile` (make test) runs them in one worker and one smoke run of the notebooks (the
# runner's stage cache) serves both.


def shared_dirs(tmp_path_factory):
    """Folders shared by test_book.py and this file within one pytest session, so the stage
    cache of the runner executes each smoke notebook once per session."""
    from anomalysd_core.config import get_config
    from anomalysd_core.data.mini import ensure_mini

    base = tmp_path_factory.getbasetemp() / "book-smoke"
    # a data_root away from data/smoke is built only when asked (a missing one is a typo)
    ensure_mini(get_config("smoke", data_root=str(base / "data")), build=True)
    return {"build_dir": base / "build", "results_dir": base / "results",
            "params": {"data_root": str(base / "data"), "out_dir": str(base / "runs")}}


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    d = shared_dirs(tmp_path_factory)
    runs = book.run_notebooks("smoke", only=["01", "02"], **d)
    return d, runs


def _errors(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.output_type == "error"]


def _glue_keys(nb):
    keys = set()
    for c in nb.cells:
        for o in c.get("outputs", []):
            sb = o.get("metadata", {}).get("scrapbook")
            if sb:
                keys.add(sb["name"])
    return keys


@pytest.mark.slow
def test_smoke_notebooks_execute(smoke_runs):
    d, runs = smoke_runs
    assert [r.name for r in runs] == ["01_preliminaries", "02_masks_and_prompts"]
    out_dir = d["build_dir"] / "notebooks" / "smoke"
    for r in runs:
        assert r.output == out_dir / f"{r.name}.ipynb" and r.output.is_file()
        nb = nbformat.read(r.output, as_version=4)
        assert not _errors(nb), f"{r.name} has error outputs"
        assert (out_dir / f"{r.name}.hashes.json").is_file()
        # papermill injected the profile
        assert any('profile = "smoke"' in c.source for c in nb.cells if c.cell_type == "code")
    nb1 = nbformat.read(out_dir / "01_preliminaries.ipynb", as_version=4)
    assert {"abar_last", "latent_shape", "attn_layer", "eq5_loss"} <= _glue_keys(nb1)
    nb2 = nbformat.read(out_dir / "02_masks_and_prompts.ipynb", as_version=4)
    assert {"n_grid_masks", "proto_threshold", "prompt_sim_mean"} <= _glue_keys(nb2)
    # every figure was rendered
    assert sum("image/png" in o.get("data", {}) for c in nb2.cells for o in c.get("outputs", [])) >= 6
    # the sources are py:percent files only: nothing executed is written next to them
    assert not list(book.NOTEBOOK_DIR.glob("*.ipynb"))
    with open(d["results_dir"] / book.TIMES_FILE) as f:
        rows = {r["notebook"]: r for r in csv.DictReader(f)}
    assert {"01_preliminaries", "02_masks_and_prompts"} <= set(rows)
    assert all(float(rows[n]["seconds"]) > 0 for n in ("01_preliminaries", "02_masks_and_prompts"))


@pytest.mark.slow
def test_smoke_notebooks_are_cached(smoke_runs):
    d, _ = smoke_runs
    again = book.run_notebooks("smoke", only=["01", "02"], **d)
    assert all(r.cached for r in again)


# ------------------------------------------------------------------ tiny notebooks, real kernel
def _write(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def tiny_notebooks(tmp_path, monkeypatch):
    src = tmp_path / "notebooks"
    src.mkdir()
    _write(src / "01_ok.py", """\
        # %% tags=["parameters"]
        profile = "mini"
        scale = 1

        # %%
        print("profile", profile, "scale", scale)
        """)
    _write(src / "02_bad.py", """\
        # %% tags=["parameters"]
        profile = "mini"

        # %%
        raise RuntimeError("deliberate failure in 02")
        """)
    _write(src / "03_never.py", """\
        # %%
        print("must not run")
        """)
    monkeypatch.setattr(book, "NOTEBOOK_DIR", src)
    monkeypatch.setattr(book, "BOOK_NOTEBOOKS", ())
    return src


@pytest.mark.slow
def test_failing_notebook_stops_the_run(tiny_notebooks, tmp_path, capsys):
    build, results = tmp_path / "build", tmp_path / "results"
    rc = book.main(["--profile", "smoke", "--no-build", "--build-dir", str(build),
                    "--results-dir", str(results), "-p", "scale=3"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "02_bad" in err and "deliberate failure in 02" in err
    out = build / "notebooks" / "smoke"
    assert (out / "01_ok.ipynb").is_file()
    assert not (out / "02_bad.ipynb").exists()          # never a half-written output
    assert (out / "02_bad.failed.ipynb").is_file()      # the partial output, for debugging
    assert not (out / "03_never.ipynb").exists()        # the run stopped at the failure
    nb = nbformat.read(out / "01_ok.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "profile smoke scale 3" in text
    stamp = json.loads((out / "01_ok.hashes.json").read_text())
    assert stamp["parameters"] == {"profile": "smoke", "scale": "3"}


@pytest.mark.slow
def test_stage_cache_reruns_only_changed_notebooks(tiny_notebooks, tmp_path):
    (tiny_notebooks / "02_bad.py").unlink()
    kw = dict(build_dir=tmp_path / "build", results_dir=tmp_path / "results", log=lambda m: None)
    first = book.run_notebooks("smoke", **kw)
    assert [(r.name, r.cached) for r in first] == [("01_ok", False), ("03_never", False)]
    second = book.run_notebooks("smoke", **kw)
    assert all(r.cached for r in second)
    src = tiny_notebooks / "01_ok.py"
    src.write_text(src.read_text().replace('"scale"', '"scale is"'))
    third = book.run_notebooks("smoke", **kw)
    assert [(r.name, r.cached) for r in third] == [("01_ok", False), ("03_never", True)]
    # --force ignores the cache
    assert not any(r.cached for r in book.run_notebooks("smoke", force=True, only=["03"], **kw))


def test_declared_parameters_and_sources():
    nb = book.read_notebook(book.NOTEBOOK_DIR / "02_masks_and_prompts.py")
    names = book.declared_parameters(nb)
    assert names[0] == "profile" and "data_root" in names
    assert nb.metadata["kernelspec"]["name"] == "python3"
    srcs = [p.stem for p in book.notebook_sources()]
    assert srcs[:2] == ["01_preliminaries", "02_masks_and_prompts"] and srcs[-1] == "results_tables"
    assert [p.stem for p in book.notebook_sources(["02"])] == ["02_masks_and_prompts"]
    with pytest.raises(ValueError, match="no notebook matches"):
        book.notebook_sources(["99"])


def test_kernel_runs_this_interpreter():
    import sys

    assert book._runs_this_python(["python", "-m", "ipykernel_launcher"])
    assert book._runs_this_python([sys.executable])
    assert not book._runs_this_python(["/nonexistent/python3.7"])
    name = book.ensure_kernel()
    from jupyter_client.kernelspec import KernelSpecManager

    assert book._runs_this_python(KernelSpecManager().get_kernel_spec(name).argv)


# ------------------------------------------------------------------ notebooks 03-09 (paper tables)
PAPER_NOTEBOOKS = {  # name -> glue keys it must define
    "03_finetuning": {"unet_loss_last", "decoder_loss_last", "d_normal_change", "psnr_change"},
    "04_inference": {"n_masks", "proto_r", "walk_score", "fig3_higher"},
    "05_main_results": {"table1_summary", "table1_beside_paper", "table1_per_class", "table1_timing",
                        "t1_shots_trend", "t1_best_method", "t1_gap", "t1_seed_std"},
    "06_ablation_modules": {"table3_beside_paper", "t3_best_i_auroc", "t3_spread"},
    "07_ablation_design": {"table4_beside_paper", "t4_best_i_auroc", "t4_spread"},
    "08_ablation_masks": {"table5_beside_paper", "t5_best_i_auroc", "t5_knn_i"},
    "09_noise_strength": {"noise_table", "noise_per_class", "noise_i_AUROC_text", "auto_summary",
                          "auto_vs_fixed_text", "auto_vs_best_text", "auto_cost_text"},
    "10_diagnosis": {"psnr_cpu", "psnr_gpu", "diag_means", "diag_sentences", "sched_text", "gap_text"},
    "11_robustness": {"rob_summary", "rob_ranking_text", "rob_rad_text", "rob_anomalysd_text"},
}
RESULT_FILES = {"05_main_results": "table1", "06_ablation_modules": "table3",
                "07_ablation_design": "table4", "08_ablation_masks": "table5",
                "09_noise_strength": "noise_sweep", "10_diagnosis": "diagnosis", "11_robustness": "robustness"}


def test_paper_notebooks_structure():
    """Project Pythia layout and the parameters that let tests redirect every path."""
    for name in PAPER_NOTEBOOKS:
        src = book.NOTEBOOK_DIR / f"{name}.py"
        nb = book.read_notebook(src)
        params = book.declared_parameters(nb)
        assert params[0] == "profile", name
        assert {"data_root", "base_model", "out_dir"} <= set(params), name
        if name in RESULT_FILES:
            assert "results_dir" in params, name
        text = src.read_text()
        for heading in ("## Overview", "## Prerequisites", "## Imports", "## Summary", "## What's next",
                        "## Exercises"):
            assert f"# {heading}" in text, (name, heading)


@pytest.fixture(scope="module")
def smoke_all(tmp_path_factory):
    d = shared_dirs(tmp_path_factory)
    runs = book.run_notebooks("smoke", **d)   # every notebook, results_tables last
    return d, runs


@pytest.mark.slow
def test_paper_notebooks_execute_at_smoke(smoke_all):
    from anomalysd_core.config import MINI_BASE_MODEL

    d, runs = smoke_all
    names = [r.name for r in runs]
    assert names == [p.stem for p in book.notebook_sources()]
    out_dir = d["build_dir"] / "notebooks" / "smoke"
    for name, keys in PAPER_NOTEBOOKS.items():
        nb = nbformat.read(out_dir / f"{name}.ipynb", as_version=4)
        assert not _errors(nb), f"{name} has error outputs"
        assert keys <= _glue_keys(nb), (name, keys - _glue_keys(nb))
        assert sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])) >= 1, name
        text = "".join(str(o.get("data", {}).get("text/markdown", "")) for c in nb.cells
                       for o in c.get("outputs", []))
        if not MINI_BASE_MODEL.exists():
            assert "RANDOMLY INITIALISED" in text, name
    # every paper-table notebook wrote its CSV and provenance into the redirected results folder
    rdir = d["results_dir"]
    for name, res in RESULT_FILES.items():
        df = pd.read_csv(rdir / f"{res}.csv")
        prov = json.loads((rdir / f"{res}.provenance.json").read_text())
        assert prov["profile"] == "smoke" and len(df), res
        assert prov["config"]["out_dir"] == d["params"]["out_dir"], res
    t1 = pd.read_csv(rdir / "table1.csv")
    assert sorted(t1["shots"].unique()) == [0, 1] and list(t1["seed"].unique()) == [0]
    # the runs cache went to the tmp out_dir, not to the repository's runs/
    assert (Path(d["params"]["out_dir"]) / "smoke").is_dir()
    # the results page's notebook found every file (no placeholder left)
    rt = nbformat.read(out_dir / "results_tables.ipynb", as_version=4)
    html = "".join(str(v) for c in rt.cells for o in c.get("outputs", []) for v in o.get("data", {}).values())
    assert "has not been made yet" not in html and "(missing)" not in html
    assert {"table1_beside_paper", "table3_beside_paper", "noise_table", "t5_best_i_auroc"} <= _glue_keys(rt)
    with open(rdir / book.TIMES_FILE) as f:
        rows = {r["notebook"]: float(r["seconds"]) for r in csv.DictReader(f)}
    assert set(PAPER_NOTEBOOKS) <= set(rows)


# ------------------------------------------------------------------ the site
REPOSITORY = "https://github.com/o/r"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    d = shared_dirs(tmp_path_factory)
    book.run_notebooks("smoke", **d)   # every notebook of the toc, profile smoke
    return d["build_dir"] / "notebooks" / "smoke"


@pytest.fixture(scope="module")
def site(executed, tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    # built as the book workflow builds it, for a GitHub repository: the pages' launch links exist
    # and the offline checks below see them
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BOOK_REPOSITORY_URL", REPOSITORY)
        src = book.stage_book(executed, root / "src")
    book.jupyter_book_build(src, root, strict=True)
    return root / "_build" / "html"


@pytest.mark.slow
def test_book_builds_strictly(site, executed):
    for page in ["index.html", "book/intro.html", "book/reproduce.html", "book/deviations.html",
                 "book/results.html", "book/references.html",
                 "book/notebooks/01_preliminaries.html", "book/notebooks/02_masks_and_prompts.html",
                 "book/notebooks/results_tables.html"]:
        assert (site / page).is_file(), page
    results = (site / "book" / "results.html").read_text()
    assert "smoke" in results                       # the profile, glued from results_tables
    assert "notebook_times.csv" in results          # the table of result files
    refs = (site / "book" / "references.html").read_text().lower()
    assert "anomalysd" in refs and "denoising diffusion implicit models" in refs
    intro = (site / "book" / "intro.html").read_text()
    assert "anomalysd_schematic.png" in intro and (site / "_images" / "anomalysd_schematic.png").is_file()
    nb = (site / "book" / "notebooks" / "01_preliminaries.html").read_text()
    assert "data:image/png" in nb or "_images/" in nb
    # each chapter links its source (downloaded from the site), Binder and Colab
    assert "01_preliminaries.py" in nb and list(site.rglob("_downloads/*/01_preliminaries.py"))
    assert "https://mybinder.org/v2/gh/o/r/" in nb
    assert "https://colab.research.google.com/github/o/r/blob/colab/01_preliminaries.ipynb" in nb


@pytest.mark.slow
def test_book_build_fails_on_broken_reference_and_glue_key(executed, tmp_path):
    src = book.stage_book(executed, tmp_path / "src")
    page = src / "book" / "deviations.md"
    page.write_text(page.read_text() + "\n\nSee {ref}`no-such-label` and "
                    "{glue:text}`notebooks/results_tables.ipynb::no_such_key:s`.\n")
    with pytest.raises(book.BookBuildError) as e:
        book.jupyter_book_build(src, tmp_path, strict=True)
    assert "no-such-label" in str(e.value)
    assert "no_such_key" in str(e.value)


def test_stage_book_names_missing_notebooks(tmp_path):
    (tmp_path / "executed").mkdir()
    with pytest.raises(FileNotFoundError, match="01_preliminaries"):
        book.stage_book(tmp_path / "executed", tmp_path / "src")


def test_toc_lists_every_page():
    files = book.toc_files(book.REPO_ROOT / "_toc.yml")
    assert files[0] == "book/intro"
    for f in files:
        if not f.startswith("book/notebooks/"):
            assert (book.REPO_ROOT / f).with_suffix(".md").is_file(), f
    executed = {f.split("/")[-1] for f in files if f.startswith("book/notebooks/")}
    assert {p.stem for p in book.notebook_sources()} == executed


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.slow
def test_results_page_screenshot(site, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    from PIL import Image
    import numpy as np

    png = tmp_path / "results.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1280,1600",
           f"--screenshot={png}", (site / "book" / "results.html").as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file(), f"no screenshot; chromium exit {proc.returncode}: {proc.stderr[-2000:]}"
    img = Image.open(png).convert("L")
    assert img.size == (1280, 1600)
    a = np.asarray(img, dtype=np.float32)
    assert png.stat().st_size > 20_000            # a blank page compresses to a few KB
    assert a.std() > 10 and (a < 100).mean() > 0.005   # text and tables, not an empty canvas


# Chromium with every request off the machine refused: a proxy that does not exist for http(s),
# and no name resolves, so only file:// pages and the site's own files can load.
OFFLINE_FLAGS = ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                 "--host-resolver-rules=MAP * ~NOTFOUND"]


def _remote_refs(html: str) -> list[str]:
    import re

    refs = re.findall(r"""<(?:script|link|img|source|iframe)\b[^>]*?(?:src|href)=["']([^"']+)["']""", html)
    return [r for r in refs if r.startswith(("http://", "https://", "//"))]


@pytest.mark.slow
def test_no_page_names_the_clone(site, executed):
    """No page, and no executed notebook a reader downloads, holds this clone's absolute path
    (the base model, the results folder, the injected parameters are shown relative to it)."""
    from anomalysd_core.config import REPO_ROOT

    root = str(REPO_ROOT)
    named = [p for p in [*site.rglob("*.html"), *executed.glob("*.ipynb")] if root in p.read_text(errors="replace")]
    assert not named, named


def test_default_results_dir_is_injected_as_the_notebooks_own_default(tmp_path):
    """The runner passes results/<profile> as "" (the notebook's own default), so the papermill
    parameters cell of a published page names no machine path; another folder is passed as is."""
    from anomalysd_core.reproduce.book import RESULTS_DIR, notebook_parameters

    declared = {"profile", "results_dir", "data_root"}
    assert notebook_parameters(declared, "mini", RESULTS_DIR / "mini", {})["results_dir"] == ""
    assert notebook_parameters(declared, "mini", tmp_path, {})["results_dir"] == str(tmp_path.resolve())
    assert "results_dir" not in notebook_parameters({"profile"}, "mini", tmp_path, {})


def test_site_loads_nothing_from_the_network(site):
    """Scripts, styles, fonts and images all come from the site itself (MathJax included:
    sphinx-mathjax-offline copies it into _static)."""
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file()
    for page in site.rglob("*.html"):
        assert not _remote_refs(page.read_text(errors="replace")), (page, _remote_refs(page.read_text()))
    for css in (site / "_static").rglob("*.css"):
        text = css.read_text(errors="replace")
        assert "url(http" not in text and "url(//" not in text and "@import url(http" not in text, css


@pytest.mark.slow
@pytest.mark.parametrize("page", ["01_preliminaries", "04_inference"])
def test_equations_render_offline(site, tmp_path, page):
    """Notebooks 01 and 04 in headless Chromium with the network cut off: MathJax's output
    elements are there and no raw \\( ... \\) is left in the visible text; a screenshot is kept."""
    import re

    exe = _chromium()
    if exe is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    url = (site / "book" / "notebooks" / f"{page}.html").as_uri()
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update",
            f"--user-data-dir={tmp_path / 'profile'}", *OFFLINE_FLAGS, "--virtual-time-budget=20000"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    html = dom.stdout
    assert "<mjx-container" in html, f"MathJax did not render {page}: {dom.stderr[-1500:]}"
    assert html.count("<mjx-container") >= 5
    visible = re.sub(r"<(script|style|mjx-assistive-mml)\b.*?</\1>", " ", html, flags=re.S)
    visible = re.sub(r"<[^>]+>", " ", visible)
    assert "\\(" not in visible and "\\[" not in visible, re.findall(r".{40}\\\(.{40}", visible)[:3]
    png = tmp_path / f"{page}.png"
    subprocess.run([*base, "--hide-scrollbars", "--window-size=1280,1600", f"--screenshot={png}", url],
                   capture_output=True, text=True, timeout=180)
    assert png.is_file() and png.stat().st_size > 20_000
