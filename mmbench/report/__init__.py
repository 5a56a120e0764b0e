"""``mmbench report``: collect (store → tidy table) → aggregate (mean ± std, best) → render (tables, figures).

Reads only the MLflow store (never imports torch) and writes to ``results/<suite>/<budget>/`` (or
``--out``): ``report.md`` (the rows still missing and why, the findings check, every table, the figure
list and the provenance block), ``index.html`` (the same as one self-contained page, tables sortable;
``mmbench.report.html``), ``tables/*.{md,csv,tex}``, ``findings.{md,csv}`` (suites that declare
findings), ``figures/*.{png,pdf}`` (Fig. 10 from the runs' ``eval/samples_uncond_joint.npz``), ``samples/<row>_{loo,uncond}.png`` (labelled) and ``provenance.json``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmbench import atomic, tracking
from mmbench.records import Artifact, Tag, artifact_path, data_param
from mmbench.report import cost, fig10
from mmbench.report import figures as figs
from mmbench.report import findings as fnd
from mmbench.report import tables as tbl
from mmbench.report.aggregate import Aggregate
from mmbench.report.collect import Collected, collect
from mmbench.report.provenance import DIVERGENCE_NOTE, divergence_lines, provenance, provenance_markdown
from mmbench.suites.spec import Budget, Suite

Say = Callable[[str], None]
SAMPLE_GRIDS = {"loo": artifact_path(Artifact.SAMPLES, "samples_loo.png"),
                "uncond": artifact_path(Artifact.SAMPLES, "samples_uncond.png")}
COVERAGE_COUNTS = artifact_path(Artifact.TABLES, "mode_coverage_counts.csv")


@dataclass
class ReportFiles:
    folder: Path
    files: list[Path] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # promised item -> why it is not there
    captions: dict[Path, str] = field(default_factory=dict)  # figure or sample grid PNG -> what it shows


def default_folder(suite: str, budget: str) -> Path:
    return Path.cwd() / "results" / suite / budget


def build_report(suite: Suite, budget: Budget, tracking_uri: str | None = None, out: Path | None = None,
                 formats: Sequence[str] = ("md", "csv", "tex", "html"), say: Say = print) -> ReportFiles:
    """Write every table and figure the suite promises; returns the files and what could not be made.
    ``formats``: table files (md, csv, tex) and ``html`` (the page ``index.html``); report.md is always written."""
    collected = collect(suite, budget, tracking_uri)
    agg = Aggregate(collected)
    result = ReportFiles(Path(out) if out is not None else default_folder(suite.name, budget.name))
    say(f"{suite.name} v{suite.version} budget {budget.name}: {len(collected.runs)} finished runs "
        f"of {len(collected.variants)} rows from {collected.tracking_uri}")
    if not budget.ranks:
        say(f"note: budget {budget.name!r} checks the pipeline only; these numbers rank nothing")
    rendered = _tables(suite, agg, [f for f in formats if f != "html"], result)
    checked = fnd.check_all(suite.findings, agg) if suite.findings else None
    findings_md = _findings(checked, budget, result)
    _figures(suite, agg, collected, result)
    prov = provenance(collected)
    atomic.write_json(result.folder / "provenance.json", prov)
    result.files.append(result.folder / "provenance.json")
    index = result.folder / "report.md"
    divergent = divergence_lines(prov["divergent_references"])
    atomic.write_text(index, _index(collected, agg, rendered, result, provenance_markdown(prov), findings_md, divergent))
    result.files.append(index)
    if "html" in formats:
        from mmbench.report import html

        page = result.folder / "index.html"
        atomic.write_text(page, html.render_page(html.Page(
            collected, agg, rendered, checked, _pictures(result), dict(result.missing), missing_rows(collected), prov)))
        result.files.append(page)
    for line in divergent:
        say(f"warning: not scored alike: {line}")
    for row, line in missing_rows(collected).items():
        say(f"missing: {row}: {line}")
    for item, reason in result.missing.items():
        say(f"not drawn: {item}: {reason}")
    return result


def _tables(suite: Suite, agg: Aggregate, formats: Sequence[str], result: ReportFiles) -> list[tbl.RenderedTable]:
    rendered = []
    folder = result.folder / "tables"
    for name in suite.tables:
        table = tbl.build_table(tbl.TABLES[name], agg)
        rendered.append(table)
        writers = {"md": lambda t=table: tbl.to_markdown(t, agg), "csv": lambda t=table: tbl.to_csv(t),
                   "tex": lambda t=table: tbl.to_latex(t, agg)}
        for fmt in formats:
            path = folder / f"{name}.{fmt}"
            atomic.write_text(path, writers[fmt]())
            result.files.append(path)
    return rendered


def _findings(results: list[tuple[fnd.Finding, fnd.Verdict]] | None, budget: Budget,
              result: ReportFiles) -> str | None:
    """``findings.md`` / ``findings.csv`` of the suite's paper claims; their Markdown (None: none declared)."""
    if results is None:
        return None
    text = fnd.to_markdown(results, budget.name, budget.ranks)
    for name, content in (("findings.md", text), ("findings.csv", fnd.to_csv(results))):
        atomic.write_text(result.folder / name, content)
        result.files.append(result.folder / name)
    return text


