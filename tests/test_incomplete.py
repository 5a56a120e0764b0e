"""Incomplete training data (paper A.10.1, Table 11): seeded presence masks, the η axis of a suite, every
model's objective over the observed subset of each tuple, validation, the report's incomplete table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from latentdiff.autoencoders import observed_loss
from latentdiff.base import LatentCache
from mmbench import registry
from mmbench.contract import Capability
from mmbench.data.presence import PRESENCE_KEY, check_share, observed_count, presence_mask, tuple_presence
from mmbench.data.synthetic import make_patterns
from mmbench.hashing import config_hash
from mmbench.report import tables as tbl
from mmbench.report.aggregate import Aggregate
from mmbench.report.collect import Collected, _tidy
from mmbench.runner import data as data_mod
from mmbench.runner.plan import plan_jobs
from mmbench.runner.validate import validate_suite
from mmbench.suites import get_suite
from mmbench.suites.polymnist import PAPER_MODELS
from mmbench.suites.spec import Budget, DatasetSpec, Suite, Variant
from mmbench.tracking import RunRecord

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

MODALITIES = ("m0", "m1", "m2")
TINY_VAE = {"width": 0.125, "latent_per_modality": 8, "batch_size": 8, "steps": 2}
TINY_MMVAEPLUS = {"width": 0.125, "shared_dim": 8, "private_dim": 8, "batch_size": 8, "steps": 2}
TINY_SBM = {
    "width": 0.125, "latent_dim": 16, "dim": 8, "dim_mults": (1,), "attn_heads": 2, "attn_dim_head": 8,
    "ae_steps": 2, "score_steps": 2, "energy_steps": 2, "aux_steps": 2, "ae_batch_size": 16,
    "score_batch_size": 16, "energy_batch_size": 16, "aux_batch_size": 16, "energy_width": 16,
    "aux_width": 0.125, "aux_proj_dim": 16, "sampler_steps": 3,
}
TINY_MLD = {"width": 0.125, "latent_dim": 16, "dim": 16, "time_dim": 16, "groups": 4, "ae_steps": 2,
            "score_steps": 2, "ae_batch_size": 16, "score_batch_size": 16, "sampler_steps": 3}
# tuple i observes the modalities of row i (every row observes at least one; row 0 and row 5 are complete)
PRESENT = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0], [1, 1, 1]], dtype=torch.bool)


@pytest.fixture(scope="module")
def batch():
    images, labels = make_patterns(3, n=16, seed=3).batch(range(6))
    return images, labels


def with_noise_where_unobserved(images: dict[str, torch.Tensor], present: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same batch with every unobserved image replaced by uniform noise."""
    gen = torch.Generator().manual_seed(11)
    return {m: torch.where(present[:, i].view(-1, 1, 1, 1), x, torch.rand(x.shape, generator=gen))
            for i, (m, x) in enumerate(images.items())}


# --- presence masks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("share", "m", "expected"), [(1.0, 10, 10), (0.8, 10, 8), (0.5, 10, 5), (0.5, 3, 2),
                                                      (0.01, 10, 1), (0.2, 3, 1)])
def test_each_tuple_observes_round_share_times_m_modalities(share, m, expected):
    assert observed_count(share, m) == expected
    mask = presence_mask(200, share, m, seed=4)
    assert mask.shape == (200, m) and mask.dtype == bool
    assert (mask.sum(1) == expected).all()


def test_masks_are_fixed_by_seed_and_tuple_index_alone():
    mask = presence_mask(50, 0.5, 10, seed=7)
    assert np.array_equal(mask, presence_mask(50, 0.5, 10, seed=7))  # deterministic
    assert np.array_equal(mask[:20], presence_mask(20, 0.5, 10, seed=7))  # independent of the split's size
    assert np.array_equal(mask[33], tuple_presence(33, 0.5, 10, seed=7))  # of the other tuples
    assert not np.array_equal(mask, presence_mask(50, 0.5, 10, seed=8))  # other seeds differ
    assert len({tuple(r) for r in mask}) > 10  # tuples differ from each other
    # every modality is observed about half the time (a fair choice, not a fixed subset)
    share = presence_mask(2000, 0.5, 10, seed=1).mean(0)
    assert np.all(np.abs(share - 0.5) < 0.06)


