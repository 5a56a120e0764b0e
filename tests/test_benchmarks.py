"""The resumable coherence benchmark's bookkeeping (``benchmarks/bench_coherence.py``), without training.

A rerun resumes where the trainer's checkpoints are; the trace must forget what happened after them
(points and training-clock records) and restore the training seconds at that step.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from benchmark_modules import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_coherence")


def _trace(bench):
    trace = bench.Trace("m", "score", target=0.5)
    trace.clock = [("ae/m0", 50, 10.0), ("ae/m0", 100, 20.0), ("score", 50, 30.0), ("score", 100, 41.0),
                   ("score", 150, 52.0)]
    trace.points = [(100, 41.0, 0.2), (150, 52.0, 0.3)]
    return trace


def test_rewind_to_a_checkpoint_inside_the_last_stage(bench):
    trace = _trace(bench)
    seconds = trace.rewind([("ae/m0", 100, True), ("score", 100, False)])
    assert seconds == 41.0
    assert trace.points == [(100, 41.0, 0.2)]
    assert trace.clock[-1] == ("score", 100, 41.0)


def test_rewind_to_an_earlier_stage_drops_every_point(bench):
    trace = _trace(bench)
    seconds = trace.rewind([("ae/m0", 50, False), ("score", 0, False)])
    assert seconds == 10.0
    assert trace.points == [] and trace.clock == [("ae/m0", 50, 10.0)]


def test_rewind_when_everything_is_finished_keeps_everything(bench):
    trace = _trace(bench)
    assert trace.rewind([("ae/m0", 100, True), ("score", 150, True)]) == 52.0
    assert len(trace.points) == 2 and len(trace.clock) == 5


def test_trace_round_trips_through_its_file(bench, tmp_path):
    trace = _trace(bench)
    trace.settings = {"model": "m", "overrides": {"width": 0.25}}
    trace.save(tmp_path / "trace.json")
    again = bench.Trace.load(tmp_path / "trace.json")
    assert again == trace
    assert again.reached is None and again.best == (150, 0.3)


def test_set_items_parse_as_python_literals(bench):
    assert bench.parse_sets(["cross_targets=2", "beta = 0.5", "estimator='dreg'"]) == {
        "cross_targets": 2, "beta": 0.5, "estimator": "dreg"}
    for bad in ["cross_targets", "=2", "estimator=dreg"]:
        with pytest.raises(ValueError, match="--set"):
            bench.parse_sets([bad])


def test_set_items_reach_the_model_and_the_settings_hash(bench):
    from argparse import Namespace

    from mmbench.hashing import config_hash
    from mmbench.suites.spec import Scale

    scale = Scale(width=0.25, steps=100, batch_size=64, sampler_steps=10, score_width=64)
    args = Namespace(eval_every=50, eval_n=100, target=0.5)
    plain = bench._overrides("mmvae", scale, 300, "data")
    varied = bench._overrides("mmvae", scale, 300, "data", {"cross_targets": 2})
    assert varied == {**plain, "cross_targets": 2} and "cross_targets" not in plain
    hashes = {config_hash(bench.run_settings("mmvae", o, args, "data")) for o in (plain, varied)}
    assert len(hashes) == 2
    assert bench.run_settings("mmvae", plain, args, "data")["overrides"] == plain  # no --set: the old settings


def test_a_record_state_is_named_without_its_last_stage_step_cap(bench, tmp_path):
    """Two caps of a constant-rate last stage name one state folder (a larger --max-steps extends the record);
    a folder named by the whole settings, as before 2026-12-02, keeps its name."""
    from argparse import Namespace

    from mmbench import registry
    from mmbench.hashing import config_hash
    from mmbench.suites.spec import Scale

    scale = Scale(width=0.25, steps=100, batch_size=64, sampler_steps=10, score_width=64)
    args = Namespace(eval_every=50, eval_n=100, target=0.5)
    settings = {cap: bench.run_settings("mvtcae", bench._overrides("mvtcae", scale, cap, "data"), args, "data")
                for cap in (300, 600)}
    model = registry.build("mvtcae", ["m0", "m1"], settings[300]["overrides"])
    assert model.stages()[-1].hparams.lr_schedule == "constant"
    keys = {cap: bench.state_key("mvtcae", s, model, str(tmp_path)) for cap, s in settings.items()}
    assert keys[300] == keys[600] and "steps" not in keys[300]["overrides"]
    assert {k: v for k, v in settings[300]["overrides"].items() if k != "steps"} == keys[300]["overrides"]
    (tmp_path / f"mvtcae-{config_hash(settings[300], length=12)}").mkdir()  # a record started before
    assert bench.state_key("mvtcae", settings[300], model, str(tmp_path)) == settings[300]
    assert bench.state_key("mvtcae", settings[600], model, None) == keys[600]  # no --state: nothing to keep


def test_a_record_trains_its_last_stage_even_when_a_run_stored_it(bench, patterns3, tmp_path):
    """A run's store holds every stage of the model (a `quick` job trained it): the record loads the earlier
    stages but trains the measured one itself, and leaves the run's copy of it alone."""
    from mmbench import registry
    from mmbench.training.artifacts import ArtifactStore
    from mmbench.training.trainer import TrainerOptions, train_model

    data = patterns3[0]

    def train(store, workdir):
        model = registry.build("sbm-vae", data.modalities, {**_TINY_SBM, "data_id": "d"})
        options = TrainerOptions(workdir=workdir, config_hash="h", seed=0, quiet=True, model_name="sbm-vae",
                                 artifacts=store)
        return model, {r.name: r.reused for r in train_model(model, data, None, options)}

    root = tmp_path / "artifacts"
    model, reused = train(ArtifactStore(root), tmp_path / "run")  # the run stores every stage
    assert not any(reused.values())
    last = model.stages()[-1]
    stored = (root / f"{last.reuse_key}.pt").read_bytes()
    _, reused = train(bench.RecordStore(root, last.reuse_key), tmp_path / "record")
    assert reused == {**{name: True for name in reused if name != last.name}, last.name: False}
    assert (root / f"{last.reuse_key}.pt").read_bytes() == stored


