"""Fault injection: every kind of file a later run reuses, with a byte flipped, truncated, or without its
recorded sha256, is caught and named; what can be recomputed is moved aside (never deleted) and recomputed
with one line saying so, to the same values a clean run gives; data and classifiers are refused with the
command that rebuilds them (``mmbench.integrity``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_runner import _run, seed_classifiers, tiny_model, tiny_suite  # noqa: F401 (tiny_model: a fixture)
from test_sbm import tiny
from test_trainer import Tiny, TinyConfig, assert_same_state, stop_after

from classifiers.nets import build_classifier
from classifiers.store import ClassifierHashError, load_classifier, save_classifier
from mmbench import integrity, paths, registry
from mmbench.data import store
from mmbench.data.store import DatasetIntegrityError, labels_path, staging, write_manifest
from mmbench.data.synthetic import make_patterns
from mmbench.metrics.samples import SampleCache
from mmbench.persist import load_model, save_model
from mmbench.runner.data import DataRef, ensure_dataset, load_splits
from mmbench.seeding import seed_everything
from mmbench.suites.spec import DatasetSpec
from mmbench.training.artifacts import ArtifactStore
from mmbench.training.trainer import TrainerOptions, TrainingStopped, train_model

pytestmark = pytest.mark.usefixtures("one_cpu_thread")
FAULTS = ("flip", "truncate", "no-record")


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Invert one byte (default: the middle one) in place."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def inject(fault: str, path: Path) -> bytes:
    """Damage ``path`` (flip a byte, cut it in half, or drop its sha256 record); returns its bytes after."""
    if fault == "flip":
        flip_byte(path)
    elif fault == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        integrity.sidecar(path).unlink(missing_ok=True)
    return path.read_bytes()


def set_aside_copies(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.glob(f"{path.name}.corrupt-*") if not p.name.endswith(".sha256"))


def one_line_naming(capsys, path: Path, action: str) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if "failed verification" in line]
    assert len(lines) == 1, lines
    assert str(path) in lines[0] and action in lines[0]
    return lines[0]


# ------------------------------------------------------------------------------ shared stages (SBM-VAE-C)


@pytest.fixture(scope="module")
def patterns():
    return make_patterns(3, n=32, seed=0)


def _train_sbm(name: str, data, store: ArtifactStore, workdir: Path):
    torch.manual_seed(0)
    model = tiny(name, data_id=data.data_hash, score_steps=3)
    options = TrainerOptions(workdir=workdir, config_hash=name, quiet=True, artifacts=store)
    return model, train_model(model, data, None, options)


@pytest.fixture(scope="module")
def sbm_vae_store(patterns, tmp_path_factory):
    """A store holding SBM-VAE's stages (autoencoders and score net), and the SBM-VAE model trained."""
    root = tmp_path_factory.mktemp("sbm_store")
    model, _ = _train_sbm("sbm-vae", patterns, ArtifactStore(root / "artifacts"), root / "work")
    return root / "artifacts", model


def _stage_file(store: ArtifactStore, stage: str) -> Path:
    for path in sorted(store.root.glob("*.pt")):
        if torch.load(path, weights_only=True)["meta"]["stage"] == stage:  # an intact file, just written
            return path
    raise AssertionError(f"no stored stage {stage}")


@pytest.mark.parametrize("fault", FAULTS)
def test_a_damaged_shared_stage_is_retrained_by_sbm_vae_c(fault, patterns, sbm_vae_store, tmp_path, capsys):
    """The issue's case: SBM-VAE-C reused a bit-flipped score net from the store and scored a wrong FID."""
    source, sbm_vae = sbm_vae_store
    store = ArtifactStore(shutil.copytree(source, tmp_path / "artifacts"))
    score_file = _stage_file(store, "score")
    damaged = inject(fault, score_file)
    capsys.readouterr()
    model, reports = _train_sbm("sbm-vae-c", patterns, store, tmp_path / "work")
    one_line_naming(capsys, score_file, "training it again")
    reused = {r.name for r in reports if r.reused}
    assert "score" not in reused and {"ae/m0", "ae/m1", "ae/m2"} <= reused
    assert_same_state(model.score_net, sbm_vae.score_net)  # retrained to exactly what SBM-VAE trained
    (aside,) = set_aside_copies(score_file)
    assert aside.read_bytes() == damaged  # moved, not deleted
    integrity.verify_file(score_file)  # the retrained stage is stored again, with its record


