"""Render: the report's tables (paper Tables 1 and 5, the unconditional table, robustness, scaling, incomplete)
as md, csv, tex.

Each cell is mean ± std over seeds; the best row per column (by the key's ``higher_is_better``) is
bold; a missing value is "—" with a footnote giving the recorded reason, never a zero; a row without a
finished run is listed with its cells "—" and the reason; a value degenerate for its metric (a collapsed
model's unconditional agreement) is never bold but flagged "†" with a footnote saying why.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field

from mmbench.report.aggregate import Aggregate, Cell, format_cell


@dataclass(frozen=True)
class Column:
    header: str
    key: str  # may contain {last}: the row's number of modalities minus one
    digits: int = 3

    def key_for(self, num_modalities: int) -> str:
        return self.key.format(last=num_modalities - 1, all=num_modalities)


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    columns: tuple[Column, ...]
    # "observed_share": one row per model and one column per (column, η) of the suite's rows (the incomplete table)
    pivot: str = ""


# paper Table 1 on CelebA-shaped data (modalities image, mask, attributes): each target given each other
# modality alone and given both (the leave-one-out keys)
GIVEN = (("image", "image"), ("mask", "mask"), ("attributes", "attr."))


def _given_columns(label: str, metric: str, target: str, digits: int = 3) -> tuple[Column, ...]:
    others = [(m, short) for m, short in GIVEN if m != target]
    columns = [Column(f"{label} ({short})", f"{metric}/given/{m}/{target}", digits) for m, short in others]
    return (*columns, Column(f"{label} (both)", f"{metric}/loo/{target}", digits))


TABLES: dict[str, TableSpec] = {
    "conditional_attributes": TableSpec(
        "conditional_attributes",
        "Each modality given each other one and given both (paper Table 1): attribute F1, mask F1, image FID",
        (*_given_columns("Attr. F1", "f1", "attributes"), *_given_columns("Mask F1", "f1", "mask"),
         *_given_columns("Image FID", "fid", "image", 2)),
    ),
    "conditional": TableSpec(
        "conditional",
        "Conditional generation of each modality given all others, averaged over modalities (paper Table 5)",
        (Column("Avg coherence", "coherence/loo/mean"), Column("Avg FID", "fid/loo/mean", 2)),
    ),
    "unconditional": TableSpec(
        "unconditional",
        "Unconditional generation: coherence (share of samples whose modalities agree), FID and mode coverage "
        "(paper Fig. 5, A.5)",
        (
            Column("All agree", "coherence/uncond/all_agree"),
            Column("≥ M−1 agree", "coherence/uncond/atleast_{last}"),
            Column("Uncond. FID", "fid/uncond/mean", 2),
            Column("Coverage entropy", "mode_coverage/mean/entropy_norm"),
            Column("Classes covered", "mode_coverage/mean/classes_covered", 1),
        ),
    ),
    "robustness": TableSpec(
        "robustness",
        "Black-box FGSM (ε from the eval settings) on the observed modalities, leave-one-out coherence "
        "(paper §4.2.1), and latent cosine similarity (paper Table 7)",
        (
            Column("Coherence clean", "fgsm/coherence/clean/mean"),
            Column("Coherence adv.", "fgsm/coherence/adv/mean"),
            Column("Drop %", "fgsm/coherence/drop_pct", 1),
            Column("Latent cosine", "latent_cosine/mean"),
        ),
    ),
    "scaling": TableSpec(
        "scaling",
        "Trained on the first M modalities: unconditional FID, and FID and coherence of the first modality "
        "given the rest (paper Figs. 6, 7)",
        (
            Column("Uncond. FID", "fid/uncond/mean", 2),
            Column("FID m0 | rest", "fid/loo/m0", 2),
            Column("Coherence m0 | rest", "coherence/loo/m0"),
        ),
    ),
    "incomplete": TableSpec(
        "incomplete",
        "Trained on incomplete tuples (a share η of the modalities observed per tuple), evaluated on complete "
        "tuples: leave-one-out coherence and conditional FID (paper A.10.1, Table 11)",
        (Column("Coherence", "coherence/loo/mean"), Column("FID", "fid/loo/mean", 2)),
        pivot="observed_share",
    ),
}


@dataclass
class RenderedTable:
    spec: TableSpec
    rows: list[str]
    cells: dict[tuple[str, str], Cell]  # (row, column header) -> cell
    keys: dict[tuple[str, str], str]
    best: dict[str, set[str]]  # column header -> best rows
    footnotes: dict[str, int]  # reason (missing or flagged) -> footnote number
    flags: dict[tuple[str, str], str] = field(default_factory=dict)  # (row, column header) -> why degenerate
    row_notes: dict[str, str] = field(default_factory=dict)  # row -> the budget's note on its model

    def note_mark(self, row: str, mark: Callable[[int], str]) -> str:
        """``mark(n)`` for the footnote ``n`` of the row's model note; "" when it has none."""
        note = self.row_notes.get(row)
        return "" if note is None else mark(self.footnotes[note])

    @property
    def empty(self) -> bool:
        return not any(c.present for c in self.cells.values())


