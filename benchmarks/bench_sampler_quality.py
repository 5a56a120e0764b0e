"""Sample quality against score evaluations: a trained SBM/MLD model under PC-100 and the few-step samplers.

Loads every stage of a trained model — never trains: a stage found neither in the artifact store nor in the
state folder is an error naming it — and reports on the same test tuples and classifier, per sampler setting:
leave-one-out coherence (each modality from all others), coherence given one modality (each modality from
each single other one), the unconditional all-agree share (all image modalities of a joint sample labelled
alike), the conditional FID of the leave-one-out samples against the test images (the offline extractor
``mmbench-clf``: the evaluation classifier's penultimate layer; mean over modalities), generation seconds per
sample (every query of the table) and score evaluations per sample. Settings: PC, N = 100 (the paper's, 200
evaluations) and each few-step sampler at 100, 50, 20 and 10 evaluations. Prints a markdown table.

Where the stages come from (one of):

- ``--state DIR/<model>-<hash>``: one model's folder of ``benchmarks/bench_coherence.py --state`` (its
  ``trace.json`` names the model and its fields; checkpoints of the stages it trained, the last one possibly
  stopped at its target), with ``--artifacts`` for the stages it loaded from a store;
- ``--suite S --budget B --models a,b``: the models exactly as ``mmbench run --suite S --budget B`` builds
  their seed-0 jobs (the budget's config: score net, sampler), every stage from the run's artifact store
  (``--artifacts``, default ``~/.mmbench/artifacts``);
- ``--artifacts DIR --models a,b`` with bench_coherence's scale options (``--width --batch-size --steps
  --max-steps --sampler-steps --score-width``): every stage must have a reuse key stored there (SBM-VAE/-RAE).

    python benchmarks/bench_sampler_quality.py --dataset polymnist10 --models sbm-vae,sbm-rae \\
        --artifacts ~/.mmbench/artifacts --width 0.25 --batch-size 64 --steps 3000 --max-steps 3000 \\
        --score-width 64 --n 500 --n-uncond 500 --threads 1

``--rows FILE``: keeps every finished row (one checksummed JSON line per setting, keyed by the model's
stages, the test tuples, the classifier, the sizes and the setting); a rerun with the same file reports those
rows from it and measures only the rest — the table of a slow machine can span several stops. A line that
fails its check (a kill mid-write) is named and measured again.

``--synthetic``: a demonstration on the pattern data (``make_patterns``, 3 modalities, the tests' splits)
with small models of fixed settings (``SYNTHETIC``) and a classifier trained on the fly; in this mode only,
stages missing from ``--artifacts`` are first trained there by the real trainer (and said so), then loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classifiers.store import load_classifier
from latentdiff.sampling import nfe_of
from mmbench import paths, registry
from mmbench.contract import MultimodalModel
from mmbench.data.dataset import MultimodalDataset
from mmbench.hashing import config_hash
from mmbench.metrics.coherence import agreement_shares
from mmbench.metrics.extractors import CLASSIFIER, build_extractor, extract_features, identify
from mmbench.metrics.fid import fid_from_features
from mmbench.metrics.samples import to_uint8
from mmbench.seeding import seeded
from mmbench.suites.spec import Scale
from mmbench.training import checkpoint as ckpt
from mmbench.training.artifacts import ArtifactStore
from mmbench.training.device import resolve_device
from mmbench.training.trainer import TrainerOptions, checkpoint_path, restore_weights

FEWSTEP = ("dpmpp2m", "unipc", "dpmpp2m-sde")
EVALUATIONS = (100, 50, 20, 10)


@dataclass(frozen=True)
class Setting:
    """A sampler, its step count (``steps`` as the model's ``sampler_steps``), re-imposition mode
    (``reimpose``; "" = the model's own) and, for PC, Langevin corrector steps per predictor step
    (``correctors``; 0 = the model's own)."""

    sampler: str
    steps: int
    reimpose: str = ""
    correctors: int = 0

    @property
    def label(self) -> str:
        return (f"{self.sampler} N={self.steps}" + (f" x{self.correctors} corrector" if self.correctors else "")
                + (f" ({self.reimpose})" if self.reimpose else ""))

    @property
    def identity(self) -> dict:
        """The setting as the row journal keys it (``correctors`` only when set, so rows journaled before the
        field existed keep their keys)."""
        out = dataclasses.asdict(self)
        if not self.correctors:
            out.pop("correctors")
        return out


@dataclass
class Row:
    setting: Setting
    nfe: int
    loo: float
    given_one: float
    all_agree: float
    fid: float
    seconds_per_sample: float
    # per test tuple, the share of its samples the classifier reads as its label (journals written before these
    # fields have none: their rows print without standard errors)
    loo_per_tuple: list[float] | None = None
    given_one_per_tuple: list[float] | None = None

    @property
    def loo_se(self) -> float | None:
        return standard_error(self.loo_per_tuple)

    @property
    def given_one_se(self) -> float | None:
        return standard_error(self.given_one_per_tuple)


def standard_error(per_tuple: Sequence[float] | None) -> float | None:
    """Standard error of a mean over test tuples (the tuples are the independent units: a tuple's modalities
    share its label, so its samples are not independent of each other)."""
    if per_tuple is None or len(per_tuple) < 2:
        return None
    return float(np.std(per_tuple, ddof=1) / np.sqrt(len(per_tuple)))


def paired_difference(row: Row, reference: Row, field: str) -> tuple[float, float | None]:
    """``row`` minus ``reference`` in ``field`` ("loo" or "given_one") and the standard error of that
    difference, paired by test tuple (both rows score the same tuples)."""
    delta = getattr(row, field) - getattr(reference, field)
    a, b = getattr(row, f"{field}_per_tuple"), getattr(reference, f"{field}_per_tuple")
    if a is None or b is None or len(a) != len(b):
        return delta, None
    return delta, standard_error(np.asarray(a) - np.asarray(b))


class RowJournal:
    """Finished rows, one JSON line each with its key and checksum, appended as each row finishes."""

    def __init__(self, path: Path | None, context: dict, say=print):
        self.path, self.context, self.rows = path, context, {}
        if path is None or not path.exists():
            return
        for number, line in enumerate(path.read_text().splitlines(), 1):
            entry = _checked(line)
            if entry is None:
                say(f"  {path}:{number}: a damaged row (checksum or JSON); measuring it again")
                continue
            self.rows[entry["key"]] = entry["row"]

    def key(self, setting: Setting) -> str:
        return config_hash({**self.context, "setting": setting.identity})

    def get(self, setting: Setting) -> Row | None:
        stored = self.rows.get(self.key(setting))
        return None if stored is None else Row(setting=setting, **{k: v for k, v in stored.items() if k != "setting"})

    def add(self, row: Row) -> None:
        if self.path is None:
            return
        body = {"key": self.key(row.setting), "row": dataclasses.asdict(row)}
        text = json.dumps(body, sort_keys=True)
        with open(self.path, "a") as out:
            out.write(json.dumps({**body, "sha256": hashlib.sha256(text.encode()).hexdigest()}, sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())


def _checked(line: str) -> dict | None:
    """The entry of a journal line whose checksum holds, else None."""
    try:
        entry = json.loads(line)
        body = {"key": entry["key"], "row": entry["row"]}
    except (ValueError, KeyError, TypeError):
        return None
    ok = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest() == entry.get("sha256")
    return body if ok else None


class StageMissingError(RuntimeError):
    """A stage of the model is not stored: this benchmark evaluates trained models only."""


# --- loading ---------------------------------------------------------------------------------------------
def load_stages(model: MultimodalModel, store: ArtifactStore | None, workdir: Path | None = None,
                run_hash: str = "", finished_only: bool = False) -> list[str]:
    """Load every stage's weights from a checkpoint in ``workdir`` or the store; one line each. A checkpoint
    gives the weights the trainer samples from (its EMA average where the stage keeps one); ``finished_only``
    refuses a checkpoint of a stage still training (a run's job), which a ``--state`` folder may hold."""
    lines = []
    for stage in model.stages():
        path = checkpoint_path(TrainerOptions(workdir=workdir, config_hash=run_hash), stage) if workdir else None
        state = ckpt.load(path, run_hash) if path is not None and path.exists() else None
        if state is not None and (state.done or not finished_only):
            restore_weights(stage.module, state)
            lines.append(f"{stage.name}: checkpoint at step {state.step}{'' if state.done else ' (stopped early)'}")
        elif stage.reuse_key and store is not None and store.has(stage.reuse_key):
            state_dict, _ = store.load(stage.reuse_key)
            stage.module.load_state_dict(state_dict)
            lines.append(f"{stage.name}: artifact {stage.reuse_key[:12]}")
        else:
            raise _missing(stage, store, workdir, state)
        if stage.finalize is not None:
            stage.finalize()
    return lines


def _missing(stage: Any, store: ArtifactStore | None, workdir: Path | None, state: Any) -> StageMissingError:
    where = [f"artifact store {store.root}" if store else "no artifact store"]
    if workdir:
        where.append(f"checkpoints in {workdir}" + (f" (still training: step {state.step})" if state else ""))
    return StageMissingError(
        f"stage {stage.name!r} is not trained ({'; '.join(where)}; reuse key {stage.reuse_key}): this benchmark "
        "never trains. Train the model first (benchmarks/bench_coherence.py with --artifacts/--state, or "
        "mmbench run) with the same scale options, or pass that run's --state folder."
    )


def model_from_state(folder: Path, modalities: Sequence[str], store: ArtifactStore | None) -> tuple[MultimodalModel, list[str]]:
    """The model a bench_coherence ``--state`` folder trained, with its stages loaded."""
    trace = folder / "trace.json"
    if not trace.is_file():
        raise SystemExit(f"{folder} has no trace.json: pass one model's folder of bench_coherence.py --state")
    settings = json.loads(trace.read_text())["settings"]
    model = registry.build(settings["model"], list(modalities), settings["overrides"])
    return model, load_stages(model, store, folder, config_hash(settings))


def suite_jobs(args: argparse.Namespace) -> list[Any]:
    """The jobs of ``mmbench run --suite S --budget B --models M`` (seed 0), as that run plans them."""
    from mmbench.runner.data import classifier_plan, data_ref
    from mmbench.runner.plan import modalities_of, plan_jobs
    from mmbench.suites import get_suite

    suite = get_suite(args.suite)
    budget = suite.budget(args.budget)
    variant = suite.select(None)[0]
    dataset_hash = data_ref(suite.dataset, budget, modalities_of(suite, variant)).dataset_hash
    return plan_jobs(suite, budget, classifier_plan(suite, budget, dataset_hash), args.models.split(","), seeds=[0])


def build_job_model(job: Any, sets: Mapping[str, Any] | None = None) -> MultimodalModel:
    """The untrained model a run's job builds (its budget's config, the lean net and sampler included), with
    ``sets`` (Config fields) over the job's overrides."""
    from mmbench.runner.plan import job_specs

    return registry.build(job.model, list(job.data.modalities), {**dict(job.overrides), **(sets or {})}, job_specs(job))


def model_of_job(job: Any, store: ArtifactStore) -> tuple[MultimodalModel, list[str]]:
    """The model a run's job builds, its stages from the job's finished checkpoints (a stage without a reuse
    key, e.g. MLD's score net) or the run's artifact store."""
    model = build_job_model(job)
    stages = load_stages(model, store, Path(job.workdir), job.job_id, finished_only=True)
    return model, [f"job {job.job_id} ({job.title})", *stages]


def model_from_store(name: str, scale_overrides: dict, modalities: Sequence[str], store: ArtifactStore) -> tuple[MultimodalModel, list[str]]:
    model = registry.build(name, list(modalities), scale_overrides)
    return model, load_stages(model, store)


def with_sampler(model: MultimodalModel, setting: Setting) -> MultimodalModel:
    """The same trained model sampling with ``setting`` (config fields replaced in place)."""
    fields = {f.name for f in dataclasses.fields(model.config)}
    if not {"sampler", "sampler_steps"} <= fields:
        raise ValueError(f"{type(model).__name__} has no sampler settings")
    if setting.reimpose and "reimpose" not in fields:
        raise ValueError(f"{type(model).__name__} has a fixed re-imposition mode; leave --reimpose empty")
    if setting.correctors and (setting.sampler != "pc" or "corrector_steps" not in fields):
        raise ValueError(f"corrector steps apply to the pc sampler of a model with corrector_steps, not "
                         f"{setting.sampler} on {type(model).__name__}")
    mode = {"reimpose": setting.reimpose} if setting.reimpose else {}
    if setting.correctors:
        mode["corrector_steps"] = setting.correctors
    model.config = dataclasses.replace(model.config, sampler=setting.sampler, sampler_steps=setting.steps, **mode)
    return model


# --- measuring -------------------------------------------------------------------------------------------
def _features(extractor, images: np.ndarray, device: torch.device) -> np.ndarray:
    return extract_features(extractor, images, 256, device)


def evaluate(model: MultimodalModel, test: MultimodalDataset, classifier: torch.nn.Module, extractor,
             real_features: dict[str, np.ndarray], n_uncond: int, batch_size: int, seed: int = 1) -> dict[str, float]:
    """The table's numbers for the model's current sampler (seconds: generation only, decoding included)."""
    names = list(model.modalities)
    everything = frozenset(names)
    queries = [(everything - {m}, frozenset({m})) for m in names]
    queries += [(frozenset({g}), everything - {g}) for g in names]
    loo_right: list[np.ndarray] = []  # per batch: right answers per tuple
    given_right: list[np.ndarray] = []
    seconds, generated_samples = 0.0, 0
    loo_images: dict[str, list[np.ndarray]] = {m: [] for m in names}
    nfe = []
    with seeded(seed, model.device), torch.no_grad():
        for batch, labels in test.iter_batches(batch_size, names):
            start = time.perf_counter()
            outputs = model.sample_conditional_many(batch, queries)
            seconds += time.perf_counter() - start
            nfe.append(model.last_nfe)
            generated_samples += len(labels) * len(queries)
            loo_right.append(np.zeros(len(labels)))
            given_right.append(np.zeros(len(labels)))
            for (given, targets), out in zip(queries, outputs, strict=True):
                for m in targets:
                    right = (classifier(out[m]).argmax(1).cpu() == labels).numpy()
                    if len(given) == len(names) - 1:
                        loo_right[-1] += right
                        loo_images[m].append(to_uint8(out[m]))
                    else:
                        given_right[-1] += right
    with seeded(seed + 1, model.device), torch.no_grad():  # its own stream: the same start in every mode
        start = time.perf_counter()
        joint = model.sample_unconditional(n_uncond)
        seconds += time.perf_counter() - start
        generated_samples += n_uncond
        predictions = np.stack([classifier(joint[m]).argmax(1).cpu().numpy() for m in names], axis=1)
    fids = [fid_from_features(real_features[m], _features(extractor, np.concatenate(loo_images[m]), model.device)) for m in names]
    loo = np.concatenate(loo_right) / len(names)
    given_one = np.concatenate(given_right) / (len(names) * (len(names) - 1))
    return {"nfe": max(nfe + [model.last_nfe]), "loo": float(loo.mean()), "given_one": float(given_one.mean()),
            "all_agree": agreement_shares(predictions)[len(names)], "fid": float(np.mean(fids)),
            "seconds_per_sample": seconds / generated_samples, "loo_per_tuple": loo.tolist(),
            "given_one_per_tuple": given_one.tolist()}


def measure(model: MultimodalModel, test: MultimodalDataset, classifier_path: str | Path, settings: Sequence[Setting],
            n_uncond: int, batch_size: int, say=print, journal: RowJournal | None = None) -> list[Row]:
    """Every setting on the same model, tuples, classifier and seed (on the model's device); rows found in
    ``journal`` are taken from it, and each measured row is added to it."""
    classifier, record = load_classifier(classifier_path)
    classifier.to(model.device)
    extractor = build_extractor(identify(CLASSIFIER, record.path, None), model.device)
    real = {m: _features(extractor, np.asarray(test.images[m]), model.device) for m in model.modalities}
    rows, own = [], model.config
    model.eval()
    for setting in settings:
        earlier = journal.get(setting) if journal else None
        if earlier is not None:
            rows.append(earlier)
            say(f"  {setting.label}: {format_row(earlier)} (from {journal.path})")
            continue
        model.config = own  # every setting starts from the model's own configuration
        values = evaluate(with_sampler(model, setting), test, classifier, extractor, real, n_uncond, batch_size)
        expected = nfe_of(setting.sampler, setting.steps, getattr(model.config, "corrector_steps", 1))
        if values["nfe"] != expected:
            raise AssertionError(f"{setting.label}: {values['nfe']} score evaluations, nfe_of says {expected}")
        rows.append(Row(setting, **values))
        if journal:
            journal.add(rows[-1])
        say(f"  {setting.label}: {format_row(rows[-1])}")
    model.config = own
    return rows


def settings_for(evaluations: Sequence[int], samplers: Sequence[str], modes: Sequence[str] = ("",),
                 correctors: Sequence[int] = (0,)) -> list[Setting]:
    """PC-100 and each few-step sampler at each evaluation count (the steps that give that count), each in
    every re-imposition mode of ``modes`` ("" = the model's); PC also with each corrector count of
    ``correctors`` (0 = the model's own, one Langevin step per predictor step)."""
    out = [Setting("pc", 100, mode) for mode in modes]
    for sampler in filter(None, samplers):
        for k in correctors if sampler == "pc" else (0,):
            per_step = nfe_of(sampler, 1, k or 1)
            out += [Setting(sampler, n // per_step, mode, k) for mode in modes for n in evaluations]
    return list(dict.fromkeys(out))


def _with_se(value: float, se: float | None) -> str:
    return f"{value:.3f}" if se is None else f"{value:.3f} ± {se:.3f}"


def _sampler_cell(setting: Setting) -> str:
    return setting.sampler + (f" ({setting.correctors} correctors)" if setting.correctors else "")


def format_row(row: Row) -> str:
    return (f"| {_sampler_cell(row.setting)} | {row.setting.reimpose or 'model'} | {row.setting.steps} | {row.nfe} | "
            f"{_with_se(row.loo, row.loo_se)} | {_with_se(row.given_one, row.given_one_se)} | "
            f"{row.all_agree:.3f} | {row.fid:.2f} | {row.seconds_per_sample * 1000:.1f} |")


HEADER = ("| sampler | re-imposition | steps | evaluations / sample | coherence loo (± SE) | coherence given one (± SE) | "
          "uncond. all agree | cond. FID (mmbench-clf) | ms / sample |\n|---|---|---|---|---|---|---|---|---|")

# issue 12's bar for "equal quality": coherence within one point and conditional FID within 5 % of PC-100
COHERENCE_TOLERANCE = 0.01
FID_TOLERANCE = 0.05


def meets_bar(row: Row, reference: Row) -> bool:
    """Leave-one-out and given-one coherence at most one point below ``reference`` and FID at most 5 % above
    (point estimates; the comparison table prints the paired standard errors beside them)."""
    return (row.loo >= reference.loo - COHERENCE_TOLERANCE and row.given_one >= reference.given_one - COHERENCE_TOLERANCE
            and row.fid <= reference.fid * (1 + FID_TOLERANCE))


def comparison(rows: Sequence[Row], reference: Row) -> list[str]:
    """Each row against ``reference`` (PC-100): paired differences of coherence with their standard errors,
    the FID ratio, the evaluations saved, and whether the row meets the bar; the cheapest row that does, last."""
    lines = [f"Against {reference.setting.label} (paired by test tuple):", "",
             "| sampler | re-imposition | steps | evaluations | Δ loo ± SE | Δ given one ± SE | FID ratio | "
             "fewer evaluations | meets the bar |", "|---|---|---|---|---|---|---|---|---|"]
    passing = []
    for row in rows:
        if row is reference:
            continue
        (dl, sl), (dg, sg) = paired_difference(row, reference, "loo"), paired_difference(row, reference, "given_one")
        ok = meets_bar(row, reference)
        passing += [row] if ok else []
        lines.append(f"| {_sampler_cell(row.setting)} | {row.setting.reimpose or 'model'} | {row.setting.steps} | {row.nfe} | "
                     f"{_signed(dl, sl)} | {_signed(dg, sg)} | {row.fid / reference.fid:.3f} | "
                     f"{reference.nfe / row.nfe:.1f}× | {'yes' if ok else 'no'} |")
    cheapest = min(passing, key=lambda r: (r.nfe, r.seconds_per_sample), default=None)
    lines += ["", f"cheapest setting that meets the bar: {cheapest.setting.label}, {cheapest.nfe} evaluations"
              if cheapest else "no setting meets the bar"]
    return lines


def _signed(value: float, se: float | None) -> str:
    return f"{value:+.3f}" if se is None else f"{value:+.3f} ± {se:.3f}"


# --- the synthetic demonstration ------------------------------------------------------------------------
SYNTHETIC_AE = {"width": 0.125, "latent_dim": 16, "ae_batch_size": 32, "ae_lr": 3e-3}
SYNTHETIC = {  # small SBMs that learn the pattern data (tests/test_sbm.py's, with a wider, longer-trained UNet)
    "sbm-rae": {**SYNTHETIC_AE, "ae_steps": 250, "dim": 16, "dim_mults": [1, 2], "attn_heads": 2,
                "attn_dim_head": 8, "score_steps": 1000, "score_batch_size": 64, "score_lr": 1e-3},
    "sbm-vae": {**SYNTHETIC_AE, "ae_steps": 400, "dim": 16, "dim_mults": [1, 2], "attn_heads": 2,
                "attn_dim_head": 8, "score_steps": 1000, "score_batch_size": 64, "score_lr": 1e-3},
}


def synthetic_jobs(names: Sequence[str], store: ArtifactStore, n_test: int, say=print):
    """(test data, classifier path, model jobs) for the pattern data; trains what the store lacks."""
    import tempfile

    from classifiers.store import save_classifier
    from classifiers.train import train_classifier
    from mmbench.data.synthetic import make_patterns
    from mmbench.training.trainer import train_model

    train, test = make_patterns(3, n=2000, seed=0), make_patterns(3, n=500, seed=1).subset(n_test)
    torch.manual_seed(0)
    classifier = train_classifier("pmclf", train, None, epochs=1, batch_size=128, lr=1e-3, seed=0, device="cpu",
                                  progress=False)
    record = save_classifier(classifier, "patterns3-eval", {"seed": 0}, Path(tempfile.mkdtemp()))

    def job(name: str):
        overrides = {**SYNTHETIC[name], "data_id": train.data_hash}
        model = registry.build(name, train.modalities, overrides)
        if not all(s.reuse_key and store.has(s.reuse_key) for s in model.stages()):
            say(f"  training {name} into {store.root} (synthetic demonstration)")
            with tempfile.TemporaryDirectory() as tmp:
                train_model(model, train, None, TrainerOptions(workdir=Path(tmp), config_hash=name, quiet=True,
                                                               artifacts=store, model_name=name))
        return model_from_store(name, overrides, train.modalities, store)

    return test, record, [lambda name=name: job(name) for name in names]


def stored_jobs(args: argparse.Namespace, store: ArtifactStore | None):
    """(test data, classifier record, model jobs) for a prepared dataset and models trained elsewhere."""
    from mmbench.data.store import load_dataset

    train = load_dataset(args.dataset, "train", verify=False)
    test = load_dataset(args.dataset, "test", verify=False).subset(args.n)
    _, record = load_classifier(args.classifier or f"{args.dataset}-eval")
    if args.state:
        return test, record, [lambda: model_from_state(Path(args.state).expanduser(), train.modalities, store)]
    if args.suite:
        return test, record, [lambda job=job: model_of_job(job, store) for job in suite_jobs(args)]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_coherence import _overrides, runner_data_id

    scale = Scale(width=args.width, steps=args.steps, batch_size=args.batch_size,
                  sampler_steps=args.sampler_steps, score_width=args.score_width)
    data_id = runner_data_id(args.dataset, train.modalities)
    return test, record, [lambda name=name: model_from_store(name, _overrides(name, scale, args.max_steps, data_id),
                                                             train.modalities, store) for name in args.models.split(",")]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="polymnist10")
    parser.add_argument("--classifier", default=None, help="evaluation classifier name or path [DATASET-eval]")
    parser.add_argument("--models", default="sbm-vae", help="comma-separated registered names (with --artifacts)")
    parser.add_argument("--state", default=None, help="one model's bench_coherence --state folder")
    parser.add_argument("--artifacts", default=None, help="artifact store holding the stages")
    parser.add_argument("--suite", default=None, help="with --budget: the models as `mmbench run --suite S --budget B` "
                        "builds them (config, lean net), stages from --artifacts [~/.mmbench/artifacts]")
    parser.add_argument("--budget", default=None, help="the budget of --suite")
    for flag, kind, default in (("--width", float, 0.25), ("--batch-size", int, 64), ("--steps", int, 2000),
                                ("--max-steps", int, 6000), ("--sampler-steps", int, 100), ("--score-width", int, 64)):
        parser.add_argument(flag, type=kind, default=default, help="scale, as bench_coherence.py")
    parser.add_argument("--n", type=int, default=500, help="test tuples")
    parser.add_argument("--n-uncond", type=int, default=500, help="unconditional samples")
    parser.add_argument("--eval-batch", type=int, default=100, help="test tuples per sampler pass")
    parser.add_argument("--evaluations", default=",".join(map(str, EVALUATIONS)))
    parser.add_argument("--samplers", default=",".join(FEWSTEP))
    parser.add_argument("--reimpose", default="", help="comma-separated re-imposition modes of the few-step rows "
                        "('' = the model's; SBM: fresh, fixed, sbmae, clean)")
    parser.add_argument("--correctors", default="0", help="comma-separated Langevin corrector steps per PC "
                        "predictor step for the pc rows (0 = the model's own, one)")
    parser.add_argument("--rows", default=None, help="journal of finished rows: a rerun measures only the rest")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--synthetic", action="store_true", help="the pattern-data demonstration (see above)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.suite and not args.budget:
        parser.error("--suite needs --budget (e.g. --suite polymnist10 --budget quick)")
    if args.suite and not args.artifacts:
        args.artifacts = str(paths.artifacts_dir())
    if args.suite:
        from mmbench.suites import get_suite

        args.dataset = get_suite(args.suite).dataset.name
    if not args.state and not args.artifacts:
        parser.error("pass --artifacts (with --models and the scale), --suite with --budget, or --state")
    store = ArtifactStore(Path(args.artifacts).expanduser()) if args.artifacts else None
    settings = settings_for([int(k) for k in args.evaluations.split(",")], args.samplers.split(","),
                            args.reimpose.split(","), [int(k) for k in args.correctors.split(",")])
    if args.synthetic:
        test, record, jobs = synthetic_jobs(args.models.split(","), store, args.n)
        args.dataset = "patterns3 (synthetic)"
    else:
        test, record, jobs = stored_jobs(args, store)
    print(f"# {args.dataset}: {len(test)} test tuples, {args.n_uncond} unconditional samples, classifier "
          f"{record.name} {record.sha256[:8]}, {torch.get_num_threads()} threads")
    for job in jobs:
        model, lines = job()
        model.to(resolve_device(args.device))
        print(f"\n## {type(model).__name__} {getattr(model.config, 'family', '')}: " + "; ".join(lines), flush=True)
        say = lambda s: print(s, flush=True)  # noqa: E731
        context = {"dataset": args.dataset, "tuples": [len(test), test.data_hash], "n_uncond": args.n_uncond,
                   "batch": args.eval_batch, "classifier": record.sha256, "stages": lines, "device": str(model.device)}
        journal = RowJournal(Path(args.rows).expanduser() if args.rows else None, context, say)
        rows = measure(model, test, record.path, settings, args.n_uncond, args.eval_batch, say=say, journal=journal)
        print("\n" + HEADER)
        for row in rows:
            print(format_row(row))
        references = [r for r in rows if (r.setting.sampler, r.setting.steps) == ("pc", 100)]
        reference = next((r for r in references if not r.setting.reimpose), references[0] if references else None)
        if reference is not None:
            print("\n" + "\n".join(comparison(rows, reference)))


if __name__ == "__main__":
    main()