def test_complete_share_observes_everything():
    assert presence_mask(30, 1.0, 10, seed=3).all()


@pytest.mark.parametrize("share", [0.0, -0.5, 1.01, 2.0])
def test_a_share_outside_zero_one_is_one_line_error(share):
    with pytest.raises(ValueError, match=r"observed_share must lie in \(0, 1\]") as info:
        check_share(share)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="observed_share"):
        presence_mask(4, share, 3, seed=0)


def test_a_dataset_with_presence_serves_it_in_the_batchs_modality_order():
    data = make_patterns(3, n=20, seed=1)
    mask = presence_mask(20, 0.5, 3, seed=2)
    data.set_presence(mask)
    images, _ = data.batch([4, 1], ("m2", "m0"))
    assert torch.equal(images[PRESENCE_KEY], torch.from_numpy(mask[[4, 1]][:, [2, 0]]))
    assert np.array_equal(data.subset(10, stratified=False).presence, mask[:10])
    assert np.array_equal(data.select_modalities(("m1",)).presence, mask[:, [1]])
    assert PRESENCE_KEY not in make_patterns(3, n=20, seed=1).batch([0])[0]  # complete data: no key at all
    with pytest.raises(ValueError, match=r"presence must be \(N, M\)"):
        data.set_presence(np.ones((20, 2), bool))


# --- identity: η < 1 is new data, η = 1 keeps every key ---------------------------------------------------


def _synthetic_plan(rows: tuple[Variant, ...]):
    """The builtin synthetic suite's smoke jobs (seeds 0, 1) of ``rows``."""
    suite = dataclasses.replace(get_suite("synthetic"), variants=rows)
    budget = suite.budget("smoke")
    return plan_jobs(suite, budget, data_mod.classifier_plan(suite, budget, "h" * 16), seeds=(0, 1))


def test_complete_rows_keep_their_job_ids_and_data_ids():
    """Pinned before the η axis existed (commit fa7fd06): a complete row's ids must not move."""
    jobs = {(j.label, j.seed): j for j in _synthetic_plan((Variant("mvae", "mvae"), Variant("sbm-vae", "sbm-vae")))}
    assert jobs[("mvae", 0)].job_id == "160fa01b58799e59"
    assert jobs[("sbm-vae", 0)].job_id == "3dd6ae47d594b77b"
    assert jobs[("sbm-vae", 0)].config_hash == "49aa71c8c47f9b56"
    assert jobs[("mvae", 0)].data.data_id == "4b4837c1b5d93dc0"
    ref = jobs[("mvae", 0)].data
    assert ref.identity() == {k: v for k, v in dataclasses.asdict(ref).items()
                              if k not in ("observed_share", "presence_seed")}


def test_incomplete_rows_get_their_own_data_id_per_share_and_seed():
    jobs = {(j.label, j.seed): j for j in _synthetic_plan((
        Variant("full", "sbm-vae"), Variant("half", "sbm-vae", observed_share=0.5),
        Variant("most", "sbm-vae", observed_share=0.8)))}
    full, half, half1, most = jobs[("full", 0)], jobs[("half", 0)], jobs[("half", 1)], jobs[("most", 0)]
    ids = {j.data.data_id for j in (full, half, half1, most)}
    assert len(ids) == 4  # no stage trained on one is ever reused for another
    assert half.data.observed_share == 0.5 and half.data.presence_seed == 0 and half1.data.presence_seed == 1
    assert half.config["data_id"] == half.data.data_id  # the models' reuse keys follow
    assert half.data.data_id == config_hash({"data_id": full.data.data_id, "observed_share": 0.5, "presence_seed": 0},
                                            length=32)
    model_full = registry.build("sbm-vae", MODALITIES, {**TINY_SBM, "data_id": full.data.data_id})
    model_half = registry.build("sbm-vae", MODALITIES, {**TINY_SBM, "data_id": half.data.data_id})
    assert not {s.reuse_key for s in model_full.stages()} & {s.reuse_key for s in model_half.stages()}