def build_table(spec: TableSpec, agg: Aggregate) -> RenderedTable:
    if spec.pivot == "observed_share":
        return build_incomplete_table(spec, agg)
    rows = agg.rows
    cells, keys, best, notes, flags = {}, {}, {}, {}, {}
    for col in spec.columns:
        for row in rows:
            key = col.key_for(agg.collected.num_modalities(row))
            keys[(row, col.header)] = key
            cell = agg.cell(row, key)
            cells[(row, col.header)] = cell
            flag = agg.degenerate(row, key)
            if flag:
                flags[(row, col.header)] = flag
            for note in (cell.reason, flag):
                if note and note not in notes:
                    notes[note] = len(notes) + 1
        same_key = {keys[(r, col.header)] for r in rows}
        best[col.header] = agg.best(next(iter(same_key)), rows) if len(same_key) == 1 else set()
    models = {v.label: v.model for v in agg.collected.suite.variants}
    return RenderedTable(spec, rows, cells, keys, best, notes, flags, _row_notes(rows, models, agg, notes))


UNRANKED_NOTE = "a reference row, shown for comparison and never marked best (docs/models.md, 'The F1 floors')"


def _row_notes(rows: list[str], models: dict[str, str], agg: Aggregate, footnotes: dict[str, int]) -> dict[str, str]:
    """Each row whose model the budget has a note on (``Budget.model_notes``), or that the suite leaves
    unranked, -> that note, numbered in ``footnotes`` after the cells' notes."""
    budget, unranked = agg.collected.budget, agg.collected.suite.unranked
    out = {row: note for row in rows
           if (note := budget.note_of(models.get(row, row)) or (UNRANKED_NOTE if row in unranked else None)) is not None}
    for note in out.values():
        footnotes.setdefault(note, len(footnotes) + 1)
    return out


def build_incomplete_table(spec: TableSpec, agg: Aggregate) -> RenderedTable:
    """Rows = models, columns = each of ``spec``'s columns at every η of the suite (highest first). A model
    without a row at some η gets "—" with that reason; a row without a value, the recorded one (never 0)."""
    suite = agg.collected.suite
    listed = set(agg.rows)
    variants = [v for v in suite.variants if v.label in listed]
    models = list(dict.fromkeys(v.model for v in variants))
    shares = sorted({v.observed_share for v in variants}, reverse=True)
    label = {(v.model, v.observed_share): v.label for v in variants}
    columns = tuple(Column(f"{c.header} η={share:g}", c.key, c.digits) for c in spec.columns for share in shares)
    shown = TableSpec(spec.name, spec.title, columns, spec.pivot)
    cells, keys, best, notes, flags = {}, {}, {}, {}, {}
    for col, (base, share) in zip(columns, [(c, s) for c in spec.columns for s in shares], strict=True):
        by_model = {}
        for model in models:
            row = label.get((model, share))
            keys[(model, col.header)] = base.key
            if row is None:
                cell = Cell(None, None, 0, f"the suite has no row training {model} at η = {share:g}")
            else:
                by_model[model] = row
                key = base.key_for(agg.collected.num_modalities(row))
                keys[(model, col.header)] = key
                cell = agg.cell(row, key)
                flag = agg.degenerate(row, key)
                if flag:
                    flags[(model, col.header)] = flag
                    notes.setdefault(flag, len(notes) + 1)
            cells[(model, col.header)] = cell
            if cell.reason:
                notes.setdefault(cell.reason, len(notes) + 1)
        winners = agg.best(base.key, list(by_model.values())) if by_model else set()
        best[col.header] = {m for m, r in by_model.items() if r in winners}
    return RenderedTable(shown, models, cells, keys, best, notes, flags,
                         _row_notes(models, {m: m for m in models}, agg, notes))


