"""Paper Table 1 on CelebA-shaped data: the given-one queries and their keys, the supervised reference row,
``MultimodalModel.answers``, the ``conditional_attributes`` table and the Fig. 10 joint samples."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from benchmark_modules import load_benchmark

from mmbench.data.celebatwin import ATTRIBUTES, generate_split
from mmbench.data.dataset import MultimodalDataset
from mmbench.metrics.base import expected_keys, higher_is_better
from mmbench.metrics.catalog import conditional_groups, given_one_pairs, planned_generation

pytestmark = pytest.mark.usefixtures("one_cpu_thread")
KINDS = {"image": "image", "mask": "mask", "attributes": "attributes"}
NAMES = list(KINDS)


def twin(split: str, n: int) -> MultimodalDataset:
    arrays, labels = generate_split(0, split, n)
    return MultimodalDataset(arrays, labels, f"celeba-twin.{split}", f"twin-0-{split}-{n}",
                             {"mask": "mask", "attributes": "attributes"})


def build(name: str, data: MultimodalDataset, **overrides):
    from mmbench import registry
    from mmbench.nets.modality import specs_of
    from mmbench.seeding import seed_everything

    seed_everything(0)
    return registry.build(name, data.modalities, {"width": 0.125, **overrides}, specs_of(data))


def settings(**changes):
    from mmbench.metrics.settings import EvalSettings

    return EvalSettings(**{"n_conditional": 24, "n_unconditional": 8, "batch_size": 24, "grid_size": 4, "kid": False,
                           **changes})


# --- the plan and the keys -------------------------------------------------------------------------------


def test_given_one_queries_only_on_attribute_data_with_three_modalities():
    assert given_one_pairs({f"m{i}": "image" for i in range(5)}) == []  # PolyMNIST: nothing new
    assert given_one_pairs({"image": "image", "attributes": "attributes"}) == []  # two: given one = loo
    assert sorted(given_one_pairs(KINDS)) == sorted(((g,), t) for g in NAMES for t in NAMES if t != g)
    poly = conditional_groups([f"m{i}" for i in range(5)], True, (), kinds={f"m{i}": "image" for i in range(5)})
    assert [g.name for g in poly] == ["loo", "curves"]
    groups = {g.name: g for g in conditional_groups(NAMES, False, (), kinds=KINDS)}
    assert set(groups["given_one"].queries) == {
        (frozenset({m}), frozenset(set(NAMES) - {m})) for m in NAMES
    }
    # with the k-curves, image -> attributes and attributes -> image are asked there already
    curves = {g.name: g for g in conditional_groups(NAMES, True, (), kinds=KINDS)}
    asked = {(g, t) for q in curves["given_one"].queries for g, ts in [q] for t in ts}
    assert asked == {(frozenset({"image"}), "mask"), (frozenset({"mask"}), "image"),
                     (frozenset({"mask"}), "attributes"), (frozenset({"attributes"}), "mask")}


def test_keys_directions_and_the_cost_count_of_the_given_one_queries():
    from mmbench.runner import cost
    from mmbench.runner.data import DataRef

    s = settings(k_curves=False)
    f1 = expected_keys("f1", KINDS, s)
    assert {"f1/given/image/attributes", "f1/given/mask/attributes", "f1/given/image/mask",
            "f1/given/attributes/mask", "f1/loo/attributes", "f1/loo/mask"} <= set(f1)
    assert {"fid/given/mask/image", "fid/given/attributes/image"} <= set(expected_keys("fid", KINDS, s))
    assert not any("/given/" in k for k in expected_keys("fid", {f"m{i}": "image" for i in range(3)}, s))
    assert higher_is_better("f1/given/image/attributes") is True and higher_is_better("fid/given/mask/image") is False
    # 3 leave-one-out queries + 3 given-one queries (one per given modality) per tuple
    assert planned_generation(NAMES, ["f1"], s, 10, KINDS) == (6 * 10, 0)
    assert planned_generation(NAMES, ["f1"], s, 10) == (3 * 10, 0)
    data = DataRef("celeba-twin", "celeba-twin", tuple(NAMES), 8, 8, 20, "x", "y")
    job = SimpleNamespace(eval_settings=(("n_conditional", 10), ("n_unconditional", 8), ("k_curves", False)),
                          metrics=("f1", "fgsm", "unconditional_fid"), data=data, model="mopoe", overrides=())
    assert cost.evaluation_generation(job) == (60 + 30, 8)  # + the leave-one-out queries from attacked inputs
    # the supervised row: one query per tuple (the image given alone), no FGSM, no unconditional samples
    supervised = SimpleNamespace(**{**vars(job), "model": "supervised", "overrides": (("width", 0.125),)})
    assert cost.evaluation_generation(supervised) == (10, 0)


# --- evaluation on the twin --------------------------------------------------------------------------------


def _stored(workdir: Path) -> dict[str, np.ndarray]:
    """``{"<given>__<target>": samples}`` of every stored sample group, read straight from the files."""
    out = {}
    for path in sorted((workdir / "samples").glob("*/*__*.npy")):
        if not path.name.startswith(("inferred__", "encoded__")):
            out.setdefault(path.stem, np.load(path))
    return out


def test_f1_given_one_equals_an_independent_computation_from_the_cached_samples(tmp_path):
    from sklearn.metrics import f1_score

    from mmbench.metrics.pipeline import evaluate

    test = twin("test", 24)
    result = evaluate(build("mopoe", test), test, ["f1"], settings(), tmp_path)
    stored = _stored(tmp_path)
    for (given,), target in given_one_pairs(KINDS):
        if target == "image":
            continue
        truth = test.images[target].reshape(24, -1)
        generated = stored[f"{given}__{target}"].reshape(24, -1)
        if target == "attributes":
            truth, generated = truth > 127.5, generated > 127.5
        else:
            truth, generated = np.rint(truth / 255.0), np.rint(generated / 255.0)
        expected = f1_score(truth.astype(int), generated.astype(int), average="samples", zero_division=0)
        assert result.values[f"f1/given/{given}/{target}"] == pytest.approx(expected, abs=1e-12), (given, target)
    assert not result.skipped


def test_supervised_answers_only_image_to_attributes_and_mask_and_the_rest_is_recorded_skipped(tmp_path):
    from mmbench.contract import CapabilityError
    from mmbench.metrics.pipeline import evaluate

    test = twin("test", 24)
    model = build("supervised", test)
    assert model.answers(frozenset({"image"}), "attributes") and model.answers(frozenset({"image"}), "mask")
    assert not model.answers(frozenset({"image", "mask"}), "attributes")
    assert build("mopoe", test).answers(frozenset({"mask"}), "attributes")  # the default: every query
    batch, _ = test.batch(np.arange(4))
    with pytest.raises(CapabilityError, match="does not answer attributes given mask"):
        model.sample_conditional(batch, frozenset({"mask"}), frozenset({"attributes"}))
    result = evaluate(model, test, ["f1", "fid", "unconditional_fid"], settings(), tmp_path)
    assert set(result.values) == {"f1/given/image/attributes", "f1/given/image/mask"}
    assert result.skipped["f1/loo/attributes"] == "Supervised does not answer attributes given image+mask"
    assert "does not answer" in result.skipped["f1/loo/mean"]
    assert result.skipped["f1/given/mask/attributes"] == "Supervised does not answer attributes given mask"
    assert result.skipped["fid/given/attributes/image"] == "Supervised does not answer image given attributes"
    assert "unconditional" in result.skipped["unconditional_fid"]
    # only the two answered queries were generated
    assert set(_stored(tmp_path)) == {"image__attributes", "image__mask"}


def test_supervised_row_beats_the_majority_attribute_f1_after_a_short_training():
    """200 steps at width 0.125, batch 64 on 1,000 twin tuples (~19 s on one thread; measured 2026-12-01:
    0.583 untrained, 0.781 trained, majority floor 0.650 on 300 test tuples)."""
    bench = load_benchmark("bench_twin_models")
    train, test = bench.twin("train", 1000), bench.twin("test", 300)
    model = bench.build("supervised", train, {"width": 0.125, "steps": 200, "batch_size": 64})
    untrained = bench.attribute_f1_given_image(model, test)
    bench.train(model, train, "supervised")
    trained = bench.attribute_f1_given_image(model, test)
    floor = bench.majority_f1(train, test)
    assert trained > floor + 0.08 and trained > untrained + 0.1, (untrained, floor, trained)


# --- the report --------------------------------------------------------------------------------------------


def test_conditional_attributes_table_renders_with_explained_missing_cells():
    from mmbench.report import tables as tbl
    from mmbench.report.aggregate import Aggregate
    from mmbench.report.collect import Collected, _tidy
    from mmbench.suites import get_suite
    from mmbench.tracking import RunRecord

    suite = get_suite("celeba-twin")
    mopoe = {"f1/given/image/attributes": 0.6, "f1/given/mask/attributes": 0.55, "f1/loo/attributes": 0.62,
             "f1/given/image/mask": 0.4, "f1/given/attributes/mask": 0.3, "f1/loo/mask": 0.45,
             "fid/given/mask/image": 50.0, "fid/given/attributes/image": 60.0, "fid/loo/image": 45.0}
    values = {"mopoe": mopoe, "supervised": {"f1/given/image/attributes": 0.8, "f1/given/image/mask": 0.7}}
    runs = [RunRecord(f"{v}-0", "FINISHED", 0, None, {}, m, {"variant": v, "seed": "0", "suite_version": suite.version,
                                                            "model": v}, "") for v, m in values.items()]
    why = "Supervised does not answer attributes given mask"
    skipped = {"supervised": {"f1/given/mask/attributes": why}}
    directions = {k: higher_is_better(k) for k in mopoe}
    agg = Aggregate(Collected(suite, suite.budget("smoke"), "sqlite:///x.db", runs, _tidy(runs, suite), skipped, directions))
    table = tbl.build_table(tbl.TABLES["conditional_attributes"], agg)
    md = tbl.to_markdown(table, agg)
    header = next(line for line in md.splitlines() if line.startswith("| Model"))
    assert header.count("|") == 11 and "Attr. F1 (image) ↑" in header and "Image FID (both) ↓" in header
    row = next(line for line in md.splitlines() if line.startswith("| supervised"))
    cells = [c.strip() for c in row.split("|")[2:-1]]
    assert cells[0] == "**0.800**" and cells[3] == "**0.700**"
    assert cells[1] == "— [1]" and "0.000" not in row
    assert f"[1] {why}" in md
    assert "— [2]" in cells[2] and "no finished run of this row reported this key" in md
    assert "f1/given/mask/attributes" in tbl.to_csv(table) and r"\begin{tabular}" in tbl.to_latex(table, agg)


def _joint_npz(n: int = 3) -> bytes:
    rng = np.random.default_rng(0)
    attributes = np.zeros((n, len(ATTRIBUTES), 1, 1), np.uint8)
    attributes[0, [0, 3]] = 255
    buffer = io.BytesIO()
    np.savez(buffer, modality__image=rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
             modality__mask=rng.integers(0, 2, (n, 1, 32, 32), dtype=np.uint8) * 255, modality__attributes=attributes,
             kinds=np.asarray([f"{m}={k}" for m, k in KINDS.items()]), attribute_names=np.asarray(ATTRIBUTES))
    return buffer.getvalue()


def test_fig10_draws_image_mask_and_attribute_text_rows(tmp_path):
    from mmbench.report import fig10

    joint = fig10.read_joint(_joint_npz())
    assert joint.kinds == KINDS and joint.n == 3
    assert fig10.attribute_text(joint.arrays["attributes"][0], joint.attribute_names) == "circle\nred"
    assert fig10.attribute_text(joint.arrays["attributes"][1], joint.attribute_names) == "(none)"
    figure = fig10.figure({"mopoe": joint, "mld": joint})
    assert len(figure.axes) == 2 * 3 * 3
    assert figure.axes[0].get_ylabel() == "mopoe\nimage" and figure.axes[6].texts[0].get_text() == "circle\nred"
    drawn = fig10.draw({"mopoe": joint}, tmp_path, "budget smoke")
    assert [p.name for p in drawn.files] == ["fig10.png", "fig10.pdf"] and all(p.stat().st_size > 0 for p in drawn.files)
    assert "no run logged" in fig10.draw({}, tmp_path, "budget smoke").reason


def test_evaluation_writes_the_joint_samples_of_celeba_data(tmp_path):
    from mmbench.metrics.context import EvalContext
    from mmbench.metrics.pipeline import JOINT_SAMPLES, _grids
    from mmbench.report import fig10

    test = twin("test", 24)
    ctx = EvalContext(build("mopoe", test), test, test, dict(KINDS), settings(), tmp_path)
    ctx.cache.unconditional("image")  # what an unconditional metric generates first
    path = _grids(ctx)[JOINT_SAMPLES]
    joint = fig10.read_joint(path.read_bytes())
    assert joint.n == 4 and joint.kinds == KINDS and joint.attribute_names == ATTRIBUTES
    for m in NAMES:
        np.testing.assert_array_equal(joint.arrays[m], ctx.cache.unconditional(m)[:4])


def test_the_sample_cache_reads_the_kinds_from_the_data(tmp_path):
    """The twin declares only its mask and attribute kinds; the image is an image by default."""
    from mmbench.metrics.samples import SampleCache

    test = twin("test", 8)
    cache = SampleCache(tmp_path, build("mopoe", test), test, n_unconditional=4, batch_size=8, seed=0, k_curves=False)
    assert [g.name for g in cache.groups.values()] == ["loo", "given_one"]