def test_only_the_train_split_of_an_incomplete_row_carries_masks():
    job = next(j for j in _synthetic_plan((Variant("half", "mvae", observed_share=0.5),)) if j.seed == 1)
    train, val, test = data_mod.load_splits(job.data)
    assert np.array_equal(train.presence, presence_mask(len(train), 0.5, 3, seed=1))
    assert val.presence is None and test.presence is None  # evaluated on complete tuples
    assert train.batch([0, 1])[0][PRESENCE_KEY].sum(1).tolist() == [2, 2]
    assert job.data.identity()["observed_share"] == 0.5  # the job id hashes the share and the mask seed


# --- every model: the objective over the observed subset -------------------------------------------------


def _loss(model, images, labels, present=None, seed=0):
    batch = dict(images) if present is None else {**images, PRESENCE_KEY: present}
    torch.manual_seed(seed)
    return model.loss(batch, labels)["loss"]


@pytest.mark.parametrize("name", ["mvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus"])
def test_shared_latent_losses_ignore_unobserved_images(name, batch):
    images, labels = batch
    model = registry.build(name, MODALITIES, TINY_MMVAEPLUS if name == "mmvaeplus" else TINY_VAE)
    assert model.has(Capability.INCOMPLETE)
    model.train()
    masked = _loss(model, images, labels, PRESENT)
    noisy = _loss(model, with_noise_where_unobserved(images, PRESENT), labels, PRESENT)
    assert masked.item() == pytest.approx(noisy.item(), rel=1e-6)
    assert masked.item() != pytest.approx(_loss(model, images, labels).item(), rel=1e-3)  # the mask matters
    # an all-True mask is complete data: the loss of before
    full = _loss(model, images, labels)
    assert _loss(model, images, labels, torch.ones(6, 3, dtype=torch.bool)).item() == pytest.approx(full.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["mvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus"])
def test_the_masked_objective_with_everything_observed_is_the_complete_one(name, batch, monkeypatch):
    """The incomplete-data code path itself (not its all-True shortcut) reduces to the paper's objective."""
    images, labels = batch
    model = registry.build(name, MODALITIES, TINY_MMVAEPLUS if name == "mmvaeplus" else TINY_VAE)
    model.train()
    complete = _loss(model, images, labels).item()
    monkeypatch.setattr(model, "presence", lambda b: torch.ones(6, 3, dtype=torch.bool))
    assert _loss(model, images, labels).item() == pytest.approx(complete, rel=1e-5)


@pytest.mark.parametrize("name", ["mvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus"])
def test_an_unobserved_modality_gets_no_gradient(name, batch):
    """Tuples that observe only m0 and m1: m2's encoder and decoder receive exactly zero gradient."""
    images, labels = batch
    model = registry.build(name, MODALITIES, TINY_MMVAEPLUS if name == "mmvaeplus" else TINY_VAE)
    model.train()
    present = torch.tensor([[1, 1, 0]] * 6, dtype=torch.bool)
    _loss(model, images, labels, present).backward()
    for part in (model.encoders["m2"], model.decoders["m2"]):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert all(g is None or not g.any() for g in grads)
    assert any(p.grad is not None and p.grad.any() for p in model.encoders["m0"].parameters())


def test_mopoe_components_are_uniform_over_the_observed_sets_subsets():
    from baselines.common import random_subset_masks
    from baselines.mopoe.model import observed_components

    torch.manual_seed(0)
    n = 30_000
    observed = torch.tensor([[True, False, True, False]]).expand(n, -1)
    comps = observed_components(random_subset_masks(n, 4), observed)
    assert comps.any(1).all() and not (comps & ~observed).any()
    codes = (comps.long() * torch.tensor([1, 2, 4, 8])).sum(1)
    shares = torch.bincount(codes, minlength=16)[[1, 4, 5]].double() / n  # {m0}, {m2}, {m0, m2}
    assert torch.allclose(shares, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.015)
    full = random_subset_masks(8, 4)
    assert torch.equal(observed_components(full, torch.ones(8, 4, dtype=torch.bool)), full)  # complete: kept


