"""CelebAMask-HQ from a miniature release in the official layout, and the celeba-twin dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mmbench.data import celebamaskhq as hq
from mmbench.data.celebatwin import ATTRIBUTES, build_celeba_twin, generate_split
from mmbench.data.store import DatasetIntegrityError, load_dataset, read_manifest, verify_dataset

CELEBA_40 = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
# ids spread over three mask folders (k = id // 2000) and every CelebA partition
IDS = [*range(0, 14), *range(1995, 2005), *range(4000, 4012)]
SPARSE = {3: ("skin",), 5: ("hair", "nose")}  # id 3: only skin annotated (empty mask); id 5: two parts


BOUNDARY = {6: 162_769, 7: 162_770}  # CelebA files 162770.jpg (the last train image) and 162771.jpg (the first val)


def _orig_index(i: int) -> int:
    """A CelebA index per CelebA-HQ id (0-based): a third of the ids in each of train, val and test."""
    return BOUNDARY.get(i, (1000 + i, 170_000 + i, 190_000 + i)[i % 3])


def _split(i: int) -> str:
    """CelebA's partition: files 000001-162770 train, 162771-182637 val, 182638-202599 test."""
    file_number = _orig_index(i) + 1
    return "train" if file_number <= 162_770 else "val" if file_number <= 182_637 else "test"


def _part_box(i: int, p: int) -> tuple[int, int, int, int]:
    top, left = (37 * i + 53 * p) % 448, (29 * i + 71 * p) % 448
    return top, left, top + 48 + 8 * (p % 4), left + 40 + 8 * (i % 5)


def _parts(i: int) -> tuple[str, ...]:
    return SPARSE.get(i, hq.ALL_PARTS[: 3 + i % 8])


def make_release(root: Path, ids: list[int] = IDS) -> Path:
    """A miniature CelebAMask-HQ release in the official layout (synthetic pixels)."""
    rng = np.random.default_rng(0)
    (root / hq.IMAGE_DIR).mkdir(parents=True)
    for i in ids:
        pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((256, 256)).save(root / hq.IMAGE_DIR / f"{i}.jpg", quality=95)
        for p, part in enumerate(_parts(i)):
            mask = np.zeros((512, 512, 3), dtype=np.uint8)
            t, left, b, r = _part_box(i, p)
            mask[t:b, left:r] = 255
            path = hq.mask_file(root, i, part)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(path)
    values = np.where(rng.random((len(ids), 40)) < 0.4, 1, -1)
    lines = [str(len(ids)), " ".join(CELEBA_40)]
    lines += [f"{i}.jpg  " + " ".join(str(v) for v in row) for i, row in zip(ids, values, strict=True)]
    (root / hq.ATTRIBUTE_FILE).write_text("\n".join(lines) + "\n")
    mapping = ["idx         orig_idx  orig_file"]
    mapping += [f"{i:<12d}{_orig_index(i):<10d}{_orig_index(i) + 1:06d}.jpg" for i in ids]
    (root / hq.MAPPING_FILE).write_text("\n".join(mapping) + "\n")
    partition = [f"{k:06d}.jpg {0 if k <= 162_770 else 1 if k <= 182_637 else 2}" for k in
                 sorted({_orig_index(i) + 1 for i in ids})]
    (root / hq.PARTITION_FILE).write_text("\n".join(partition) + "\n")
    return root


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return make_release(tmp_path_factory.mktemp("celebamaskhq") / "CelebAMask-HQ")


@pytest.fixture(scope="module")
def prepared(release, tmp_path_factory) -> Path:
    return hq.build_celebamaskhq(release, tmp_path_factory.mktemp("out") / "celebamaskhq")


def _expected_mask(i: int) -> np.ndarray:
    """The union of the non-skin parts, drawn independently, at 512 then majority of each 4x4 block."""
    union = np.zeros((512, 512), dtype=bool)
    for p, part in enumerate(_parts(i)):
        if part != "skin":
            t, left, b, r = _part_box(i, p)
            union[t:b, left:r] = True
    return union.reshape(128, 4, 128, 4).mean(axis=(1, 3)) >= 0.5


def test_the_release_becomes_three_modalities_split_by_celeba_partition(release, prepared):
    manifest = read_manifest(prepared)
    assert manifest["modalities"] == ["image", "mask", "attributes"]
    assert manifest["modality_kinds"] == {"image": "image", "mask": "mask", "attributes": "attributes"}
    expected_ids = {s: [i for i in IDS if _split(i) == s] for s in ("train", "val", "test")}
    assert 6 in expected_ids["train"] and 7 in expected_ids["val"]  # the partition file decides, by file name
    assert {s: manifest["splits"][s]["size"] for s in expected_ids} == {s: len(v) for s, v in expected_ids.items()}
    assert manifest["attribute_names"] == ["Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Bushy_Eyebrows",
                                           "Eyeglasses", "Gray_Hair", "Heavy_Makeup", "Male", "Mouth_Slightly_Open",
                                           "Mustache", "Pale_Skin", "Receding_Hairline", "Smiling", "Straight_Hair",
                                           "Wavy_Hair", "Wearing_Hat"]
    rows = {int(line.split()[0][:-4]): line.split()[1:] for line in
            (release / hq.ATTRIBUTE_FILE).read_text().splitlines()[2:]}
    for split, ids in expected_ids.items():
        data = load_dataset(prepared, split, verify=True)
        assert data.modality_kinds == {"mask": "mask", "attributes": "attributes", "image": "image"}
        assert data.images["image"].shape == (len(ids), 3, 128, 128)
        assert data.images["mask"].shape == (len(ids), 1, 128, 128)
        assert data.images["attributes"].shape == (len(ids), 18, 1, 1)
        for row, i in enumerate(ids):  # rows are in CelebA-HQ id order
            attrs = [int(rows[i][k]) for k in hq.ATTRIBUTE_INDICES]
            assert (data.images["attributes"][row, :, 0, 0] == [255 if a == 1 else 0 for a in attrs]).all()
            assert set(np.unique(data.images["mask"][row])) <= {0, 255}
            assert ((data.images["mask"][row, 0] == 255) == _expected_mask(i)).all(), f"mask of id {i}"
            with Image.open(release / hq.IMAGE_DIR / f"{i}.jpg") as im:
                resized = np.asarray(im.convert("RGB").resize((128, 128), Image.Resampling.BILINEAR))
            assert (data.images["image"][row] == resized.transpose(2, 0, 1)).all()


