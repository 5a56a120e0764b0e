"""The documentation's screenshots: the HTML report and the MLflow UI comparing a suite's models, taken in
headless Chromium (``tests/headless.py``; needs ``apt-get install chromium``).

Usage, on a store with finished runs (e.g. ``mmbench run --suite synthetic --budget smoke --models
dummy,mvae --seeds 0,1 --tracking-uri sqlite:///smoke.db``)::

    python benchmarks/screenshots.py --tracking-uri sqlite:///smoke.db --suite synthetic --budget smoke \
        --out docs/img

writes ``report_top.png`` and ``report_tables.png`` (after clicking a column header) of ``mmbench
report``'s index.html, then starts ``mmbench ui`` on a free port and writes ``mlflow_runs.png`` (job runs
filtered by ``tags.kind = 'job'``, grouped by the ``model`` tag, a column per headline metric) and
``mlflow_chart.png`` (the chart view, one metric across the model groups). The UI's view state (columns,
grouping) is the one it keeps in the browser's localStorage, set here before the page loads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from headless import Browser, _free_port, find_chromium  # noqa: E402

METRICS = ("coherence/loo/mean", "fid/loo/mean", "coherence/uncond/all_agree", "fid/uncond/mean",
           "mode_coverage/mean/entropy_norm")


def _view_state() -> dict:
    """The experiment page's stored view: job runs, a column per metric, grouped by model (mean per group)."""
    return {
        "searchFilter": "tags.kind = 'job'", "orderByKey": "attributes.start_time", "orderByAsc": False,
        "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
        "selectedColumns": ["tags.`model`", "tags.`seed`"] + [f"metrics.`{m}`" for m in METRICS],
        "columnOrder": [], "columnWidths": {}, "runsExpanded": {}, "runsPinned": [], "runsHidden": [],
        "runsVisibilityMap": {}, "runsHiddenMode": "FIRST_10_RUNS", "viewMaximized": False, "runListHidden": False,
        "isAccordionReordered": False, "useGroupedValuesInCharts": True, "hideEmptyCharts": True,
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "model"}]},
        "groupsExpanded": {}, "autoRefreshEnabled": False,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def report_shots(browser: Browser, report: Path, out: Path) -> None:
    browser.open((report / "index.html").as_uri())
    browser.screenshot(out / "report_top.png", full_page=False)
    browser.evaluate("(() => { const t = document.querySelectorAll('table.sortable')[1]; t.scrollIntoView();"
                     " t.tHead.rows[0].cells[3].click(); return 1; })()")
    browser.screenshot(out / "report_tables.png", full_page=False)
    if browser.errors:
        raise SystemExit(f"the report page logged errors: {browser.errors}")


def _wait_for(url: str, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the MLflow UI did not answer at {url} within {seconds:.0f} s")


def mlflow_shots(browser: Browser, uri: str, suite: str, out: Path) -> None:
    from mmbench import tracking

    experiment = tracking.Store(uri).experiment_id(suite, create=False)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen([sys.executable, "-m", "mmbench", "ui", "--tracking-uri", uri, "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(f"http://127.0.0.1:{port}/health")
        page = f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs?workflowType=machine_learning"
        browser.open(page)
        key = f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment}"]-ReactComponentState'
        browser.evaluate(f"localStorage.setItem({json.dumps(key)}, {json.dumps(json.dumps(_view_state()))});"
                         "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                         "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true'); 1")
        browser.open("about:blank")
        browser.open(page)
        browser.settle(6)
        browser.screenshot(out / "mlflow_runs.png", full_page=False)
        browser.evaluate("location.hash = location.hash + '&compareRunsMode=CHART'; 1")
        browser.settle(5)
        browser.evaluate("""(() => { const box = document.querySelector('input[placeholder="Search metric charts"]');
          Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(box, '/loo/mean');
          box.dispatchEvent(new Event('input', {bubbles: true})); return 1; })()""")
        browser.settle(3)
        browser.screenshot(out / "mlflow_chart.png", full_page=False)
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--suite", default="synthetic")
    parser.add_argument("--budget", default="smoke")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = parser.parse_args()
    binary = find_chromium()
    if binary is None:
        raise SystemExit("no chromium binary on PATH (apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report"
        subprocess.run([sys.executable, "-m", "mmbench", "report", "--suite", args.suite, "--budget", args.budget,
                        "--tracking-uri", args.tracking_uri, "--out", str(report), "--format", "md,html"],
                       check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
        with Browser(binary, width=1280, height=800) as browser:
            report_shots(browser, report, args.out)
        with Browser(binary, width=1500, height=760) as browser:
            mlflow_shots(browser, args.tracking_uri, args.suite, args.out)
    print(f"wrote {', '.join(sorted(p.name for p in args.out.glob('*.png')))} to {args.out}")


if __name__ == "__main__":
    main()
