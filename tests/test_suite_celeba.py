"""The ``celeba-twin`` suite: models on image, mask and attributes, end to end, and F1 that ranks learning."""

from __future__ import annotations

import pytest
from benchmark_modules import load_benchmark

from mmbench import tracking
from mmbench.runner.run import RunOptions, run_suite
from mmbench.runner.validate import validate_suite
from mmbench.suites import get_suite

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_twin_models")


def test_suite_validates_with_every_row():
    suite = get_suite("celeba-twin")
    report = validate_suite(suite)
    assert not report.errors, report.errors
    assert {v.model for v in suite.variants} >= {"sbm-vae", "sbm-rae", "mopoe", "mvtcae", "mmvaeplus", "mld"}


GIVEN_ONE = ("f1/given/image/attributes", "f1/given/mask/attributes", "f1/given/image/mask", "f1/given/attributes/mask")


def test_smoke_runs_end_to_end_with_f1_coherence_fid_and_fgsm(_isolated_home):
    """Two generative rows and the supervised reference row; the report's Table 1 and Fig. 10 from them."""
    import json

    from mmbench.data.celebatwin import ATTRIBUTES
    from mmbench.records import Tag
    from mmbench.report import build_report
    from mmbench.report.fig10 import read_joint

    lines: list[str] = []
    uri = f"sqlite:///{_isolated_home / 'store.db'}"
    summary = run_suite("celeba-twin", RunOptions(budget="smoke", models=("mopoe", "sbm-vae", "supervised"),
                                                  tracking_uri=uri, quiet=True, device="cpu", threads=1), lines.append)
    assert [o.status for o in summary.outcomes] == ["FINISHED"] * 3, "\n".join(lines)
    store = tracking.Store(uri)
    *generative, supervised = [store.run(o.run_id) for o in summary.outcomes]
    for run in generative:
        metrics = run.metrics
        for key in ("f1/loo/attributes", "f1/loo/mask", "fgsm/f1/clean/attributes", "fgsm/f1/adv/attributes", *GIVEN_ONE):
            assert 0.0 <= metrics[key] <= 1.0, (key, metrics.get(key))
        assert 0.0 <= metrics["coherence/loo/image"] <= 1.0
        assert metrics["fid/loo/image"] > 0 and metrics["fid/uncond/image"] > 0
        assert metrics["fid/given/mask/image"] > 0 and metrics["fid/given/attributes/image"] > 0
        assert not any(k.startswith("coherence/loo/") and k.endswith(("mask", "attributes")) for k in metrics)
        assert "eval/samples_uncond_joint.npz" in store.artifact_names(run.run_id, "eval")
    joint = store.download(generative[0].run_id, "eval/samples_uncond_joint.npz", _isolated_home / "joint")
    assert read_joint(joint.read_bytes()).attribute_names == ATTRIBUTES  # from the stored twin's manifest
    assert {"f1/given/image/attributes", "f1/given/image/mask"} <= set(supervised.metrics)
    assert "f1/loo/attributes" not in supervised.metrics and "fid/loo/image" not in supervised.metrics
    skipped = json.loads(supervised.tags[Tag.SKIPPED])
    assert skipped["f1/given/mask/attributes"] == "Supervised does not answer attributes given mask"
    assert skipped["fid/loo/image"] == "Supervised does not answer image given attributes+mask"
    # the expected keys follow the modality kinds: no coherence or FID keys of the mask or the attributes
    assert not any(k.endswith(("/mask", "/attributes")) and k.startswith(("coherence/", "fid/")) for k in skipped)
    report = build_report(get_suite("celeba-twin"), get_suite("celeba-twin").budget("smoke"), uri,
                          _isolated_home / "report", say=lines.append)
    table = (_isolated_home / "report" / "tables" / "conditional_attributes.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| supervised"))
    assert row.count("—") == 7 and "Supervised does not answer attributes given mask" in table
    assert (_isolated_home / "report" / "figures" / "fig10.png").stat().st_size > 0
    assert "fig10" not in report.missing


def test_trained_model_has_higher_attribute_f1_than_untrained(bench):
    """MoPoE, 300 steps at width 0.125 (~45 s on one thread): attribute F1 given the image rises from
    below the training-majority floor to above it (measured: 0.493 untrained, 0.652 trained, floor 0.625)."""
    train, test = bench.twin("train", 2000), bench.twin("test", 500)
    model = bench.build("mopoe", train, {"width": 0.125, "steps": 300, "batch_size": 64})
    untrained = bench.attribute_f1_given_image(model, test)
    bench.train(model, train, "mopoe")
    trained = bench.attribute_f1_given_image(model, test)
    floor = bench.majority_f1(train, test)
    assert trained > untrained + 0.1, (untrained, trained)
    assert untrained < floor < trained, (untrained, floor, trained)


def test_celebamaskhq_paper_budget_carries_table10_for_the_sbm_rows():
    """β_max 20, N = 1000, EBM-scale 2000 at batch 256 (γ 7.8125 per sample), score batch 256; MoPoE untouched."""
    from mmbench.runner.models import model_class
    from mmbench.runner.plan import model_overrides, resolved_config
    from sbm.guidance import per_sample_gamma

    suite = get_suite("celebamaskhq")
    assert not validate_suite(suite).errors
    budget = suite.budget("paper")
    for label in ("sbm-vae", "sbm-rae-c"):
        variant = suite.variant(label)
        config = resolved_config(label, model_overrides(budget, variant, "d" * 16, 0, model_class(label).Config))
        assert (config["beta_max"], config["sampler_steps"], config["score_batch_size"]) == (20.0, 1000, 256)
        assert config["energy_gamma"] == per_sample_gamma(2000, 256) == 7.8125
    mopoe = suite.variant("mopoe")
    assert model_overrides(budget, mopoe, "d" * 16, 0, model_class("mopoe").Config) == {}
    assert dict(budget.eval_overrides)["fid_extractor"] == "inception-v3-compat"


def test_twin_quick_score_settings_per_row():
    """SBM-RAE/-C and both -T rows: score_lr 2e-3 on standardised latents; SBM-VAE/-C: the paper's 2e-4, raw;
    every SBM row the lean UNet and PC-10; the CelebAMask-HQ suite's rows never standardise."""
    from mmbench.runner.models import model_class
    from mmbench.runner.plan import model_overrides, resolved_config

    def config(suite_name: str, budget_name: str, label: str) -> dict:
        suite = get_suite(suite_name)
        budget, variant = suite.budget(budget_name), suite.variant(label)
        return resolved_config(label, model_overrides(budget, variant, "d" * 16, 0, model_class(label).Config))

    want = {"sbm-vae": (2e-4, None), "sbm-vae-c": (2e-4, None), "sbm-rae": (2e-3, "dimension"),
            "sbm-rae-c": (2e-3, "dimension"), "sbm-vae-t": (2e-3, "dimension"), "sbm-rae-t": (2e-3, "dimension")}
    for label, (lr, standardise) in want.items():
        cfg = config("celeba-twin", "quick", label)
        assert (cfg["score_lr"], cfg.get("latent_standardise")) == (lr, standardise), label
        assert (cfg["unet_level_attention"], cfg["unet_block_mult"], cfg["sampler"], cfg["sampler_steps"]) == (False, 1, "pc", 10)
    assert config("celeba-twin", "quick", "mld")["score_lr"] == 1e-4
    for budget in ("quick", "paper"):
        assert all("latent_standardise" not in config("celebamaskhq", budget, label) for label in want)