# --- benchmarks/bench_sampler_quality.py: loads trained stages, never trains, prints its table -------------
@pytest.fixture(scope="module")
def quality():
    return load_benchmark("bench_sampler_quality")


_TINY_SBM = {"width": 0.125, "latent_dim": 16, "dim": 8, "dim_mults": [1], "attn_heads": 2, "attn_dim_head": 8,
             "ae_steps": 2, "score_steps": 2, "ae_batch_size": 16, "score_batch_size": 16}


def test_sampler_quality_smoke(quality, patterns3, patterns_classifier, tmp_path):
    import json

    import torch

    from classifiers.store import save_classifier
    from mmbench import registry
    from mmbench.hashing import config_hash
    from mmbench.training.artifacts import ArtifactStore
    from mmbench.training.trainer import TrainerOptions, train_model

    train, test = patterns3
    overrides = {**_TINY_SBM, "data_id": train.data_hash}
    empty = ArtifactStore(tmp_path / "empty")
    with pytest.raises(quality.StageMissingError, match="'ae/m0' is not trained"):
        quality.model_from_store("sbm-rae", overrides, train.modalities, empty)
    # a store filled by the real trainer: every stage loads
    store = ArtifactStore(tmp_path / "store")
    torch.manual_seed(0)
    trained = registry.build("sbm-rae", train.modalities, overrides)
    train_model(trained, train, None, TrainerOptions(workdir=tmp_path / "run", config_hash="x", quiet=True, artifacts=store))
    model, lines = quality.model_from_store("sbm-rae", overrides, train.modalities, store)
    assert [line.split(":")[0] for line in lines] == ["ae/m0", "ae/m1", "ae/m2", "score"]
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # a bench_coherence --state folder: checkpoints under the hash of its trace's settings
    settings = {"model": "sbm-vae", "overrides": overrides}
    folder = tmp_path / "state" / "sbm-vae-abc"
    train_model(registry.build("sbm-vae", train.modalities, overrides), train, None,
                TrainerOptions(workdir=folder, config_hash=config_hash(settings), quiet=True))
    (folder / "trace.json").write_text(json.dumps({"settings": settings}))
    state_model, state_lines = quality.model_from_state(folder, train.modalities, None)
    assert all("checkpoint at step 2" in line for line in state_lines) and state_model.config.family == "vae"

    record = save_classifier(patterns_classifier, "clf", {}, tmp_path / "classifiers")
    settings = [quality.Setting("pc", 3), quality.Setting("dpmpp2m", 4), quality.Setting("unipc", 4, "sbmae")]
    rows = quality.measure(model, test.subset(40), record.path, settings, n_uncond=20, batch_size=20, say=lambda s: None)
    assert [r.nfe for r in rows] == [6, 4, 4] and model.config.reimpose == "fresh"  # restored
    for row in rows:
        assert 0 <= row.loo <= 1 and 0 <= row.given_one <= 1 and 0 <= row.all_agree <= 1
        assert row.fid >= 0 and row.seconds_per_sample > 0
        assert quality.format_row(row).count("|") == quality.HEADER.splitlines()[0].count("|")
    assert [s.label for s in quality.settings_for([20, 10], ["dpmpp2m"], ["", "fixed"])] == [
        "pc N=100", "pc N=100 (fixed)", "dpmpp2m N=20", "dpmpp2m N=10", "dpmpp2m N=20 (fixed)", "dpmpp2m N=10 (fixed)"]
    assert [s.label for s in quality.settings_for([20], [""], ["sbmae"])] == ["pc N=100 (sbmae)"]