def test_a_damaged_stored_stage_loads_as_none_with_the_line_naming_it(tmp_path, capsys):
    """``ArtifactStore.load`` of a flipped stage: None (the job trains it again), the file moved aside, and
    the one line says what the file is, where it went and what happens next."""
    store = ArtifactStore(tmp_path / "artifacts")
    store.save("score-1", {"w": torch.ones(64)}, {})
    path = store.path("score-1")
    damaged = inject("flip", path)
    capsys.readouterr()
    assert store.load("score-1") is None
    line = one_line_naming(capsys, path, "training it again")
    (aside,) = set_aside_copies(path)
    assert aside.read_bytes() == damaged
    assert line.startswith(f"mmbench: stored stage {path} failed verification (")
    assert line.endswith(f"; moved to {aside}; training it again")


# ------------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("fault", FAULTS)
def test_a_damaged_checkpoint_restarts_its_stage(fault, tmp_path, capsys):
    """A truncated checkpoint failed every rerun with PyTorch's raw "PytorchStreamReader failed"."""
    data = make_patterns(2, n=32, seed=0)

    def build() -> Tiny:
        seed_everything(0)
        return Tiny(("m0", "m1"), TinyConfig())

    def options(workdir: Path, **kw) -> TrainerOptions:
        return TrainerOptions(workdir=workdir, config_hash="h1", seed=0, quiet=True, **kw)

    reference = build()
    train_model(reference, data, None, options(tmp_path / "clean"))
    with pytest.raises(TrainingStopped):  # stop inside stage "recon": its checkpoint holds step 3
        train_model(build(), data, None, options(tmp_path / "work", should_stop=stop_after(3)))
    checkpoint = tmp_path / "work" / "checkpoints" / "recon.pt"
    damaged = inject(fault, checkpoint)
    capsys.readouterr()
    resumed = build()
    train_model(resumed, data, None, options(tmp_path / "work"))
    one_line_naming(capsys, checkpoint, "restarts from step 0")
    assert len(resumed.recon_calls) == TinyConfig().steps  # recon trained all its steps again
    assert_same_state(resumed, reference)
    (aside,) = set_aside_copies(checkpoint)
    assert aside.read_bytes() == damaged


# ------------------------------------------------------------------------------------------ sample cache


def _cache(root: Path, data) -> SampleCache:
    model = registry.build("dummy", ("m0", "m1", "m2"), {})
    return SampleCache(root, model, data, n_unconditional=8, batch_size=12, seed=0, k_curves=False)


@pytest.mark.parametrize("fault", ("flip", "truncate", "no-record", "extra-array"))
def test_a_damaged_sample_array_is_generated_again(fault, tmp_path, capsys):
    data = make_patterns(3, n=24, seed=1)
    first = np.array(_cache(tmp_path, data).conditional(["m1", "m2"], "m0"))
    (folder,) = tmp_path.glob("loo-*")
    (array,) = [p for p in folder.glob("*__m0.npy") if not p.name.startswith(("inferred__", "encoded__"))]
    if fault == "flip":
        flip_byte(array, array.stat().st_size - 1)  # a pixel of the last sample, past the .npy header
    elif fault == "truncate":
        array.write_bytes(array.read_bytes()[:-100])
    elif fault == "no-record":  # a group written before the hashes were recorded
        manifest = (folder / "manifest.json").read_text()
        (folder / "manifest.json").write_text(manifest.replace('"sha256"', '"old"'))
    else:
        np.save(folder / "stray.npy", np.zeros(3))
    capsys.readouterr()
    again = np.array(_cache(tmp_path, data).conditional(["m1", "m2"], "m0"))
    line = one_line_naming(capsys, folder, "generating them again")
    if fault in ("flip", "truncate"):
        assert array.name in line
    np.testing.assert_array_equal(again, first)
    (aside,) = set_aside_copies(folder)
    assert (aside / "manifest.json").is_file()
    assert (folder / "manifest.json").is_file()