def test_skin_is_not_in_the_mask(prepared):
    data = load_dataset(prepared, "train")
    row = [i for i in IDS if _split(i) == "train"].index(3)
    assert data.images["mask"][row].max() == 0  # id 3 has only a skin annotation
    assert verify_dataset(prepared)[1] == []


@pytest.mark.parametrize(("damage", "message"), [
    (lambda r: (r / hq.IMAGE_DIR / "1999.jpg").unlink(), r"missing 1 images .*1999\.jpg"),
    (lambda r: shutil.rmtree(r / hq.MASK_DIR / "2"), r"no part mask for 12 images, e\.g\. CelebAMask-HQ-mask-anno/2/04000_<part>\.png"),
    (lambda r: (r / hq.PARTITION_FILE).unlink(), r"missing list_eval_partition\.txt"),
    (lambda r: (r / hq.MAPPING_FILE).write_text("idx orig_idx orig_file\n0 1000 001001.jpg\n"), r"no row for ids \[1, 2"),
    (lambda r: (r / hq.ATTRIBUTE_FILE).write_text("36\n" + " ".join(CELEBA_40[:39]) + "\n"), r"names 39 attributes"),
])
def test_a_partial_release_is_refused_naming_what_is_missing(release, tmp_path, damage, message):
    copy = shutil.copytree(release, tmp_path / "release")
    damage(copy)
    with pytest.raises(hq.CelebAMaskHQError, match=message):
        hq.build_celebamaskhq(copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_prepare_command_reads_the_release(release, tmp_path):
    from mmbench.cli import main

    result = CliRunner().invoke(main, ["data", "prepare", "--dataset", "celebamaskhq", "--src", str(release),
                                       "--out", str(tmp_path / "hq")])
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / "hq")["rebuild"].startswith(f"mmbench data prepare --dataset celebamaskhq --src {release}")
    missing = CliRunner().invoke(main, ["data", "prepare", "--dataset", "celebamaskhq"])
    assert missing.exit_code != 0 and "needs --src" in missing.output


# ------------------------------------------------------------------------------------------- the twin


def test_twin_modalities_share_their_factors():
    arrays, labels = generate_split(0, "train", 600)
    attrs = arrays["attributes"][:, :, 0, 0] > 0
    mask = arrays["mask"][:, 0] > 0
    named = dict(zip(ATTRIBUTES, attrs.T, strict=True))
    # the label is which shapes are present; the attributes say the same
    assert (labels + 1 == named["circle"] * 1 + named["square"] * 2 + named["triangle"] * 4).all()
    assert (named["several"] == (attrs[:, :3].sum(axis=1) >= 2)).all()
    # the mask: shapes in the top / left half exactly when the attributes say so
    assert (mask[:, :16].any(axis=(1, 2)) == named["top"]).all()
    assert (mask[:, :, :16].any(axis=(1, 2)) == named["left"]).all()
    # the image: a shape's colour dominates its mask's pixels (red channel high where red is the only colour)
    only_red = named["red"] & ~named["green"] & ~named["blue"]
    red = arrays["image"][only_red, 0][mask[only_red]].astype(float).mean()
    assert red > 200 and arrays["image"][only_red, 2][mask[only_red]].mean() < 80
    # every attribute varies (neither always on nor always off)
    assert (attrs.mean(axis=0) > 0.2).all() and (attrs.mean(axis=0) < 0.8).all()


def test_twin_is_seeded_and_stored_like_polymnist(tmp_path):
    a = build_celeba_twin(seed=3, out=tmp_path / "a")
    b = build_celeba_twin(seed=3, out=tmp_path / "b")
    c = build_celeba_twin(seed=4, out=tmp_path / "c")
    assert read_manifest(a)["data_hash"] == read_manifest(b)["data_hash"] != read_manifest(c)["data_hash"]
    data = load_dataset(a, "test")
    assert data.images["image"].shape == (1000, 3, 32, 32) and data.modality_kinds["attributes"] == "attributes"
    assert data.subset(70).modality_kinds == data.modality_kinds  # kinds survive subsets (the metrics read them)
    with open(a / "test" / "mask.npy", "r+b") as fh:
        fh.seek(-1, 2)
        fh.write(b"\x01")
    with pytest.raises(DatasetIntegrityError, match="mask.npy"):
        load_dataset(a, "test", verify=True)
