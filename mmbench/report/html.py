"""Render: the report as one static, self-contained page (``index.html``; inline CSS and JS, no network).

It shows what ``report.md`` shows, from the same objects (``tables.build_table``'s :class:`RenderedTable`,
the findings' verdicts, the figure captions, the provenance dict): every table with each column's direction
(↑ higher is better, ↓ lower), the best values bold, degenerate values flagged †, and every "—" with its
reason (footnote and tooltip); tables sort by clicking a header (missing values stay last); every figure
and sample grid with its caption (images are the PNG files beside the page); the findings check; provenance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from mmbench.report import findings as fnd
from mmbench.report import tables as tbl
from mmbench.report.aggregate import Aggregate, format_cell
from mmbench.report.collect import Collected
from mmbench.report.cost import HEADERS, NOTE, RunCost, cells, run_costs, totals
from mmbench.report.provenance import DIVERGENCE_NOTE, divergence_lines

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.note{background:#fff4d6;border-left:4px solid #e0a800;padding:.6em 1em}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ddd;padding:.3em .6em}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;background:#f3f3f3;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" ▲"}table.sortable th[aria-sort=descending]::after{content:" ▼"}
caption{text-align:left;font-weight:600;padding:.3em 0}
.flag{color:#b00}.missing{color:#888}ol.notes{font-size:.9em;color:#444}
figure{margin:1.2em 0}figure img{max-width:min(100%,900px);border:1px solid #eee}figcaption{font-size:.9em;color:#444}
.verdict{font-weight:600;white-space:nowrap}
"""

SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (other) { other.setAttribute("aria-sort", "none"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.map.call(body.rows, function (row, i) { return [row, i]; });
      rows.sort(function (a, b) {
        var x = a[0].cells[col].getAttribute("data-sort"), y = b[0].cells[col].getAttribute("data-sort");
        if (x === "" || y === "") { return x === y ? a[1] - b[1] : (x === "" ? 1 : -1); }
        var nx = Number(x), ny = Number(y);
        var order = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
        return (ascending ? order : -order) || a[1] - b[1];
      });
      rows.forEach(function (pair) { body.appendChild(pair[0]); });
    });
  });
});
"""


@dataclass(frozen=True)
class Page:
    """Everything the page shows, computed elsewhere (``mmbench.report.build_report``)."""

    collected: Collected
    agg: Aggregate
    tables: Sequence[tbl.RenderedTable]
    findings: Sequence[tuple[fnd.Finding, fnd.Verdict]] | None  # None: the suite declares no findings
    pictures: Sequence[tuple[str, str]]  # (PNG path relative to the page, caption)
    not_drawn: dict[str, str]  # figure -> why it could not be drawn
    missing_rows: dict[str, str]  # row -> why it lacks a finished run
    provenance: dict[str, Any]


def render_page(page: Page) -> str:
    suite, budget = page.collected.suite, page.collected.budget
    title = f"{suite.name} v{suite.version} — budget {budget.name}"
    parts = [f"<h1>{escape(title)}</h1>", f"<p>{escape(suite.description)}</p>", _budget_note(page)]
    parts += _missing_rows(page) + _divergent(page) + _row_notes(page)
    if page.findings is not None:
        parts += ["<h2 id=findings>Findings</h2>", findings_html(page.findings, budget.name, budget.ranks)]
    parts += ["<h2 id=tables>Tables</h2>",
              "<p>Click a column header to sort (again to reverse); missing values stay last. "
              "↑: higher is better, ↓: lower is better; bold: best; †: degenerate, not ranked.</p>"]
    parts += [table_html(t, page.agg, i) for i, t in enumerate(page.tables)]
    parts += ["<h2 id=figures>Figures</h2>"] + [_figure(path, caption) for path, caption in page.pictures]
    parts += [f"<p class=missing>{escape(name)}: not drawn ({escape(why)})</p>" for name, why in page.not_drawn.items()]
    parts += ["<h2 id=cost>Cost</h2>", cost_html(run_costs(page.collected))]
    parts += ["<h2 id=provenance>Provenance</h2>", provenance_html(page.provenance)]
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>\n" + "\n".join(p for p in parts if p)
            + f"\n<script>{SORT_SCRIPT}</script>\n</body></html>\n")


def _budget_note(page: Page) -> str:
    budget = page.collected.budget
    if not budget.ranks:
        return (f"<p class=note><strong>This budget checks that the pipeline runs; its numbers rank nothing."
                f"</strong> {escape(budget.note)}</p>")
    if budget.sizing == "unmeasured":
        return f"<p class=note>Budget sizes are unmeasured first values: {escape(budget.note)}</p>"
    return ""


def _missing_rows(page: Page) -> list[str]:
    if not page.missing_rows:
        return []
    items = "".join(f"<li><b>{escape(row)}</b>: {escape(why)}</li>" for row, why in page.missing_rows.items())
    return ["<h2 id=missing>Missing rows</h2>",
            f"<p>{len(page.missing_rows)} of {len(page.collected.suite.variants)} rows lack a finished run for some "
            "budget seed; their cells show “—”, never a number:</p>", f"<ul>{items}</ul>"]


def _divergent(page: Page) -> list[str]:
    lines = divergence_lines(page.provenance.get("divergent_references", {}))
    if not lines:
        return []
    items = "".join(f"<li class=flag>{escape(line)}</li>" for line in lines)
    return ["<h2 id=divergent>Runs scored against different references</h2>",
            f"<p class=note>{escape(DIVERGENCE_NOTE)}</p>", f"<ul>{items}</ul>"]


def _row_notes(page: Page) -> list[str]:
    budget = page.collected.budget
    noted = budget.notes_for(v.model for v in page.collected.suite.variants)
    if not noted:
        return []
    items = "".join(f"<li><b>{escape(model)}</b>: {escape(note)}</li>" for model, note in noted.items())
    return ["<h2 id=row-notes>Notes on rows</h2>",
            f"<p>From the budget {escape(budget.name)} (each table marks these rows):</p>", f"<ul>{items}</ul>"]


def table_html(table: tbl.RenderedTable, agg: Aggregate, index: int = 0) -> str:
    """One sortable table: header arrows, bold best, † flags, and a footnote (and tooltip) for every "—"."""
    anchor = f"t{index}-{table.spec.name}"
    headers = [c.header for c in table.spec.columns]
    head = "<th aria-sort=none>Model</th>" + "".join(
        f"<th aria-sort=none title='{escape(_direction_words(agg, table, h))}'>{escape(h + tbl.arrow(agg, table, h))}"
        "</th>" for h in headers)
    body = []
    for row in table.rows:
        mark = table.note_mark(row, lambda n: f"<sup><a href='#{anchor}-n{n}'>[{n}]</a></sup>")
        cells = [f"<td data-sort='{escape(row)}'>{escape(row)}{mark}</td>"]
        cells += [_cell_html(table, row, header, anchor) for header in headers]
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f"<li id={anchor}-n{n}>{escape(tbl.flagged_prefix(table, reason) + reason)}</li>"
                    for reason, n in table.footnotes.items())
    return (f"<table class=sortable id={anchor}><caption>{escape(table.spec.title)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            + (f"<ol class=notes>{notes}</ol>" if notes else ""))


def _cell_html(table: tbl.RenderedTable, row: str, header: str, anchor: str) -> str:
    cell = table.cells[(row, header)]
    text = escape(format_cell(cell, tbl.digits(table, header)))
    flag = table.flags.get((row, header))
    sort_key = "" if cell.mean is None else repr(cell.mean)
    if cell.reason:
        n = table.footnotes[cell.reason]
        return (f"<td class='num missing' data-sort='' title='{escape(cell.reason)}'>{text}"
                f"<sup><a href='#{anchor}-n{n}'>[{n}]</a></sup></td>")
    if flag:
        n = table.footnotes[flag]
        return (f"<td class='num flag' data-sort='{sort_key}' title='not ranked: {escape(flag)}'>{text} †"
                f"<sup><a href='#{anchor}-n{n}'>[{n}]</a></sup></td>")
    if row in table.best[header]:
        text = f"<strong>{text}</strong>"
    return f"<td class=num data-sort='{sort_key}'>{text}</td>"


def _direction_words(agg: Aggregate, table: tbl.RenderedTable, header: str) -> str:
    arrow = tbl.arrow(agg, table, header).strip()
    return {"↑": "higher is better", "↓": "lower is better"}.get(arrow, "no direction (never bold)")


def _figure(path: str, caption: str) -> str:
    return (f"<figure><img src='{escape(path)}' alt='{escape(caption)}' loading=eager>"
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def findings_html(results: Sequence[tuple[fnd.Finding, fnd.Verdict]], budget: str, ranks: bool) -> str:
    parts = [f"<p>The paper's claims at budget {escape(budget)}, computed from the store (rules below).</p>"]
    if not ranks:
        parts.append(f"<p class=note>Budget {escape(budget)} checks the pipeline only: these verdicts say nothing "
                     "about the models.</p>")
    rows = "".join(f"<tr><td>{escape(f.claim)}</td><td>{escape(f.reference)}</td><td class=verdict>"
                   f"{escape(v.status)}</td><td>{escape(v.evidence)}</td></tr>" for f, v in results)
    parts.append("<table><thead><tr><th>Claim</th><th>Paper</th><th>Verdict</th><th>Evidence</th></tr></thead>"
                 f"<tbody>{rows}</tbody></table>")
    lacks = "".join(f"<li>{escape(f.claim)}: {escape(fnd.lacking(v))}</li>" for f, v in results if fnd.lacking(v))
    if lacks:
        parts.append(f"<ul>{lacks}</ul>")
    parts.append("<ol class=notes>" + "".join(f"<li>{escape(f.rule)}</li>" for f, _ in results) + "</ol>")
    return "\n".join(parts)


def cost_html(costs: list[RunCost]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in cells(c)) + "</tr>" for c in costs)
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"<p>{escape(totals(costs))}</p><p>{escape(NOTE)}</p>")


def provenance_html(prov: dict[str, Any]) -> str:
    items = [f"suite: {prov['suite']} v{prov['suite_version']}, budget {prov['budget']} ({prov['budget_status']})",
             f"store: {prov['tracking_uri']}"]
    items += [f"{tag}: {', '.join(values)}" + ("  (differs between runs)" if len(values) > 1 else "")
              for tag, values in prov["shared"].items()]
    if prov["versions"]:
        items.append("versions: " + ", ".join(f"{k} {v}" for k, v in sorted(prov["versions"].items())))
    items += [f"runs of {variant}: " + ", ".join(f"seed {s} → {r}" for s, r in sorted(seeds.items()))
              for variant, seeds in prov["runs"].items()]
    items += [f"generation settings of {variant}: " + ", ".join(f"{k}={v}" for k, v in settings.items())
              for variant, settings in prov.get("generation", {}).items()]
    items += [f"ignored {count} run(s): {reason}" for reason, count in prov["ignored_runs"].items()]
    return "<ul>" + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ul>"