def missing_rows(collected: Collected) -> dict[str, str]:
    """row -> why some or all of its budget seeds have no finished run (``seed 0: run failed: ...``)."""
    return {row: "; ".join(f"seed {seed}: {absence.describe()}" for seed, absence in seeds.items())
            for row, seeds in collected.absent.items()}


COVERAGE_CAPTION = "Mode coverage: class shares of each row's unconditional samples (dashed: uniform)"


def _figures(suite: Suite, agg: Aggregate, collected: Collected, result: ReportFiles) -> None:
    folder = result.folder / "figures"
    for name in suite.figures:
        if name == "samples":
            _samples(collected, result)
            continue
        if name == "fig20":
            drawn, what = figs.draw_coverage(agg, _coverage(collected), folder), COVERAGE_CAPTION
        elif name == "fig10":
            drawn, what = fig10.draw(_joint_samples(collected), folder, figs.budget_label(agg)), fig10.WHAT
        else:
            drawn, what = figs.draw(name, agg, folder), figs.FIGURES[name][0]
        result.files.extend(drawn.files)
        for path in drawn.files:
            result.captions[path] = f"{name}: {what}; {figs.budget_label(agg)}"
        if drawn.reason:
            result.missing[name] = drawn.reason


def _pictures(result: ReportFiles) -> list[tuple[str, str]]:
    """(path relative to the report folder, caption) of every PNG written, in the suite's figure order."""
    return [(p.relative_to(result.folder).as_posix(), result.captions.get(p, p.stem))
            for p in result.files if p.suffix == ".png"]


def _first_runs(collected: Collected) -> dict[str, tracking.RunRecord]:
    """The lowest-seed run of every row (the one whose artifacts illustrate the row)."""
    out: dict[str, tracking.RunRecord] = {}
    for run in collected.runs:
        out.setdefault(run.tags[Tag.VARIANT], run)
    return out


def _coverage(collected: Collected) -> dict[str, list[float]]:
    store = tracking.Store(collected.tracking_uri)
    shares: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant, run in _first_runs(collected).items():
            if COVERAGE_COUNTS not in store.artifact_names(run.run_id, Artifact.TABLES):
                continue
            path = store.download(run.run_id, COVERAGE_COUNTS, Path(tmp) / run.run_id)
            values = figs.coverage_shares(path.read_text())
            if values:
                shares[variant] = values
    return shares


JOINT_SAMPLES = artifact_path(Artifact.EVAL, fig10.ARTIFACT)


def _joint_samples(collected: Collected) -> dict[str, fig10.JointSamples]:
    """Row -> the unconditional joint draws its first run logged (Fig. 10), in row order."""
    store = tracking.Store(collected.tracking_uri)
    out: dict[str, fig10.JointSamples] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant, run in _first_runs(collected).items():
            if JOINT_SAMPLES in store.artifact_names(run.run_id, Artifact.EVAL):
                path = store.download(run.run_id, JOINT_SAMPLES, Path(tmp) / run.run_id)
                out[variant] = fig10.read_joint(path.read_bytes())
    return out