# -------------------------------------------------------------------------------------- FID statistics


@pytest.mark.parametrize("fault", FAULTS)
def test_damaged_fid_statistics_are_computed_again(fault, capsys):
    from mmbench.metrics.fid import real_statistics

    rng = np.random.default_rng(0)
    features = rng.normal(size=(100, 6))
    calls = []

    def extract(key, images):
        calls.append(key)
        return features

    ctx = SimpleNamespace(extractor_identity=SimpleNamespace(name="test", weights_sha256="0" * 64), features=extract)
    images = rng.integers(0, 256, size=(100, 1, 4, 4), dtype=np.uint8)
    first = real_statistics(ctx, images, "data", "m0")
    damaged = inject(fault, first.path)
    capsys.readouterr()
    again = real_statistics(ctx, images, "data", "m0")
    one_line_naming(capsys, first.path, "computing them again")
    assert len(calls) == 2
    for key in ("mu", "sigma"):
        np.testing.assert_array_equal(again.stats[key], first.stats[key])
    np.testing.assert_array_equal(again.features, first.features)
    (aside,) = set_aside_copies(first.path)
    assert aside.read_bytes() == damaged
    assert real_statistics(ctx, images, "data", "m0").path == first.path and len(calls) == 2  # verified reuse


# ------------------------------------------------------------------------------------------- classifiers


@pytest.mark.parametrize("fault", ("flip", "truncate", "no-sidecar", "garbled-sidecar"))
def test_a_damaged_classifier_is_refused_with_the_command_that_rebuilds_it(fault, tmp_path):
    record = save_classifier(build_classifier("pmclf"), "polymnist3-eval", {}, tmp_path)
    sidecar = tmp_path / "polymnist3-eval.json"
    if fault == "no-sidecar":
        sidecar.unlink()
    elif fault == "garbled-sidecar":
        sidecar.write_text(sidecar.read_text()[:20])
    else:
        inject(fault, record.path)
    with pytest.raises(ClassifierHashError) as caught:
        load_classifier("polymnist3-eval", tmp_path)
    message = str(caught.value)
    assert str(record.path) in message
    assert f"mmbench classifier train --dataset polymnist3 --role eval --out {tmp_path} --force" in message
    if fault == "no-sidecar":  # a known hash given explicitly still verifies it
        assert load_classifier(record.path, expected_sha256=record.sha256)[1].sha256 == record.sha256


# ------------------------------------------------------------------------------------------- data arrays


def _stored_dataset(name: str) -> Path:
    """A tiny two-modality dataset under MMBENCH_HOME, as ``mmbench data prepare`` lays it out."""
    target = paths.dataset_dir(name)
    with staging(target) as tmp:
        for split, seed in (("train", 0), ("val", 1), ("test", 2)):
            data = make_patterns(2, n=40, seed=seed)
            (tmp / split).mkdir()
            np.save(labels_path(tmp, split), np.asarray(data.labels))
            for m in ("m0", "m1"):
                np.save(tmp / split / f"{m}.npy", np.asarray(data.images[m]))
        rebuild = "mmbench data prepare --dataset polymnist --modalities 2 --seed 0 --force"
        write_manifest(tmp, {"name": name, "modalities": ["m0", "m1"], "rebuild": rebuild})
    return target