def test_mvtcae_incomplete_loss_is_the_observed_sets_objective(batch):
    """Independent computation: the loss of tuples observing {m0, m1} equals that of a 2-modality MVTCAE
    with the same m0/m1 networks, on the same draws."""
    images, labels = batch
    three = registry.build("mvtcae", MODALITIES, {**TINY_VAE, "latent_per_modality": 8})
    two = registry.build("mvtcae", ("m0", "m1"), {**TINY_VAE, "latent_per_modality": 12})  # same latent size 24
    for part in ("encoders", "decoders"):
        for m in ("m0", "m1"):
            getattr(two, part)[m].load_state_dict(getattr(three, part)[m].state_dict())
    three.train(), two.train()
    present = torch.tensor([[1, 1, 0]] * 6, dtype=torch.bool)
    got = _loss(three, images, labels, present)
    expected = _loss(two, {m: images[m] for m in ("m0", "m1")}, labels)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_autoencoder_stage_trains_only_on_tuples_observing_its_modality(batch):
    images, labels = batch
    model = registry.build("sbm-vae", MODALITIES, TINY_SBM)
    stage = next(s for s in model.stages() if s.name == "ae/m1")
    ae = model.autoencoders[1]
    ae.train()
    column = PRESENT[:, [1]]
    torch.manual_seed(0)
    got = stage.loss({"m1": images["m1"], PRESENCE_KEY: column}, labels)["loss"]
    torch.manual_seed(0)
    expected = ae.loss(images["m1"][column[:, 0]])["loss"]  # the observed rows alone
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    noisy = with_noise_where_unobserved(images, PRESENT)["m1"]
    torch.manual_seed(0)
    assert stage.loss({"m1": noisy, PRESENCE_KEY: column}, labels)["loss"].item() == pytest.approx(got.item(), rel=1e-6)
    nobody = observed_loss(ae, images["m1"], torch.zeros(6, 1, dtype=torch.bool))["loss"]
    nobody.backward()
    assert nobody.item() == 0.0 and all(not p.grad.any() for p in ae.parameters())
    torch.manual_seed(0)
    complete = ae.loss(images["m1"])["loss"]
    torch.manual_seed(0)
    assert stage.loss({"m1": images["m1"]}, labels)["loss"].item() == complete.item()


def test_sbm_contrastive_embeddings_ignore_unobserved_images(batch):
    images, labels = batch
    model = registry.build("sbm-vae-t", MODALITIES, TINY_SBM)
    model.aux.train()
    got = model._aux_loss({**images, PRESENCE_KEY: PRESENT}, labels)["loss"]
    noisy = model._aux_loss({**with_noise_where_unobserved(images, PRESENT), PRESENCE_KEY: PRESENT}, labels)["loss"]
    assert got.item() == pytest.approx(noisy.item(), rel=1e-6)
    full = model._aux_loss({**images, PRESENCE_KEY: torch.ones(6, 3, dtype=torch.bool)}, labels)["loss"]
    assert full.item() != pytest.approx(got.item(), rel=1e-4)


@pytest.mark.parametrize("name", ["sbm-vae", "mld"])
def test_score_losses_ignore_unobserved_latents(name):
    """The latent models read the cache's presence: an unobserved latent never changes the score loss."""
    model = registry.build(name, MODALITIES, TINY_MLD if name == "mld" else TINY_SBM)
    net = model.score_model if name == "mld" else model.score_net
    net.train()
    n, d = 16, model.latent_dim
    gen = torch.Generator().manual_seed(5)
    mu = torch.randn(n, 3, d, generator=gen)
    present = torch.from_numpy(presence_mask(n, 0.5, 3, seed=3))
    loss = model._loss if name == "mld" else model._score_loss

    def score_loss(latents: torch.Tensor, mask: torch.Tensor) -> float:
        model.cache = LatentCache(latents, None, mask)
        torch.manual_seed(1)
        return loss({}, torch.zeros(n))["loss"].item()

    other = torch.where(present[:, :, None], mu, 100.0 * torch.randn(n, 3, d, generator=gen))
    assert score_loss(mu, present) == pytest.approx(score_loss(other, present), rel=1e-6)
    assert score_loss(mu, torch.ones(n, 3, dtype=torch.bool)) != pytest.approx(score_loss(mu, present), rel=1e-4)


