"""A model owns its scaling: each Config maps a budget's Scale onto its fields; the planner applies it.

Pinned rows hold literal values written down before the mapping moved out of a per-name table into the
models' Configs (every built-in suite × budget × row resolved to the same configs and job ids then);
the invariants check every built-in model and row, and a model added with only a registry line.
"""

from __future__ import annotations

import dataclasses

import pytest

from mmbench import registry
from mmbench.contract import MultimodalModel
from mmbench.runner import models as model_cache
from mmbench.runner.plan import model_overrides
from mmbench.runner.validate import validate_suite
from mmbench.scaling import SCALE_FIELDS, NoScaler, Scale, scale_overrides, unscaled
from mmbench.suites import get_suite, suite_names
from mmbench.suites.polymnist import cap_note
from mmbench.suites.spec import Budget, DatasetSpec, Suite, Variant

# one value per Scale field, each distinct from every default, so a mapped field is visible
PROBE = {"width": 0.375, "steps": 28, "batch_size": 12, "latent_per_modality": 20, "sampler_steps": 6,
         "score_width": 24}


def overrides_of(suite: str, budget: str, label: str, seed: int = 0) -> dict:
    spec = get_suite(suite)
    variant = spec.variant(label)
    return model_overrides(spec.budget(budget), variant, "d" * 16, seed, model_cache.model_class(variant.model).Config)


PINNED = [
    ("polymnist10", "quick", "sbm-vae-c", 0, {
        "ae_batch_size": 64, "ae_steps": 3000, "aux_batch_size": 64, "aux_steps": 750, "aux_width": 0.25, "dim": 64,
        "energy_batch_size": 64, "energy_steps": 750, "score_batch_size": 64,
        "score_steps": 3000, "width": 0.25, "seed": 0, "data_id": "d" * 16,
        # quick's SBM rows (QUICK_SBM): the lean UNet, sampled with the scale's PC-100, the protocol's re-imposition
        "unet_level_attention": False, "unet_block_mult": 1, "sampler_steps": 100, "reimpose": "sbmae"}),
    ("polymnist10", "quick", "mopoe", 0, {"batch_size": 64, "steps": 6750, "width": 0.25}),  # the budget's own override wins
    ("polymnist10", "quick", "mmvae", 0, {"batch_size": 64, "steps": 800, "width": 0.25}),  # its cap (model_notes)
    ("polymnist10", "smoke", "mld", 0, {
        "ae_batch_size": 32, "ae_steps": 4, "dim": 192, "sampler_steps": 4, "score_batch_size": 32, "score_steps": 4,
        "width": 0.125, "seed": 0, "data_id": "d" * 16}),
    ("polymnist10", "smoke", "mmvaeplus", 0, {"batch_size": 32, "steps": 4, "width": 0.125}),
    ("synthetic", "smoke", "dummy", 0, {}),
    ("polymnist10-ablation", "smoke", "sbm-rae-N1k", 0, {  # the row's per-budget override after the scale
        "ae_batch_size": 32, "ae_steps": 4, "aux_batch_size": 32, "aux_steps": 1, "aux_width": 0.125, "dim": 16,
        "energy_batch_size": 32, "energy_steps": 1, "sampler": "pc", "sampler_steps": 8, "score_batch_size": 32,
        "score_steps": 4, "width": 0.125, "seed": 0, "data_id": "d" * 16, "reimpose": "sbmae"}),
    ("polymnist10", "paper", "sbm-vae", 1, {"seed": 1, "data_id": "d" * 16, "reimpose": "sbmae"}),  # an empty scale: paper defaults
    ("polymnist10-scaling", "quick", "mvae-m3", 0, {"batch_size": 64, "steps": 3750, "width": 0.25}),  # quick's MVAE
]


@pytest.mark.parametrize(("suite", "budget", "label", "seed", "expected"), PINNED, ids=[f"{p[0]}/{p[1]}/{p[2]}" for p in PINNED])
def test_pinned_rows_resolve_to_the_recorded_overrides(suite, budget, label, seed, expected):
    assert overrides_of(suite, budget, label, seed) == expected