def test_sampler_quality_rows_resume(quality, patterns3, patterns_classifier, tmp_path, monkeypatch):
    """A journal of finished rows: a rerun measures only the missing and the damaged ones."""
    from classifiers.store import save_classifier
    from mmbench import registry

    train, test = patterns3
    model = registry.build("sbm-rae", train.modalities, {**_TINY_SBM, "data_id": train.data_hash})
    record = save_classifier(patterns_classifier, "clf", {}, tmp_path / "classifiers")
    settings = [quality.Setting("pc", 2), quality.Setting("dpmpp2m", 3), quality.Setting("unipc", 3)]
    path, context = tmp_path / "rows.jsonl", {"stages": ["a"], "tuples": 30}
    first = quality.measure(model, test.subset(30), record.path, settings, 10, 15, say=lambda s: None,
                            journal=quality.RowJournal(path, context))
    assert len(path.read_text().splitlines()) == 3
    measured = []
    real_evaluate = quality.evaluate

    def counting(model, *args, **kwargs):
        measured.append(model.config.sampler)
        return real_evaluate(model, *args, **kwargs)

    monkeypatch.setattr(quality, "evaluate", counting)
    again = quality.measure(model, test.subset(30), record.path, settings, 10, 15, say=lambda s: None,
                            journal=quality.RowJournal(path, context))
    assert measured == [] and again == first
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1].replace('"loo": ', '"loo": 1'), lines[2][:40]]) + "\n")
    said = []
    quality.measure(model, test.subset(30), record.path, settings, 10, 15, say=lambda s: None,
                    journal=quality.RowJournal(path, context, say=said.append))
    assert measured == ["dpmpp2m", "unipc"] and len(said) == 2 and all("damaged" in s for s in said)
    # another context (other stages) shares no row
    measured.clear()
    quality.measure(model, test.subset(30), record.path, settings[:1], 10, 15, say=lambda s: None,
                    journal=quality.RowJournal(path, {**context, "stages": ["b"]}))
    assert measured == ["pc"]


def test_sampler_quality_counts_the_corrector_steps_it_sets(quality, patterns3, patterns_classifier, tmp_path):
    """PC with k Langevin corrector steps per predictor step: N (1 + k) score evaluations, measured and checked
    against nfe_of (the check once ignored k and stopped every corrector row)."""
    from classifiers.store import save_classifier
    from mmbench import registry

    train, test = patterns3
    model = registry.build("sbm-rae", train.modalities, {**_TINY_SBM, "data_id": train.data_hash})
    record = save_classifier(patterns_classifier, "clf", {}, tmp_path / "classifiers")
    settings = [quality.Setting("pc", 2), quality.Setting("pc", 2, correctors=3)]
    rows = quality.measure(model, test.subset(10), record.path, settings, 5, 5, say=lambda s: None)
    assert [row.nfe for row in rows] == [4, 8]
    assert model.config.corrector_steps == 1  # measuring leaves the model's own setting