def arrow(agg: Aggregate, table: RenderedTable, header: str, tex: bool = False) -> str:
    directions = {agg.direction(table.keys[(r, header)]) for r in table.rows}
    if directions == {True}:
        return r" $\uparrow$" if tex else " ↑"
    if directions == {False}:
        return r" $\downarrow$" if tex else " ↓"
    return ""


def to_markdown(table: RenderedTable, agg: Aggregate) -> str:
    headers = [c.header for c in table.spec.columns]
    lines = [f"**{table.spec.title}**", ""]
    lines.append("| Model | " + " | ".join(h + arrow(agg, table, h) for h in headers) + " |")
    lines.append("|---|" + "---:|" * len(headers))
    for row in table.rows:
        parts = []
        for header in headers:
            cell = table.cells[(row, header)]
            text = format_cell(cell, digits(table, header))
            flag = table.flags.get((row, header))
            if cell.reason:
                text += f" [{table.footnotes[cell.reason]}]"
            elif flag:
                text += f" † [{table.footnotes[flag]}]"
            elif row in table.best[header]:
                text = f"**{text}**"
            parts.append(text)
        lines.append(f"| {row}{table.note_mark(row, lambda n: f' [{n}]')} | " + " | ".join(parts) + " |")
    lines.append("")
    lines += [f"[{n}] {flagged_prefix(table, reason)}{reason}" for reason, n in table.footnotes.items()]
    return "\n".join(lines).rstrip() + "\n"


def flagged_prefix(table: RenderedTable, note: str) -> str:
    return "† not ranked: " if note in table.flags.values() else ""


def to_csv(table: RenderedTable) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "column", "key", "mean", "std", "n_seeds", "best", "missing_reason", "flag", "row_note"])
    for row in table.rows:
        for col in table.spec.columns:
            cell = table.cells[(row, col.header)]
            writer.writerow([
                row, col.header, table.keys[(row, col.header)], "" if cell.mean is None else repr(cell.mean),
                "" if cell.std is None else repr(cell.std), cell.n, int(row in table.best[col.header]),
                cell.reason or "", table.flags.get((row, col.header), ""), table.row_notes.get(row, ""),
            ])
    return buffer.getvalue()


def to_latex(table: RenderedTable, agg: Aggregate) -> str:
    headers = [c.header for c in table.spec.columns]
    letters = "abcdefghijklmnopqrstuvwxyz"
    lines = [
        "% " + table.spec.title,
        r"\begin{tabular}{l" + "r" * len(headers) + "}",
        r"\toprule",
        "Model & " + " & ".join(_tex_escape(h) + arrow(agg, table, h, tex=True) for h in headers) + r" \\",
        r"\midrule",
    ]
    for row in table.rows:
        parts = []
        for header in headers:
            cell = table.cells[(row, header)]
            text = format_cell(cell, digits(table, header)).replace("±", r"$\pm$").replace("—", "---")
            flag = table.flags.get((row, header))
            if cell.reason:
                text += f"$^{{{letters[(table.footnotes[cell.reason] - 1) % 26]}}}$"
            elif flag:
                text += rf"$^{{\dagger {letters[(table.footnotes[flag] - 1) % 26]}}}$"
            elif row in table.best[header]:
                text = rf"\textbf{{{text}}}"
            parts.append(text)
        lines.append(_tex_escape(row) + table.note_mark(row, lambda n: f"$^{{{letters[(n - 1) % 26]}}}$") + " & "
                     + " & ".join(parts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {letters[(n - 1) % 26]}: {flagged_prefix(table, reason)}{reason}" for reason, n in table.footnotes.items()]
    return "\n".join(lines) + "\n"


def digits(table: RenderedTable, header: str) -> int:
    return next(c.digits for c in table.spec.columns if c.header == header)


def _tex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                          ("≥", r"$\geq$"), ("−", "-"), ("|", r"$|$")):
        text = text.replace(char, escaped)
    return text