def builtin_models() -> list[str]:
    return sorted({v.model for name in suite_names() for v in get_suite(name).variants})


@pytest.mark.parametrize("name", builtin_models())
def test_each_model_maps_every_scale_field_it_does_not_declare_unscaled(name):
    config_cls = model_cache.model_class(name).Config
    fields = {f.name for f in dataclasses.fields(config_cls)}
    skip = unscaled(config_cls)
    for scale_field in SCALE_FIELDS:
        got = scale_overrides(config_cls, Scale(**{scale_field: PROBE[scale_field]}), name)
        assert set(got) <= fields, f"{name}: {scale_field} maps onto unknown fields {set(got) - fields}"
        if scale_field in skip:
            assert got == {}, f"{name} declares {scale_field} unscaled but maps it to {got}"
        else:
            assert got, f"{name}: a budget's {scale_field} changes nothing in its Config"
    full = scale_overrides(config_cls, Scale(**PROBE), name)
    registry.model_config(name, full)  # every mapped value is accepted by the Config


def test_every_builtin_row_gets_its_models_scale_under_the_budget_and_row_overrides():
    for suite_name in suite_names():
        suite = get_suite(suite_name)
        for budget in suite.budgets:
            for variant in suite.variants:
                config_cls = model_cache.model_class(variant.model).Config
                merged = model_overrides(budget, variant, "d" * 16, 0, config_cls)
                explicit = {**budget.overrides_of(variant.model), **variant.overrides_at(budget.name)}
                scaled = scale_overrides(config_cls, budget.scale, variant.model)
                asked = set(budget.scale.asked()) - unscaled(config_cls)
                assert not asked or scaled, (suite_name, budget.name, variant.label)
                for key, value in scaled.items():
                    assert merged[key] == explicit.get(key, value), (suite_name, budget.name, variant.label, key)


# ------------------------------------------------------------------------------------- the default rule


@dataclasses.dataclass(frozen=True)
class PlainConfig:
    width: float = 1.0
    steps: int = 100
    batch_size: int = 256
    beta: float = 1.0

    unscaled = ("latent_per_modality", "sampler_steps", "score_width")


@dataclasses.dataclass(frozen=True)
class BareConfig:
    steps: int = 100


def test_default_rule_maps_fields_of_the_same_name_and_skips_the_unscaled():
    scale = Scale(width=0.5, steps=7, batch_size=16, latent_per_modality=8, sampler_steps=3, score_width=4)
    assert scale_overrides(PlainConfig, scale, "plain") == {"width": 0.5, "steps": 7, "batch_size": 16}
    assert scale_overrides(PlainConfig, Scale(steps=7), "plain") == {"steps": 7}
    assert scale_overrides(BareConfig, Scale(), "bare") == {}  # an empty scale asks nothing


def test_a_scale_field_a_config_cannot_take_is_an_error_naming_it():
    with pytest.raises(NoScaler, match=r"no scaler for model 'bare'.*sets width, sampler_steps.*`unscaled`"):
        scale_overrides(BareConfig, Scale(width=0.5, steps=3, sampler_steps=4), "bare")


def test_unscaled_must_name_scale_fields():
    @dataclasses.dataclass(frozen=True)
    class Typo:
        steps: int = 1
        unscaled = ("sampler_step",)

    with pytest.raises(ValueError, match="sampler_step"):
        scale_overrides(Typo, Scale(steps=2), "typo")


def test_a_configs_own_rule_wins_over_the_default():
    @dataclasses.dataclass(frozen=True)
    class PerStage:
        steps: int = 10  # same name as the Scale field, yet the model says where steps go
        first_steps: int = 10

        @staticmethod
        def scaled(scale: Scale) -> dict:
            return {"first_steps": scale.steps}

    assert scale_overrides(PerStage, Scale(steps=3), "per-stage") == {"first_steps": 3}


# ------------------------------------------------------------------------ adding a model: folder + one line


@dataclasses.dataclass(frozen=True)
class NewConfig:
    width: float = 1.0
    steps: int = 50
    batch_size: int = 128
    unscaled = ("latent_per_modality", "sampler_steps", "score_width")