def test_sampler_quality_standard_errors_and_the_bar(quality):
    """Per-tuple scores give the standard error of each mean and of paired differences (by tuple); the bar is
    one coherence point and 5 % of FID below/above PC-100, and the cheapest passing row is named."""
    import numpy as np

    rng = np.random.default_rng(0)
    ref_loo = rng.integers(0, 11, 400) / 10
    shift = rng.choice([0.0, -0.1], 400, p=[0.9, 0.1])  # one tuple in ten loses one of its ten samples
    reference = quality.Row(quality.Setting("pc", 100), 200, float(ref_loo.mean()), 0.5, 0.1, 100.0, 0.1,
                            ref_loo.tolist(), [0.5] * 400)
    cheap = quality.Row(quality.Setting("dpmpp2m-sde", 20), 20, float((ref_loo + shift).mean()), 0.495, 0.1, 104.0,
                        0.01, (ref_loo + shift).tolist(), [0.495] * 400)
    worse = dataclasses.replace(cheap, setting=quality.Setting("dpmpp2m-sde", 10), nfe=10, fid=106.0)
    assert quality.standard_error(ref_loo) == pytest.approx(ref_loo.std(ddof=1) / 20)
    delta, se = quality.paired_difference(cheap, reference, "loo")
    assert delta == pytest.approx(shift.mean()) and se == pytest.approx(shift.std(ddof=1) / 20)
    assert se < quality.standard_error(ref_loo) / 3  # pairing removes the spread between tuples
    assert quality.meets_bar(cheap, reference) and not quality.meets_bar(worse, reference)
    assert not quality.meets_bar(dataclasses.replace(cheap, given_one=0.489), reference)
    lines = quality.comparison([reference, cheap, worse], reference)
    assert lines[-1] == "cheapest setting that meets the bar: dpmpp2m-sde N=20, 20 evaluations"
    assert "| yes |" in lines[4] and "| no |" in lines[5]
    legacy = dataclasses.replace(cheap, loo_per_tuple=None)  # a journal row written before per-tuple scores
    assert quality.paired_difference(legacy, reference, "loo")[1] is None and legacy.loo_se is None


def test_sampler_quality_loads_a_runs_models_as_its_jobs_build_them(quality, tmp_path, monkeypatch):
    """--suite/--budget: the model of a run's job (the budget's config), its stages from the run's store."""
    import argparse

    import torch

    from mmbench import registry
    from mmbench.data.synthetic import make_patterns
    from mmbench.runner.plan import job_specs
    from mmbench.training.artifacts import ArtifactStore
    from mmbench.training.trainer import TrainerOptions, train_model

    monkeypatch.setenv("MMBENCH_HOME", str(tmp_path / "home"))
    args = argparse.Namespace(suite="synthetic", budget="smoke", models="sbm-rae")
    (job,) = quality.suite_jobs(args)
    assert (job.model, job.seed, job.budget) == ("sbm-rae", 0, "smoke")
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(quality.StageMissingError, match="'ae/m0' is not trained"):
        quality.model_of_job(job, store)
    torch.manual_seed(0)
    trained = registry.build(job.model, list(job.data.modalities), dict(job.overrides), job_specs(job))
    train = make_patterns(3, n=64, seed=0)
    train_model(trained, train, None, TrainerOptions(workdir=tmp_path / "run", config_hash="x", quiet=True,
                                                     artifacts=store))
    model, lines = quality.model_of_job(job, store)
    assert lines[0].startswith(f"job {job.job_id}") and [line.split(":")[0] for line in lines[1:]] == [
        "ae/m0", "ae/m1", "ae/m2", "score"]
    assert model.config == trained.config and model.config.score_steps == job.config["score_steps"]
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    varied = quality.build_job_model(job, {"score_steps": 7})  # bench_energy's --set: the job's config, then the set
    assert varied.config == dataclasses.replace(trained.config, score_steps=7)


