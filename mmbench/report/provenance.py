"""The report's provenance block: code, suite, budget, data, classifiers, extractor and the run ids used."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from mmbench import tracking
from mmbench.records import Tag, model_param, provenance_tag, scoring_references, versions_of
from mmbench.report.collect import Collected

SHARED_TAGS = (
    Tag.GIT_COMMIT, Tag.DATASET, Tag.DATASET_HASH, Tag.CLASSIFIER, Tag.CLASSIFIER_SHA256, Tag.CLASSIFIER_WEIGHTS,
    Tag.SUBSTITUTE, Tag.SUBSTITUTE_SHA256, Tag.SUBSTITUTE_WEIGHTS, Tag.FID_EXTRACTOR, Tag.FID_WEIGHTS,
    provenance_tag("fid/extractor_weights_sha256"), Tag.DEVICE,
)
NOT_RECORDED = "(not recorded)"
# model settings that change what a row's generated samples mean (shown per row when a run has them)
GENERATION_FIELDS = ("conditional", "sampler", "sampler_steps", "corrector_steps", "reimpose", "energy_gamma",
                     "score_ema_decay")


def generation_settings(collected: Collected) -> dict[str, dict[str, str]]:
    """Per row, the logged values of :data:`GENERATION_FIELDS` (e.g. MoPoE's conditional, the SBM sampler)."""
    rows: dict[str, dict[str, str]] = {}
    for run in collected.runs:
        found = {f: run.params[model_param(f)] for f in GENERATION_FIELDS if model_param(f) in run.params}
        if run.params.get(model_param("guidance"), "energy") != "energy":
            found.pop("energy_gamma", None)  # only energy guidance reads it
        if found:
            rows.setdefault(run.tags[Tag.VARIANT], found)
    return rows


def divergent_references(collected: Collected) -> dict[str, dict[str, list[str]]]:
    """Each scoring reference (:func:`mmbench.records.scoring_references`) on which the report's runs disagree:
    reference -> value -> the runs (``<row> seed <s>``) scored against it, values in first-seen order. A run that
    does not record a reference, beside runs that do, counts as :data:`NOT_RECORDED`: nothing shows it alike."""
    refs = [(run, scoring_references(run.tags)) for run in collected.runs]
    divergent: dict[str, dict[str, list[str]]] = {}
    for name in dict.fromkeys(name for _, found in refs for name in found):
        groups: dict[str, list[str]] = {}
        for run, found in refs:
            groups.setdefault(found.get(name, NOT_RECORDED), []).append(_run_label(run))
        if len(groups) > 1:
            divergent[name] = groups
    return divergent


def _run_label(run: tracking.RunRecord) -> str:
    return f"{run.tags[Tag.VARIANT]} seed {run.tags.get(Tag.SEED, '0')}"


def divergence_lines(divergent: dict[str, dict[str, list[str]]]) -> list[str]:
    """One line per reference and value: ``classifier = file f6a0…: sbm-vae seed 0, mmvae seed 0``."""
    return [f"{tag} = {value}: {', '.join(runs)}" for tag, groups in divergent.items() for value, runs in groups.items()]


DIVERGENCE_NOTE = ("These runs were not all scored against the same data, classifiers or feature extractor. "
                   "Numbers from different groups below do not compare (the tables still set them side by side "
                   "and mark a best across them); rerun the odd rows against the references of the others.")


def stage_code(collected: Collected) -> dict[str, dict[str, list[str]]]:
    """Per run (``<row> seed <s>``), the stages trained wholly or partly with other code than the run's commit
    (a job resumed across versions, or a stage loaded from a store filled by another version), with the
    commits in training order; ``unknown`` for a stage stored before stages recorded their code."""
    runs: dict[str, dict[str, list[str]]] = {}
    for run in collected.runs:
        text = run.tags.get(Tag.STAGE_CODE)
        if text is None:  # a run that trained nothing, or one made before the tag existed
            continue
        commit = run.tags.get(Tag.GIT_COMMIT, "")
        try:
            stages = json.loads(text)
        except ValueError:
            stages = {"(all)": [f"unreadable {Tag.STAGE_CODE} tag"]}
        other = {name: versions or ["unknown"] for name, versions in stages.items() if versions != [commit]}
        if other:
            runs[_run_label(run)] = other
    return runs


def provenance(collected: Collected) -> dict[str, Any]:
    """Everything a reader needs to trust (or reproduce) the numbers, as JSON-able data."""
    shared: dict[str, list[str]] = defaultdict(list)
    for run in collected.runs:
        for tag in SHARED_TAGS:
            value = run.tags.get(tag)
            if value is not None and value not in shared[tag]:
                shared[tag].append(value)
    versions = versions_of(collected.runs[0].tags)
    runs: dict[str, dict[str, str]] = defaultdict(dict)
    for run in collected.runs:
        runs[run.tags[Tag.VARIANT]][run.tags.get(Tag.SEED, "0")] = run.run_id
    budget = collected.budget
    return {
        "suite": collected.suite.name, "suite_version": collected.suite.version, "budget": budget.name,
        "budget_status": budget.status, "ranks": budget.ranks, "tracking_uri": collected.tracking_uri,
        "shared": {k: v for k, v in shared.items() if v}, "versions": versions, "runs": dict(runs),
        "ignored_runs": collected.ignored, "generation": generation_settings(collected),
        "stage_code": stage_code(collected), "divergent_references": divergent_references(collected),
    }


def provenance_markdown(prov: dict[str, Any]) -> str:
    lines = [
        f"- suite: {prov['suite']} v{prov['suite_version']}, budget {prov['budget']} ({prov['budget_status']})",
        f"- store: {prov['tracking_uri']}",
    ]
    for tag, values in prov["shared"].items():
        flag = "  **(differs between runs)**" if len(values) > 1 else ""
        lines.append(f"- {tag}: {', '.join(values)}{flag}")
    if prov["versions"]:
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in sorted(prov["versions"].items())))
    lines.append("- runs (row: seed → MLflow run id):")
    for variant, seeds in prov["runs"].items():
        lines.append(f"  - {variant}: " + ", ".join(f"{s} → {r}" for s, r in sorted(seeds.items())))
    if prov.get("generation"):
        lines.append("- generation settings (row: model settings that define its samples):")
        for variant, settings in prov["generation"].items():
            lines.append(f"  - {variant}: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    if prov.get("stage_code"):
        lines.append("- stages trained with other code than their run's commit (run: stage ← commits, oldest first):")
        for run, stages in prov["stage_code"].items():
            lines.append(f"  - {run}: " + "; ".join(f"{', '.join(names)} ← {', '.join(commits)}"
                                                    for commits, names in _by_commits(stages).items()))
    for reason, count in prov["ignored_runs"].items():
        lines.append(f"- ignored {count} run(s): {reason}")
    return "\n".join(lines) + "\n"


def _by_commits(stages: dict[str, list[str]]) -> dict[tuple[str, ...], list[str]]:
    """The stages grouped by their commit lists (first appearance order), so equal histories print once."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, commits in stages.items():
        groups.setdefault(tuple(commits), []).append(name)
    return groups