class NewModel(MultimodalModel):
    """A model registered with one line, known to no suite or harness file (planning never builds it)."""

    Config = NewConfig


@pytest.fixture
def new_model(monkeypatch):
    registry.register("new-model", f"{__name__}:NewModel", "a model added by one registry line (tests only)")
    model_cache.clear()
    yield "new-model"
    registry.MODELS.unregister("new-model")  # the registration ends with the test
    model_cache.clear()


def test_a_new_model_is_sized_by_every_budget_without_touching_the_harness(new_model):
    smoke = get_suite("synthetic").budget("smoke")
    variant = Variant("new", new_model)
    assert model_overrides(smoke, variant, None, None, NewConfig) == {"width": 0.125, "steps": 3, "batch_size": 32}
    suite = Suite(name="t-new", version="t1", description="a new model's row", dataset=DatasetSpec("synthetic", "patterns3", 3),
                  variants=(variant,), metrics=(), budgets=(smoke, Budget("paper", "paper sizes", seeds=(0,))),
                  default_budget="smoke")
    report = validate_suite(suite)
    assert not any("scaler" in e for e in report.errors), report.errors


def test_quicks_capped_rows_carry_their_cap_in_a_note():
    quick = get_suite("polymnist10").budget("quick")
    assert quick.notes_for(["mvae", "mmvae", "mmvaeplus", "mld"]) == {
        "mmvae": cap_note(800), "mmvaeplus": cap_note(1250), "mld": cap_note(36000, "score ")}
    assert "cap of 800 steps" in cap_note(800) and "cap of 36,000 score steps" in cap_note(36000, "score ")
    assert set(quick.capped) == {"mmvae", "mmvaeplus", "mld"}
    assert quick.overrides_of("mld")["score_steps"] == 36000  # MLD's cap is on its last stage, the score net
    # the guided rows carry the measured fact that their energy learns no coherence at this budget
    guided = quick.notes_for(["sbm-vae", "sbm-vae-c", "sbm-rae-c", "sbm-vae-t"])
    assert list(guided) == ["sbm-vae-c", "sbm-rae-c"] and all("AUC 0.50" in n for n in guided.values())


@pytest.mark.parametrize("model", ["sbm-vae", "sbm-vae-c", "sbm-rae", "sbm-rae-c"])
def test_the_reimposition_ablation_row_differs_only_in_its_mode_and_shares_the_plain_rows_stages(model):
    """Every budget samples the SBM rows with the reference code's re-imposition (mmbench.suites.protocol);
    polymnist10-ablation's ``<model>-fresh`` is ``<model>`` with fresh noise instead. No reuse key holds the mode,
    so both rows train their autoencoders and score net once (the -C rows' energy model has no reuse key: each
    row trains its own)."""
    from mmbench import registry

    plain = overrides_of("polymnist10-ablation", "smoke", model)
    fresh = overrides_of("polymnist10-ablation", "smoke", f"{model}-fresh")
    assert plain["reimpose"] == "sbmae" and fresh == {**plain, "reimpose": "fresh"}
    modalities = tuple(f"m{i}" for i in range(10))
    keys = [{s.name: s.reuse_key for s in registry.build(model, modalities, o).stages()} for o in (plain, fresh)]
    assert keys[0] == keys[1]
    assert all(keys[0][name] for name in [f"ae/m{i}" for i in range(10)] + ["score"])
    assert registry.build(model, modalities, fresh).config.reimpose == "fresh"


@pytest.mark.parametrize("suite", ["polymnist10", "polymnist5", "polymnist10-scaling", "polymnist10-incomplete",
                                   "celeba-twin", "celebamaskhq"])
def test_every_paper_budget_samples_the_sbm_rows_with_the_protocols_reimposition(suite):
    """PROTOCOL.md section 2 (revised 2026-12-01): the reference code's mode in every budget of the paper's suites."""
    spec = get_suite(suite)
    for budget in spec.budgets:
        for variant in spec.variants:
            if variant.model.startswith("sbm-"):
                resolved = model_overrides(budget, variant, "d" * 16, 0, model_cache.model_class(variant.model).Config)
                assert resolved["reimpose"] == "sbmae", (budget.name, variant.label)