def test_sampler_quality_loads_an_unshared_stage_from_its_jobs_finished_checkpoint(quality, tmp_path, monkeypatch):
    """MLD's score net has no reuse key, so it lives only in its job's checkpoints: the benchmark loads it from
    there as the run samples it (the EMA average, not the raw weights), and refuses a stage still training."""
    import argparse
    from pathlib import Path

    import torch

    from mmbench import registry
    from mmbench.data.synthetic import make_patterns
    from mmbench.runner.plan import job_specs
    from mmbench.training import checkpoint as ckpt
    from mmbench.training.artifacts import ArtifactStore
    from mmbench.training.trainer import TrainerOptions, train_model

    monkeypatch.setenv("MMBENCH_HOME", str(tmp_path / "home"))
    (job,) = quality.suite_jobs(argparse.Namespace(suite="synthetic", budget="smoke", models="mld"))
    overrides = {**dict(job.overrides), "score_steps": 4, "score_ema_decay": 0.5}
    job = dataclasses.replace(job, overrides=tuple(overrides.items()))
    store = ArtifactStore(tmp_path / "store")
    torch.manual_seed(0)
    trained = registry.build(job.model, list(job.data.modalities), dict(job.overrides), job_specs(job))
    assert next(s for s in trained.stages() if s.name == "score").reuse_key is None
    train_model(trained, make_patterns(3, n=64, seed=0), None,
                TrainerOptions(workdir=Path(job.workdir), config_hash=job.job_id, quiet=True, artifacts=store))
    model, lines = quality.model_of_job(job, store)
    assert lines[-1] == "score: checkpoint at step 4"
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    path = Path(job.workdir) / "checkpoints" / "score.pt"
    state = ckpt.load(path, job.job_id)
    ckpt.save(path, dataclasses.replace(state, done=False), job.job_id, {})
    with pytest.raises(quality.StageMissingError, match=r"'score' is not trained .*still training: step 4"):
        quality.model_of_job(job, store)


def test_sampler_quality_corrector_counts_for_pc_rows(quality, patterns3):
    """--correctors: PC rows with K Langevin steps per predictor step at each evaluation count (N = count /
    (1 + K)); the journal key of a row without them is the one it had before the field existed."""
    from mmbench import registry
    from mmbench.hashing import config_hash

    settings = quality.settings_for([20, 60], ["pc", "dpmpp2m"], [""], [0, 2])
    assert [(s.sampler, s.steps, s.correctors) for s in settings] == [
        ("pc", 100, 0), ("pc", 10, 0), ("pc", 30, 0), ("pc", 6, 2), ("pc", 20, 2), ("dpmpp2m", 20, 0),
        ("dpmpp2m", 60, 0)]
    assert settings[3].label == "pc N=6 x2 corrector"
    journal = quality.RowJournal(None, {"stages": ["a"]})
    assert journal.key(quality.Setting("pc", 10)) == config_hash(
        {"stages": ["a"], "setting": {"sampler": "pc", "steps": 10, "reimpose": ""}})
    assert journal.key(quality.Setting("pc", 10, "", 2)) != journal.key(quality.Setting("pc", 10))
    train, _ = patterns3
    model = registry.build("sbm-rae", train.modalities, {**_TINY_SBM, "data_id": train.data_hash})
    quality.with_sampler(model, quality.Setting("pc", 6, "", 2))
    assert (model.config.sampler_steps, model.config.corrector_steps) == (6, 2)
    with pytest.raises(ValueError, match="corrector steps apply to the pc sampler"):
        quality.with_sampler(model, quality.Setting("dpmpp2m", 6, "", 2))