def _flip_keeping_mtime(array: Path, offset: int) -> None:
    stat = array.stat()
    time.sleep(0.05)  # past the file system's timestamp granularity
    flip_byte(array, offset)
    os.utime(array, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the case: mtime restored
    assert array.stat().st_mtime_ns == stat.st_mtime_ns and array.stat().st_size == stat.st_size


def _refused(ref: DataRef, root: Path, rel: str) -> str:
    with pytest.raises(DatasetIntegrityError) as caught:
        load_splits(ref)
    message = str(caught.value)
    assert str(root) in message and rel in message
    assert "mmbench data prepare --dataset polymnist --modalities 2" in message and "--force" in message
    return message


@pytest.mark.parametrize("fault", ("flip-keeping-mtime", "truncate"))
def test_a_damaged_data_array_is_refused_when_a_job_loads_it(fault):
    root = _stored_dataset("polymnist2")
    ref = DataRef("polymnist", "polymnist2", ("m0", "m1"), 24, None, None, "h", "h")
    clean = load_splits(ref)
    assert len(clean[0]) == 24
    array = root / "train" / "m1.npy"
    if fault == "truncate":
        array.write_bytes(array.read_bytes()[:-10])
    else:
        _flip_keeping_mtime(array, 128 + 2352 * 3 + 7)  # a pixel of row 3, which the stratified subset reads
    _refused(ref, root, "train/m1.npy")


def test_a_job_hashes_the_blocks_it_reads_and_verify_hashes_all(monkeypatch):
    """Block hashes (4 KiB here): a flip in a row the job's subset skips is not read, so not reported by
    the job; ``verify_dataset`` hashes every byte and reports it."""
    monkeypatch.setattr(store, "BLOCK_BYTES", 4096)
    root = _stored_dataset("polymnist2")
    ref = DataRef("polymnist", "polymnist2", ("m0", "m1"), 24, None, None, "h", "h")
    array = root / "train" / "m0.npy"
    labels = np.load(root / "train" / "labels.npy")
    unread = int(np.setdiff1d(np.arange(len(labels)), store.stratified_rows(labels, 24))[-1])
    _flip_keeping_mtime(array, 128 + 2352 * unread + 5)
    assert len(load_splits(ref)[0]) == 24
    problems = store.verify_dataset(root)[1]
    assert len(problems) == 1 and problems[0].startswith("train/m0.npy: sha256")
    full = DataRef("polymnist", "polymnist2", ("m0", "m1"), None, None, None, "h", "h")
    _refused(full, root, "train/m0.npy")


def test_a_dataset_without_block_hashes_is_hashed_whole_until_verify_records_them(capsys):
    root = _stored_dataset("polymnist2")
    manifest = json.loads((root / "manifest.json").read_text())
    for entry in manifest["files"].values():
        del entry["blocks"]
    (root / "manifest.json").write_text(json.dumps(manifest))  # as written before block hashes
    ref = DataRef("polymnist", "polymnist2", ("m0", "m1"), 24, None, None, "h", "h")
    load_splits(ref)
    assert "predates block hashes" in capsys.readouterr().err
    said: list[str] = []
    ensure_dataset(DatasetSpec("polymnist", "polymnist2", 2), said.append)  # what `mmbench run` does first
    assert len(said) == 1 and "hashing it once to record them" in said[0]
    assert all("blocks" in e for e in json.loads((root / "manifest.json").read_text())["files"].values())
    _flip_keeping_mtime(root / "val" / "m0.npy", 1000)
    _refused(ref, root, "val/m0.npy")


# ------------------------------------------------------------------------------------- saved job models


@pytest.mark.parametrize("fault", FAULTS)
def test_a_damaged_saved_model_is_refused_before_unpickling(fault, tmp_path):
    model = registry.build("dummy", ("m0", "m1"), {})
    path = tmp_path / "model.pt"
    save_model(model, path, "dummy")
    assert load_model(path).modalities == model.modalities
    inject(fault, path)
    with pytest.raises(integrity.IntegrityError, match=str(path)):
        load_model(path)


# ------------------------------------------------------------------------------------------- the module


def test_replacing_a_file_never_leaves_it_unmatched_by_its_record(tmp_path, monkeypatch):
    """While the file itself is replaced, its record lists the old and the new digest."""
    path = tmp_path / "f.bin"
    integrity.write_bytes(path, b"old")
    during = []
    original = integrity.atomic.write_bytes

    def spy(target, data):
        if Path(target) == path:
            during.append(integrity.recorded(path))
        original(target, data)

    monkeypatch.setattr(integrity.atomic, "write_bytes", spy)
    integrity.write_bytes(path, b"new")
    assert [set(d) for d in during] == [{integrity.sha256_bytes(b"old"), integrity.sha256_bytes(b"new")}]
    assert integrity.recorded(path) == [integrity.sha256_bytes(b"new")]
    assert integrity.read_bytes(path) == b"new"


# ------------------------------------------------------------------------------------------- through run


@pytest.mark.usefixtures("tiny_model")
def test_a_run_retrains_a_damaged_shared_stage_and_finishes(_isolated_home, capsys):
    """End to end: a second row sharing the first row's stages meets a bit-flipped one in the store."""
    from mmbench import tracking
    from mmbench.suites import unregister_suite
    from mmbench.suites.spec import Variant, overrides

    seed_classifiers(_isolated_home)
    tiny_suite("t-integrity", (Variant("ae", "tiny-ae"),))
    first, _ = _run("t-integrity", _isolated_home)
    assert [o.status for o in first.outcomes] == ["FINISHED"]
    stage_file = _stage_file(ArtifactStore(paths.artifacts_dir()), "ae/m0")
    flip_byte(stage_file)
    capsys.readouterr()
    tiny_suite("t-integrity", (Variant("ae", "tiny-ae"), Variant("ae-noisy", "tiny-ae", overrides(sample_noise=0.1))))
    second, _ = _run("t-integrity", _isolated_home)
    (outcome,) = second.outcomes
    assert outcome.title == "ae-noisy seed 0" and outcome.status == "FINISHED"
    one_line_naming(capsys, stage_file, "training it again")
    metrics = tracking.Store(f"sqlite:///{_isolated_home / 'store.db'}").run(outcome.run_id).metrics
    assert metrics["stage/ae/m0/reused"] == 0.0  # retrained, not loaded
    assert metrics["stage/ae/m1/reused"] == metrics["stage/ae/m2/reused"] == 1.0
    assert len(set_aside_copies(stage_file)) == 1
    unregister_suite("t-integrity")


def _killed_writer(target: Path) -> Path:
    """Start a process that writes ``target`` through ``atomic_path``, kill it (SIGKILL) mid-write and return
    the temporary folder it left beside the target."""
    import signal
    import subprocess
    import sys

    code = ("import sys, time\nfrom mmbench import atomic\nwith atomic.atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'half')\n    print('writing', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (left,) = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
    return left


def test_temporary_folders_of_killed_writers_are_swept_and_others_stay(tmp_path):
    """A writer killed outright leaves its hidden temporary folder; the sweep removes it, and keeps those of
    live processes (this one) and of other machines, and everything else."""
    from mmbench import atomic

    left = _killed_writer(tmp_path / "joint.pt")
    with atomic.atomic_path(tmp_path / "live.npy") as mine:  # this process is still writing it
        mine.write_bytes(b"x")
        other_machine = tmp_path / ".m0.npy.00000000-1.abcd_123.tmp"
        other_machine.mkdir()
        (tmp_path / "kept.npy").write_bytes(b"y")
        assert atomic.sweep_stale(tmp_path) == [left]
        assert not left.exists() and mine.parent.exists() and other_machine.exists() and (tmp_path / "kept.npy").exists()
    assert (tmp_path / "live.npy").read_bytes() == b"x" and not (tmp_path / "joint.pt").exists()


def test_a_rerun_sweeps_what_a_killed_job_left_in_its_checkpoints_and_sample_sets(tmp_path):
    """The trainer sweeps its checkpoint folder, the sample cache its folder, the artifact store its root."""
    checkpoints, samples, store = tmp_path / "run" / "checkpoints", tmp_path / "samples", tmp_path / "store"
    for folder in (checkpoints, samples, store):
        folder.mkdir(parents=True)
    stale = [_killed_writer(checkpoints / "recon.pt"), _killed_writer(samples / "loo-abc"),
             _killed_writer(store / "k.pt")]
    data = make_patterns(2, n=32, seed=0)
    ArtifactStore(store)
    train_model(Tiny(("m0", "m1"), TinyConfig()), data, None,
                TrainerOptions(workdir=tmp_path / "run", config_hash="h", quiet=True))
    SampleCache(samples, tiny("sbm-vae"), make_patterns(3, n=8, seed=1), n_unconditional=2, batch_size=4, seed=0)
    assert not any(p.exists() for p in stale)
