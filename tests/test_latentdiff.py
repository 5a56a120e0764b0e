"""The latent-diffusion package shared by SBM and MLD: who may import whom, and the autoencoder stage both
models declare once (``AutoencoderConfig``), with reuse keys equal across models and stable across versions."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from baselines.mld.model import MLDConfig
from latentdiff.autoencoders import AESpec, AutoencoderConfig
from mmbench import registry
from sbm.model import SBMConfig

ROOT = Path(__file__).resolve().parents[1]
MODALITIES = ("m0", "m1", "m2")
SMALL = {  # the models' own fields, small enough to build in milliseconds
    "sbm": {"dim": 8, "dim_mults": (1,), "attn_heads": 2, "attn_dim_head": 8, "energy_width": 16,
            "aux_width": 0.125, "aux_proj_dim": 16},
    "mld": {"dim": 16, "time_dim": 16, "groups": 4},
}


def imported_modules(path: Path) -> Iterator[str]:
    """Every absolute module name a source file imports (``import a.b``, ``from a.b import c``)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def imports_of(package: str, forbidden: tuple[str, ...]) -> list[str]:
    """``path: module`` for each import of a ``forbidden`` package (or a module of it) under ``package``."""
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    return [f"{path.relative_to(ROOT)}: {module}" for path in files for module in imported_modules(path)
            if module.split(".")[0] in forbidden]


def test_no_baseline_imports_the_method_under_test():
    assert imports_of("baselines", ("sbm",)) == []


def test_the_shared_package_imports_neither_model():
    assert imports_of("latentdiff", ("sbm", "baselines")) == []


def test_the_import_check_sees_every_form_of_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import sbm\nimport os, sbm.model as m\nfrom sbm.sde import VPSDE\nfrom . import sbm\n"
                      "def f():\n    from sbm import guidance\n")
    assert list(imported_modules(source)) == ["sbm", "os", "sbm.model", "sbm.sde", "sbm"]


def build(name: str, **fields):
    own = SMALL["mld" if name == "mld" else "sbm"]
    return registry.build(name, MODALITIES, {"width": 0.125, "latent_dim": 16, **own, **fields})


def ae_keys(model) -> dict[str, str | None]:
    return {s.name: s.reuse_key for s in model.stages() if s.name.startswith("ae/")}


def test_both_models_declare_the_autoencoder_fields_once():
    shared = [f.name for f in dataclasses.fields(AutoencoderConfig)]
    assert {"data_id", "seed", "latent_dim", "width", "ae_steps", "ae_lr", "ae_batch_size"} <= set(shared)
    for config in (SBMConfig, MLDConfig):
        assert issubclass(config, AutoencoderConfig)
        defaults = {f.name: f.default for f in dataclasses.fields(config) if f.name in shared}
        assert defaults == {f.name: f.default for f in dataclasses.fields(AutoencoderConfig)}, config.__name__


CHANGES = [("seed", 2), ("data_id", "d2"), ("latent_dim", 4), ("width", 0.25), ("rae_l2", 1e-3),
           ("rae_noise_var", 0.02), ("ae_steps", 3), ("ae_lr", 2e-3), ("ae_batch_size", 8)]


@pytest.mark.parametrize(("field", "value"), CHANGES)
def test_mld_and_sbm_rae_share_autoencoders_for_equal_fields(field, value):
    """Equal AutoencoderConfig fields, equal keys, whatever else differs; a changed field, new keys."""
    before = ae_keys(build("mld", data_id="d1"))
    changed = {"data_id": "d1", field: value}
    mld = ae_keys(build("mld", **changed))
    assert all(mld.values()) and set(mld.values()).isdisjoint(before.values())
    for name in ("sbm-rae", "sbm-rae-c", "sbm-rae-t"):
        assert ae_keys(build(name, **changed, score_steps=7, energy_gamma=5.0)) == mld, name


def test_sbm_vae_shares_the_fields_but_not_the_family():
    """SBM-VAE reads the same AutoencoderConfig fields into its spec; its keys differ from MLD's by family only."""
    vae, mld = build("sbm-vae", data_id="d1"), build("mld", data_id="d1")
    assert dataclasses.replace(vae.ae_spec, family="rae", vae_beta=None) == mld.ae_spec
    assert set(ae_keys(vae).values()).isdisjoint(ae_keys(mld).values())


# Keys of autoencoders already in artifact stores (computed before the autoencoders moved out of sbm/):
# changing one orphans every stored autoencoder. Change them only with a new STAGE_VERSIONS entry.
STORED_AE_KEYS = {
    "sbm-vae": "6df1f68dfb410af39f102a58d7d15599",
    "sbm-rae": "33269ca03926598fd5ff984c0b9b47ba",
    "mld": "33269ca03926598fd5ff984c0b9b47ba",
}
STORED_SCORE_KEYS = {"sbm-vae": "664138212e2a8f4fd03d3d70f5bf32c5", "sbm-rae": "b5e61348cce077ee41c7324184233055"}


@pytest.mark.parametrize("name", sorted(STORED_AE_KEYS))
def test_default_reuse_keys_are_the_stored_ones(name):
    model = registry.build(name, MODALITIES, {"data_id": "d1", "seed": 0})
    keys = {s.name: s.reuse_key for s in model.stages()}
    assert keys["ae/m0"] == STORED_AE_KEYS[name]
    assert keys["score"] == STORED_SCORE_KEYS.get(name)  # MLD's score stage is never shared


def test_the_spec_needs_the_shared_config_and_a_vae_beta_for_vaes():
    lookalike = SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(AutoencoderConfig)})
    with pytest.raises(TypeError, match="AutoencoderConfig"):
        AESpec.from_config(lookalike, "rae")
    assert AESpec.from_config(MLDConfig(), "rae").vae_beta is None
    with pytest.raises(ValueError, match="vae_beta"):
        AESpec.from_config(MLDConfig(), "vae")
    assert AESpec.from_config(SBMConfig(vae_beta=0.5), "vae").vae_beta == 0.5