GRID_TITLES = {"loo": "each modality given the others", "uncond": "unconditional samples"}
GRID_CAPTIONS = {
    "loo": "per modality, a row of test data and below it the same items generated from all other modalities",
    "uncond": "per modality, a row of unconditional samples",
}


def _samples(collected: Collected, result: ReportFiles) -> None:
    store = tracking.Store(collected.tracking_uri)
    folder = result.folder / "samples"
    found = 0
    with tempfile.TemporaryDirectory() as tmp:
        for variant, run in _first_runs(collected).items():
            names = set(store.artifact_names(run.run_id, Artifact.SAMPLES))
            modalities = _grid_modalities(collected, variant, run)
            for kind, artifact in SAMPLE_GRIDS.items():
                if artifact in names:
                    path = store.download(run.run_id, artifact, Path(tmp) / run.run_id)
                    what = (f"{variant} (model {collected.model_of(variant)}, seed {run.tags.get(Tag.SEED, '0')}, "
                            f"budget {collected.budget.name})")
                    target = folder / f"{variant}_{kind}.png"
                    labels = figs.grid_row_labels(kind, modalities)
                    atomic.write_bytes(target, figs.labelled_grid(path.read_bytes(), labels, f"{what}: {GRID_TITLES[kind]}"))
                    result.files.append(target)
                    result.captions[target] = f"{what}: {GRID_CAPTIONS[kind]}"
                    found += 1
    if not found:
        result.missing["samples"] = "no run logged sample grids (EvalSettings.grid_size = 0?)"


def _grid_modalities(collected: Collected, variant: str, run: tracking.RunRecord) -> list[str]:
    """The modalities the run's grids show (its logged ``data/modalities``, else the row's first k)."""
    logged = run.params.get(data_param("modalities"))
    if logged:
        return list(json.loads(logged))
    return list(collected.suite.dataset.modalities[: collected.num_modalities(variant)])


def _index(collected: Collected, agg: Aggregate, rendered: list[tbl.RenderedTable], result: ReportFiles,
           prov_md: str, findings_md: str | None = None, divergent: Sequence[str] = ()) -> str:
    suite, budget = collected.suite, collected.budget
    lines = [f"# {suite.name} v{suite.version} — budget {budget.name}", "", suite.description, ""]
    if not budget.ranks:
        lines += [f"> **This budget checks that the pipeline runs; its numbers rank nothing.** {budget.note}", ""]
    elif budget.sizing == "unmeasured":
        lines += [f"> Budget sizes are unmeasured first values: {budget.note}", ""]
    missing = missing_rows(collected)
    if missing:
        lines += ["## Missing rows", "", f"{len(missing)} of {len(collected.suite.variants)} rows lack a finished "
                  "run for some budget seed; their cells show \"—\", never a number:", ""]
        lines += [f"- {row}: {why}" for row, why in missing.items()] + [""]
    if divergent:
        lines += ["## Runs scored against different references", "", DIVERGENCE_NOTE, ""]
        lines += [f"- {line}" for line in divergent] + [""]
    noted = budget.notes_for(v.model for v in suite.variants)
    if noted:
        lines += ["## Notes on rows", "", f"From the budget {budget.name!r} (each table marks these rows):", ""]
        lines += [f"- {model}: {note}" for model, note in noted.items()] + [""]
    if findings_md is not None:
        lines += ["## Findings", "", findings_md]
    lines += ["## Tables", ""]
    for table in rendered:
        lines += [tbl.to_markdown(table, agg), ""]
    lines += ["## Figures", ""]
    for rel, caption in _pictures(result):
        lines += [f"![{caption}]({rel})", "", f"*{caption}*", ""]
    for item, reason in result.missing.items():
        lines.append(f"- {item}: not drawn ({reason})")
    lines += ["", "## Cost", "", "What each run took, from the times logged with it:", "",
              cost.to_markdown(cost.run_costs(collected)), "## Provenance", "", prov_md]
    return "\n".join(lines).rstrip() + "\n"
