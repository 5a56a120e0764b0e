"""The browsable report (``index.html``) in a real headless Chromium, and the labels its figures carry.

One module-scoped smoke store (the synthetic suite's dummy and MVAE rows, seed 0) feeds a report; the page
is opened over file:// and checked for console errors, images that do not load, and header-click sorting.
Skipped, saying why, on a machine without a Chromium binary (``apt-get install chromium``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import math
import shutil
import time

import numpy as np
import pytest
from click.testing import CliRunner
from headless import Browser, find_chromium
from test_runner import seed_classifiers, store_uri

from mmbench.cli import main
from mmbench.report import figures as figs
from mmbench.report.aggregate import Aggregate

CHROMIUM = find_chromium()
needs_browser = pytest.mark.skipif(
    CHROMIUM is None or importlib.util.find_spec("tornado") is None,
    reason="needs a chromium binary on PATH (apt-get install chromium) and tornado (pip install -e .[test])")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """`mmbench run --suite synthetic --budget smoke --models dummy,mvae --seeds 0`, then `mmbench report`."""
    home = tmp_path_factory.mktemp("html_home")
    seed_classifiers(home)
    uri, out = store_uri(home), home / "report"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMBENCH_HOME", str(home))
        run = CliRunner().invoke(main, ["run", "--suite", "synthetic", "--budget", "smoke", "--models", "dummy,mvae",
                                        "--seeds", "0", "--device", "cpu", "--quiet", "--threads", "1",
                                        "--tracking-uri", uri], catch_exceptions=False)
        assert run.exit_code == 0, run.output
        made = CliRunner().invoke(main, ["report", "--suite", "synthetic", "--budget", "smoke", "--tracking-uri", uri,
                                         "--out", str(out)], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    return out


def test_report_writes_html_beside_markdown_by_default(report):
    page = (report / "index.html").read_text()
    assert (report / "report.md").exists() and page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched from a network
    # what each run took, in both renderings (the runner logs job/seconds and job/cpu_seconds on every run)
    assert "<h2 id=cost>Cost</h2>" in page and "<td>mvae</td><td>0</td>" in page
    assert "## Cost" in (report / "report.md").read_text() and "(logged by 2 of 2), CPU" in page
    # every "—" carries its reason as a tooltip and a footnote number
    dashes = page.count(">—<sup>")
    assert dashes > 0 and page.count("class='num missing' data-sort='' title='") == dashes
    assert "title='no run yet for this row (see Missing rows)'" in page
    # the degenerate (collapsed) unconditional agreement is flagged, as in the Markdown table
    markdown = (report / "tables" / "unconditional.md").read_text()
    assert ("†" in markdown) == ("class='num flag'" in page)
    # every figure and grid is shown with its caption, and the budget is on every caption
    pngs = sorted(p.relative_to(report).as_posix() for p in report.rglob("*.png"))
    for path in pngs:
        assert f"<img src='{path}'" in page
    assert page.count("<figcaption>") == len(pngs) and page.count("budget smoke") >= len(pngs)


@needs_browser
def test_html_report_loads_every_image_and_sorts_in_chromium(report, tmp_path):
    with Browser(CHROMIUM) as browser:
        browser.open((report / "index.html").as_uri())
        images = browser.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        assert len(images) == len(list(report.rglob("*.png"))) and all(width > 0 for _, width in images), images
        table = "document.querySelectorAll('table.sortable')[1]"  # the unconditional table
        header = browser.evaluate(f"Array.from({table}.tHead.rows[0].cells).map(c => c.textContent)")
        column = header.index("Uncond. FID ↓")
        order = f"Array.from({table}.tBodies[0].rows).map(r => r.cells[0].textContent)"
        values = (f"Array.from({table}.tBodies[0].rows).map(r => r.cells[{column}].getAttribute('data-sort'))"
                  ".filter(v => v !== '').map(Number)")
        before = browser.evaluate(order)
        browser.evaluate(f"{table}.tHead.rows[0].cells[{column}].click()")
        ascending, rows_up = browser.evaluate(values), browser.evaluate(order)
        browser.evaluate(f"{table}.tHead.rows[0].cells[{column}].click()")
        descending, rows_down = browser.evaluate(values), browser.evaluate(order)
        browser.screenshot(tmp_path / "report.png")
        assert browser.errors == []
    assert len(ascending) == 2 and ascending == sorted(ascending) and descending == sorted(ascending, reverse=True)
    assert rows_up != before and rows_up[:2] == rows_down[:2][::-1]  # the two measured rows swap places
    assert sorted(rows_up) == sorted(before) and rows_up[2:] == rows_down[2:]  # rows without a value stay last
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


@needs_browser
def test_the_browser_check_catches_a_broken_image_and_a_script_error(report, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(report, broken)
    next(broken.rglob("samples/*.png")).unlink()
    page = broken / "index.html"
    page.write_text(page.read_text().replace("</body>", "<script>undefinedFunction()</script></body>"))
    with Browser(CHROMIUM) as browser:
        browser.open(page.as_uri())
        widths = browser.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
        time.sleep(0.2)
        browser.settle(0.1)
        errors = list(browser.errors)
    assert widths.count(0) == 1
    assert any("ERR_FILE_NOT_FOUND" in e for e in errors) and any("undefinedFunction" in e for e in errors), errors


# ---------------------------------------------------------------------------------------- figure labels


def test_every_figure_title_names_its_budget(monkeypatch, tmp_path):
    from test_report import _curves_collected

    collected = _curves_collected()
    titles = []
    monkeypatch.setattr(figs, "_save", lambda fig, folder, name: titles.append(
        fig.get_suptitle() or fig.axes[0].get_title()) or [])
    for name in ("fig8", "fig9", "fig14"):
        figs.draw(name, Aggregate(collected), tmp_path)
    budget = collected.budget.name
    assert len(titles) == 3 and all(t.endswith(f"— budget {budget}") for t in titles), titles
    collected.budget = dataclasses.replace(collected.budget, name="smoke", ranks=False)
    figs.draw("fig8", Aggregate(collected), tmp_path)
    assert titles[-1].endswith("— budget smoke (pipeline check, ranks nothing)")


def test_grid_rows_are_labelled_given_then_generated():
    assert figs.grid_row_labels("loo", ["m0", "m1"]) == ["m0: test data", "m0: generated | rest",
                                                       "m1: test data", "m1: generated | rest"]
    assert figs.grid_row_labels("uncond", ["m0", "m1"]) == ["m0: generated", "m1: generated"]


def _grid_png(rows: int, size: int = 8) -> bytes:
    from PIL import Image

    from mmbench.metrics.grids import tile

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(tile([rng.integers(0, 255, (3, 3, size, size), dtype=np.uint8) for _ in range(rows)])).save(
        buffer, format="PNG")
    return buffer.getvalue()


def test_labelled_grid_puts_each_label_on_its_row(monkeypatch):
    captured = {}
    real = figs._pyplot

    def spy():
        plt = real()
        original = plt.subplots

        def subplots(*args, **kwargs):
            fig, ax = original(*args, **kwargs)
            captured["ax"] = ax
            return fig, ax
        monkeypatch.setattr(plt, "subplots", subplots)
        return plt
    monkeypatch.setattr(figs, "_pyplot", spy)
    png = figs.labelled_grid(_grid_png(4), ["a", "b", "c", "d"], "title")
    assert png[:4] == b"\x89PNG"
    ax = captured["ax"]
    centres = [pad + i * (8 + pad) + 8 / 2 for i, pad in zip(range(4), [2] * 4, strict=True)]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c", "d"]
    assert all(math.isclose(a, b) for a, b in zip(ax.get_yticks(), centres, strict=True))
    figs.labelled_grid(_grid_png(4), ["a", "b", "c"], "title")  # 3 labels for 4 rows: no labels, said so
    assert "rows unlabelled" in captured["ax"].get_title() and len(captured["ax"].get_yticks()) == 0
