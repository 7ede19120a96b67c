"""The Jupyter Book site: it builds offline from the executed smoke notebooks, fails on a broken
reference or a missing glue key, and its results page renders in headless Chromium."""
import shutil
import subprocess

import pytest

from anomalysd_core import book

# one xdist worker runs this file and its sibling (test_book.py / test_notebooks.py): they share
# one smoke run of the notebooks through the runner's stage cache
pytestmark = pytest.mark.xdist_group("book")


def shared_dirs(tmp_path_factory):
    """Same folders as in test_notebooks.py: the runner's stage cache executes each smoke
    notebook once per pytest session."""
    base = tmp_path_factory.getbasetemp() / "book-smoke"
    return {"build_dir": base / "build", "results_dir": base / "results",
            "params": {"data_root": str(base / "data"), "out_dir": str(base / "runs")}}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    d = shared_dirs(tmp_path_factory)
    book.run_notebooks("smoke", **d)   # every notebook of the toc, profile smoke
    return d["build_dir"] / "notebooks" / "smoke"


@pytest.fixture(scope="module")
def site(executed, tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
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