def test_mld_standardises_each_modality_over_its_observed_codes():
    model = registry.build("mld", MODALITIES, TINY_MLD)
    gen = torch.Generator().manual_seed(2)
    mu = torch.randn(40, 3, model.latent_dim, generator=gen)
    present = torch.from_numpy(presence_mask(40, 0.5, 3, seed=0))
    model.cache = LatentCache(mu, None, present)
    model._prepare(lambda: iter(()))
    for i in range(3):
        observed = mu[present[:, i], i]
        assert torch.allclose(model.score_model.mean[i], observed.mean(0))
        assert torch.allclose(model.score_model.std[i], observed.std(0))


# --- validate and the suite ------------------------------------------------------------------------------


def test_every_registered_model_declares_incomplete():
    for name in ("mvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus", "mld", "sbm-vae", "sbm-rae", "sbm-vae-c",
                 "sbm-rae-c", "sbm-vae-t", "sbm-rae-t"):
        assert Capability.INCOMPLETE in registry.resolve_class(name).capabilities, name


def test_validate_refuses_sbm_c_rows_whose_tuples_observe_fewer_than_two_modalities():
    """-C's energy model trains on pairs of one tuple's observed latents: round(η·M) < 2 is refused at validate,
    naming the row, the count and the fix; -T and plain SBM train on one observed modality."""
    base = get_suite("synthetic")  # 3 modalities: η 0.5 -> round(1.5) = 2 observed, η 0.3 -> 1
    rows = (Variant("c-ok", "sbm-vae-c", observed_share=0.5), Variant("c-short", "sbm-vae-c", observed_share=0.3),
            Variant("t-short", "sbm-vae-t", observed_share=0.3), Variant("plain-short", "sbm-rae", observed_share=0.3),
            Variant("c-two", "sbm-rae-c", observed_share=0.5, num_modalities=2))
    report = validate_suite(dataclasses.replace(base, name="t-observed", variants=rows))
    errors = "\n".join(report.errors)
    assert ("row 'c-short': each training tuple observes 1 of 3 modalities (observed_share 0.3) but model "
            "'sbm-vae-c' needs 2") in errors and "raise observed_share" in errors
    assert "row 'c-two': each training tuple observes 1 of 2 modalities" in errors  # round(1.0) = 1
    assert not any(label in errors for label in ("c-ok", "t-short", "plain-short"))


def test_validate_refuses_incomplete_rows_of_a_model_without_the_capability(monkeypatch):
    from mmbench.runner import models as model_cache

    cls = registry.resolve_class("mvae")
    monkeypatch.setattr(cls, "capabilities", cls.capabilities - {Capability.INCOMPLETE})
    monkeypatch.setattr(cls, "incomplete_reason", "its ELBO terms need every modality (test reason)")
    model_cache.clear()
    base = get_suite("synthetic")
    rows = (Variant("mvae-full", "mvae"), Variant("mvae-half", "mvae", observed_share=0.5),
            Variant("mopoe-bad", "mopoe", observed_share=1.5))
    report = validate_suite(dataclasses.replace(base, name="t-incomplete", variants=rows))
    errors = "\n".join(report.errors)
    assert "row 'mvae-half': model 'mvae' cannot train on incomplete tuples" in errors
    assert "its ELBO terms need every modality (test reason)" in errors
    assert "mvae-full" not in errors
    assert "row 'mopoe-bad': observed_share must lie in (0, 1]" in errors
    model_cache.clear()