# --- benchmarks/bench_twin_models.py: the overrides a measured model gets ---------------------------------
def test_twin_bench_overrides_take_sets_over_the_scale_and_name_the_data_for_reuse():
    twin = load_benchmark("bench_twin_models")
    from mmbench.scaling import Scale

    data = twin.twin("train", 8)
    scale = Scale(width=0.125, steps=600, batch_size=64, sampler_steps=25, score_width=16)
    plain = twin.model_overrides("sbm-vae", scale, data, {}, reuse=False)
    assert plain["score_steps"] == 600 and plain["sampler_steps"] == 25 and "data_id" not in plain
    varied = twin.model_overrides("sbm-vae", scale, data, {"score_steps": 1800, "sampler_steps": 10}, reuse=True)
    assert varied == {**plain, "score_steps": 1800, "sampler_steps": 10, "data_id": data.data_hash}
    assert data.data_hash  # reuse keys are None for unnamed data: the stages would never be stored
    assert "data_id" not in twin.model_overrides("mopoe", scale, data, {}, reuse=True)  # no reusable stages


# --- benchmarks/bench_twin_latent_probe.py: how much of the attributes a latent holds ---------------------
def test_latent_probe_reads_attributes_a_latent_holds_and_not_those_it_lacks():
    load_benchmark("bench_twin_models")  # the probe imports it by name, as when run from benchmarks/
    probe = load_benchmark("bench_twin_latent_probe")
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(400, 5))
    bits[:, 4] = 1  # a constant attribute: predicted as such, no classifier fitted
    holds = bits[:, :4] * 2.0 - 1.0 + 0.1 * rng.standard_normal((400, 4))
    lacks = rng.standard_normal((400, 4))
    train, test = slice(0, 300), slice(300, 400)
    for kind in probe.PROBES:
        assert probe.probe_f1(holds[train], bits[train], holds[test], bits[test], kind) == pytest.approx(1.0)
        blind = probe.probe_f1(lacks[train], bits[train], lacks[test], bits[test], kind)
        assert 0.3 < blind < 0.9  # each bit is a coin flip the latent does not see


def test_gaussian_joint_bound_draws_the_closed_form_conditional():
    """target = A·given + 0.3·noise: the fitted Gaussian's conditional given a test row has mean A·given and
    covariance 0.09·I (the closed form), whatever the given latent's own correlations."""
    load_benchmark("bench_twin_models")
    probe = load_benchmark("bench_twin_latent_probe")
    rng = np.random.default_rng(0)
    mixing, a = rng.standard_normal((3, 3)), rng.standard_normal((2, 3))
    given = rng.standard_normal((20000, 3)) @ mixing + 1.5
    target = given @ a.T + 0.3 * rng.standard_normal((20000, 2)) - 2.0
    test_row = given[:1]
    draws = probe.gaussian_conditional(given, target, np.repeat(test_row, 20000, axis=0), seed=1)
    expected_mean = test_row @ a.T - 2.0
    np.testing.assert_allclose(draws.mean(0), expected_mean[0], atol=0.02)
    np.testing.assert_allclose(np.cov(draws, rowvar=False), 0.09 * np.eye(2), atol=0.01)


# --- benchmarks/bench_energy.py: what a -C row's energy model knows --------------------------------
def test_energy_diagnostics_of_a_closed_form_energy_and_its_opposite():
    """E = |z_b − z_a|² on tuples whose own partner equals z_a: the own pair always has the lower energy
    (AUC 1) and −∇E at a shuffled partner points straight at the own one (cosine 1); the opposite energy
    gives AUC 0 and cosine −1. The SDE kernel is the identity here, so both are exact."""
    from types import SimpleNamespace

    import torch

    load_benchmark("bench_twin_models")  # imported by name, as when run from benchmarks/
    energy_bench = load_benchmark("bench_energy")
    z_a = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    z = torch.stack([z_a, torch.randn(64, 8), z_a.clone()], 1)  # modality 2 = modality 0
    sde = SimpleNamespace(perturb=lambda v, t: v)
    for sign, auc, cosine in ((1.0, 1.0, 1.0), (-1.0, 0.0, -1.0)):
        model = SimpleNamespace(sde=sde, energy=lambda za, zb, t, a, b, s=sign: s * (zb - za).pow(2).sum(1))
        got_auc, got_cosine = energy_bench.pair_diagnostics(model, z, 0, 2, 0.1)
        # the shuffled partner is sometimes the tuple itself (a tie: not "lower", no direction)
        assert got_auc == pytest.approx(auc, abs=2 / 64) and got_cosine == pytest.approx(cosine, abs=2 / 64)