def test_polymnist10_incomplete_is_every_model_at_three_shares():
    suite = get_suite("polymnist10-incomplete")
    assert len(suite.variants) == 12 * 3
    assert {(v.model, v.observed_share) for v in suite.variants} == {
        (m, s) for m in PAPER_MODELS for s in (1.0, 0.8, 0.5)}
    # the supervised row and the F1 floors are CelebA's
    assert set(PAPER_MODELS) == set(registry.MODELS.names()) - {"dummy", "supervised", "majority", "marginal"}
    assert "incomplete" in suite.tables
    assert validate_suite(suite).ok


# --- the report's incomplete table ----------------------------------------------------------------------

TABLE_SUITE = Suite(
    name="r-incomplete", version="1", description="", dataset=DatasetSpec("synthetic", "patterns3", 3),
    variants=(Variant("mvae-1", "mvae"), Variant("mvae-0.5", "mvae", observed_share=0.5),
              Variant("mopoe-1", "mopoe"), Variant("mopoe-0.5", "mopoe", observed_share=0.5),
              Variant("mld-1", "mld")),
    metrics=("coherence", "fid"), budgets=(Budget("quick", "test", seeds=(0, 1)),), tables=("incomplete",),
)
TABLE_VALUES = {
    "mvae-1": {0: {"coherence/loo/mean": 0.4, "fid/loo/mean": 90.0}, 1: {"coherence/loo/mean": 0.6, "fid/loo/mean": 94.0}},
    "mvae-0.5": {0: {"coherence/loo/mean": 0.3, "fid/loo/mean": 99.0}},
    "mopoe-1": {0: {"coherence/loo/mean": 0.7, "fid/loo/mean": 80.0}},
    "mopoe-0.5": {0: {"coherence/loo/mean": 0.55}},
    "mld-1": {0: {"coherence/loo/mean": 0.2, "fid/loo/mean": 60.0}},
}


def _table():
    runs = [RunRecord(f"{v}-{s}", "FINISHED", 0, None, {}, dict(m),
                      {"variant": v, "seed": str(s), "suite_version": "1", "model": TABLE_SUITE.variant(v).model}, "")
            for v, seeds in TABLE_VALUES.items() for s, m in seeds.items()]
    skipped = {"mopoe-0.5": {"fid/loo/mean": "FID skipped (test reason)"}}
    collected = Collected(TABLE_SUITE, TABLE_SUITE.budgets[0], "sqlite:///x.db", runs, _tidy(runs, TABLE_SUITE),
                          skipped, {"coherence/loo/mean": True, "fid/loo/mean": False})
    agg = Aggregate(collected)
    return tbl.build_table(tbl.TABLES["incomplete"], agg), agg


def test_incomplete_table_has_models_as_rows_and_shares_as_columns():
    table, agg = _table()
    assert table.rows == ["mvae", "mopoe", "mld"]
    headers = [c.header for c in table.spec.columns]
    assert headers == ["Coherence η=1", "Coherence η=0.5", "FID η=1", "FID η=0.5"]
    assert table.cells[("mvae", "Coherence η=1")].mean == pytest.approx(0.5)
    assert table.cells[("mvae", "Coherence η=0.5")].mean == pytest.approx(0.3)
    assert table.cells[("mopoe", "FID η=1")].mean == pytest.approx(80.0)
    assert table.best["Coherence η=0.5"] == {"mopoe"} and table.best["FID η=1"] == {"mld"}


def test_incomplete_table_explains_missing_cells_and_never_shows_zero():
    table, agg = _table()
    no_row = table.cells[("mld", "Coherence η=0.5")]
    assert no_row.mean is None and no_row.reason == "the suite has no row training mld at η = 0.5"
    assert table.cells[("mopoe", "FID η=0.5")].reason == "FID skipped (test reason)"
    md = tbl.to_markdown(table, agg)
    line = next(x for x in md.splitlines() if x.startswith("| mld "))
    assert "—" in line and " 0.000" not in line and "0.00 " not in line
    assert "the suite has no row training mld at η = 0.5" in md and "FID skipped (test reason)" in md
    assert "mld,Coherence η=0.5,coherence/loo/mean,,,0,0,the suite has no row" in tbl.to_csv(table)
    assert tbl.to_latex(table, agg).count(r"\\") >= 4
