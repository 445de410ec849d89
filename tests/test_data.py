"""Data layer with real images: every dataset source, ordering and `take`, layout errors, robust
decoding of bad and unusual files, an end-to-end run over a folder of mixed good/bad files, and
the eval transform against timm's own eval pipeline.

Real photos come from the ImageNet sample (ROBUSTART_IMAGENET_SAMPLE) when it is set, otherwise
from the built-in photos that scikit-image and matplotlib ship; every layout is built in tmp_path
from copies of them. Tests that need the whole sample skip with a reason when it is absent.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustart import settings
from robustart.data.decode import BadImageError, load_rgb
from robustart.data.sources import (
    BUILTIN,
    DataSource,
    imagenet_class_name,
    imagenet_wnids,
    open_source,
)
from robustart.errors import DataError

# Files picked from the ImageNet sample: (wnid, name). The first four are classified with high
# confidence by efficientnet_lite0, hammerhead is misclassified (so top-1 is not trivially 100).
SAMPLE_PICKS = [
    ("n01443537", "goldfish"),
    ("n01496331", "electric_ray"),
    ("n01518878", "ostrich"),
    ("n01560419", "bulbul"),
    ("n01494475", "hammerhead"),
]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _offline_home(tmp_path_factory, monkeypatch):
    """Own robustart home, no network (kept here so this file does not depend on conftest)."""
    monkeypatch.setenv("ROBUSTART_HOME", str(tmp_path_factory.mktemp("rhome")))
    monkeypatch.delenv("ROBUSTART_CACHE", raising=False)
    monkeypatch.delenv("ROBUSTART_STORE", raising=False)
    monkeypatch.setenv("ROBUSTART_OFFLINE", "1")


def _sample_dir() -> Path | None:
    path = settings.imagenet_sample()
    if path is None or not path.is_dir() or not any(path.glob("n*_*.JPEG")):
        return None
    return path


@pytest.fixture(scope="session")
def imagenet_sample_dir() -> Path:
    path = _sample_dir()
    if path is None:
        value = settings.imagenet_sample()
        reason = (
            "ROBUSTART_IMAGENET_SAMPLE is not set"
            if value is None
            else f"ROBUSTART_IMAGENET_SAMPLE={value} holds no <wnid>_<name>.JPEG files"
        )
        pytest.skip(reason + " (point it at a flat folder of ImageNet JPEGs)")
    return path


@dataclass(frozen=True)
class Photo:
    wnid: str
    name: str
    path: Path  # a real JPEG (never inside the repo)

    @property
    def label(self) -> int:
        return imagenet_wnids().index(self.wnid)

    @property
    def flat_name(self) -> str:
        return f"{self.wnid}_{self.name}.JPEG"


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> list[Photo]:
    """Real JPEG photos with their true wnids: from the ImageNet sample, else the built-in photos
    (the two PNGs among them re-encoded to JPEG in a temporary folder)."""
    sample = _sample_dir()
    if sample is not None:
        out = [Photo(w, n, sample / f"{w}_{n}.JPEG") for w, n in SAMPLE_PICKS]
        assert all(p.path.is_file() for p in out), "the ImageNet sample lacks a picked file"
        return out
    tmp = tmp_path_factory.mktemp("builtin-jpegs")
    wnids = imagenet_wnids()
    out = []
    for s in open_source("builtin").samples:
        name = Path(s.id).stem
        if s.path.suffix.lower() in (".jpg", ".jpeg"):
            path = s.path
        else:
            path = tmp / f"{name}.JPEG"
            with Image.open(s.path) as im:
                im.convert("RGB").save(path, quality=95)
        out.append(Photo(wnids[s.label], name, path))
    return out


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


# Bad and unusual files, each written from a real photo. Returns the path written.


def write_truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def write_not_image(dst: Path) -> Path:
    dst.write_bytes(b"This is a text file that merely has an image file name.\n" * 20)
    return dst


def write_empty(dst: Path) -> Path:
    dst.write_bytes(b"")
    return dst


def write_cmyk(src: Path, dst: Path) -> Path:
    _rgb(src).convert("CMYK").save(dst, format="JPEG", quality=95)
    with Image.open(dst) as im:
        assert im.mode == "CMYK"  # precondition: really a CMYK JPEG on disk
    return dst


def write_gray(src: Path, dst: Path) -> Path:
    _rgb(src).convert("L").save(dst, format="JPEG", quality=95)
    with Image.open(dst) as im:
        assert im.mode == "L"
    return dst


def write_gray16(src: Path, dst: Path) -> Path:
    a8 = np.asarray(_rgb(src).convert("L"), dtype=np.uint16)
    Image.fromarray(a8 * 257).save(dst, format="PNG")  # 0..255 -> 0..65535
    with Image.open(dst) as im:
        assert im.mode == "I;16"
    return dst


def write_rgba(src: Path, dst: Path) -> Path:
    im = _rgb(src).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, im.width, dtype=np.uint8), (im.height, 1))
    im.putalpha(Image.fromarray(alpha))
    im.save(dst, format="PNG")
    with Image.open(dst) as chk:
        assert chk.mode == "RGBA"
    return dst


def write_palette_transparent(src: Path, dst: Path) -> Path:
    _rgb(src).quantize(64).save(dst, format="PNG", transparency=0)
    with Image.open(dst) as im:
        assert im.mode == "P" and "transparency" in im.info
    return dst


# --------------------------------------------------------------------------- sources


def test_imagenet_wnids_are_the_1000_sorted_classes():
    w = imagenet_wnids()
    assert len(w) == 1000 and len(set(w)) == 1000
    assert list(w) == sorted(w)
    assert w[0] == "n01440764" and w[999] == "n15075141"
    assert "tench" in imagenet_class_name(0).lower()


@pytest.mark.parametrize("spec", [None, "builtin"])
def test_builtin_source_real_photos_with_labels(spec):
    src = open_source(spec)
    assert src.kind == "builtin" and src.name == "builtin" and src.num_classes == 1000
    expected = {"chelsea.png": 281, "coffee.png": 967, "rocket.jpg": 657, "grace_hopper.jpg": 652}
    assert {s.path.name: s.label for s in src.samples} == expected
    assert [s.id for s in src.samples] == sorted(s.id for s in src.samples)
    for s in src.samples:
        assert s.path.is_file(), s.path
        img, note = load_rgb(s.path)
        assert img.mode == "RGB" and min(img.size) >= 256  # a real photo, not a stub
        assert note == ""
    assert len(BUILTIN) == 4
    # The labels are the right ImageNet classes for what the photos show.
    names = {s.path.name: imagenet_class_name(s.label).lower() for s in src.samples}
    assert "tabby" in names["chelsea.png"]
    assert "espresso" in names["coffee.png"]
    assert "missile" in names["rocket.jpg"]
    assert "military uniform" in names["grace_hopper.jpg"]


def test_flat_folder_labels_are_wnid_indices(tmp_path, photos):
    root = tmp_path / "flat"
    names = {
        "n01440764_tench.JPEG": 0,  # first ImageNet class
        "n15075141_toilet_tissue.JPEG": 999,  # last
        "n01443537_goldfish_2.jpg": 1,  # extension case does not matter
    }
    for n in names:  # the label comes from the name only; any real JPEG will do as content
        _copy(photos[0].path, root / n)
    for p in photos:
        names[_copy(p.path, root / p.flat_name).name] = p.label

    src = open_source(root)
    assert src.kind == "flat" and src.num_classes == 1000 and src.root == root
    assert src.name == "flat:flat"
    assert src.skipped == []
    got = {s.id: s.label for s in src.samples}
    assert got == names
    wnids = imagenet_wnids()
    for s in src.samples:
        assert s.label == wnids.index(s.id.split("_")[0])
        assert s.path == root / s.id and s.path.is_file()


def test_flat_folder_whole_imagenet_sample(imagenet_sample_dir):
    src = open_source(imagenet_sample_dir)
    files = sorted(p.name for p in imagenet_sample_dir.glob("n*_*.JPEG"))
    assert src.kind == "flat"
    assert [s.id for s in src.samples] == files
    wnids = imagenet_wnids()
    assert all(s.label == wnids.index(s.id[:9]) for s in src.samples)
    by_id = {s.id: s.label for s in src.samples}
    assert by_id["n01440764_tench.JPEG"] == 0
    if len(files) == 1000:  # one image per class: labels are exactly 0..999 in file order
        assert [s.label for s in src.samples] == list(range(1000))


def test_flat_folder_skips_non_images_and_non_wnid_names(tmp_path, photos):
    root = tmp_path / "flat"
    good = photos[0]
    _copy(good.path, root / good.flat_name)
    (root / "notes.txt").write_text("not an image")
    _copy(good.path, root / f"{good.wnid}_copy.txt")  # wnid name, but not an image extension
    _copy(good.path, root / "README.JPEG")  # image extension, no wnid
    _copy(good.path, root / "n99999999_fake.JPEG")  # wnid-shaped, not an ImageNet class
    _copy(good.path, root / "N01440764_upper.JPEG")  # not a wnid (capital N)
    _copy(good.path, root / ".hidden.JPEG")  # hidden: ignored silently
    (root / "subdir").mkdir()

    src = open_source(root)
    assert [s.id for s in src.samples] == [good.flat_name]
    skipped = {line.split(":")[0]: line for line in src.skipped}
    assert set(skipped) == {
        "notes.txt",
        f"{good.wnid}_copy.txt",
        "README.JPEG",
        "n99999999_fake.JPEG",
        "N01440764_upper.JPEG",
        ".hidden.JPEG",
        "subdir/",
    }
    assert skipped[".hidden.JPEG"].endswith("hidden") and "folder" in skipped["subdir/"]  # counted, not read
    assert "not an image" in skipped["notes.txt"]
    assert "not an image" in skipped[f"{good.wnid}_copy.txt"]
    for n in ("README.JPEG", "n99999999_fake.JPEG", "N01440764_upper.JPEG"):
        assert "wnid" in skipped[n]


def test_image_folder_with_wnid_folders(tmp_path, photos):
    root = tmp_path / "val"
    expected = {}
    for k, p in enumerate(photos[:3]):
        for j in range(2):
            rel = f"{p.wnid}/img_{j}.JPEG"
            _copy(photos[(k + j) % len(photos)].path, root / rel)
            expected[rel] = p.label
    nested = f"{photos[0].wnid}/more/deep.JPEG"  # images in subfolders of a class count too
    _copy(photos[0].path, root / nested)
    expected[nested] = photos[0].label
    (root / photos[0].wnid / "labels.csv").write_text("x")  # not an image: skipped

    src = open_source(root)
    assert src.kind == "imagefolder" and src.num_classes == 1000 and src.name == "imagefolder:val"
    assert {s.id: s.label for s in src.samples} == expected
    assert [s.id for s in src.samples] == sorted(expected)
    assert all(s.path == root / s.id and s.path.is_file() for s in src.samples)
    assert len(src.skipped) == 1 and src.skipped[0].startswith(f"{photos[0].wnid}/labels.csv")


def test_image_folder_with_class_name_folders_needs_a_class_map(tmp_path, photos):
    root = tmp_path / "named"
    # Created out of order; one folder looks like a wnid.
    classes = ["zebra", "n01440764", "apple", "Dog"]
    for c in classes:
        _copy(photos[0].path, root / c / "a.JPEG")
        _copy(photos[1 % len(photos)].path, root / c / "b.jpeg")
    (root / ".git").mkdir()  # hidden folders are not classes

    # one wnid folder among named ones: ImageNet labels for it, the others skipped and reported
    src = open_source(root)
    assert {s.id: s.label for s in src.samples} == {"n01440764/a.JPEG": 0, "n01440764/b.jpeg": 0}
    assert sorted(p for p, _ in src.skipped_items()) == ["Dog/", "apple/", "zebra/"]
    # named folders alone: no positional labels unless asked for
    shutil.rmtree(root / "n01440764")
    with pytest.raises(DataError, match="--classes FILE") as e:
        open_source(root)
    assert str(root) in str(e.value)
    # folder names alone, in the order the user wants: labels 0, 1, 2
    (root / "classes.txt").write_text("zebra\napple\nDog\n")
    src = open_source(root)
    assert src.kind == "imagefolder"
    order = ["zebra", "apple", "Dog"]
    assert {s.id: s.label for s in src.samples} == {f"{c}/{f}": order.index(c) for c in order for f in ("a.JPEG", "b.jpeg")}
    # `folder label` lines, wnids or indices, given with --classes
    cmap = tmp_path / "map.txt"
    cmap.write_text("zebra n02391049\napple 948\n")
    src = open_source(root, classes=cmap)
    assert {s.id.split("/")[0]: s.label for s in src.samples} == {"zebra": 340, "apple": 948}
    assert ("Dog/", "folder not in the class map map.txt") in src.skipped_items()


def test_image_folder_unknown_wnid_folder_is_skipped_and_reported(tmp_path, photos):
    root = tmp_path / "val"
    _copy(photos[0].path, root / "n01440764" / "a.JPEG")
    _copy(photos[0].path, root / "n00000000" / "a.JPEG")
    src = open_source(root)
    assert [s.id for s in src.samples] == ["n01440764/a.JPEG"]
    assert src.skipped_items() == [("n00000000/", "not an ImageNet-1k wnid (give --classes to use it)")]


def test_image_folder_with_no_images_is_an_error(tmp_path):
    root = tmp_path / "val"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    (root / "dog" / "notes.txt").write_text("x")
    (root / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match="no image files") as e:
        open_source(root)
    assert str(root) in str(e.value)


def _labels_tree(tmp_path, photos) -> tuple[Path, dict[str, int]]:
    """tmp/data/images/... copies of real photos; returns (images dir, rel path -> label)."""
    images = tmp_path / "data" / "images"
    rels = {}
    for k, p in enumerate(photos[:3]):
        rel = f"sub{k % 2}/photo {k}.JPEG"  # a space in the file name
        _copy(p.path, images / rel)
        rels[rel] = p.label
    return images, rels


def test_labels_file_paths_relative_to_the_file(tmp_path, photos):
    images, rels = _labels_tree(tmp_path, photos)
    items = list(rels.items())
    text = ["# relative/path label", ""]
    # first as a class index, second as a wnid, third as index with extra whitespace
    text.append(f"images/{items[0][0]} {items[0][1]}")
    text.append(f"images/{items[1][0]}\t{imagenet_wnids()[items[1][1]]}")
    text.append(f"   images/{items[2][0]}    {items[2][1]}   ")
    text += ["   ", "# trailing comment"]
    lf = images.parent / "labels.txt"
    lf.write_text("\n".join(text) + "\n")

    src = open_source(lf)
    assert src.kind == "labels" and src.num_classes == 1000 and src.root == lf
    assert {s.id: s.label for s in src.samples} == {f"images/{r}": lab for r, lab in rels.items()}
    assert [s.id for s in src.samples] == sorted(s.id for s in src.samples)
    for s in src.samples:
        assert s.path == lf.parent / s.id and s.path.is_file()


def test_labels_file_paths_relative_to_root(tmp_path, photos):
    images, rels = _labels_tree(tmp_path, photos)
    lf = tmp_path / "elsewhere" / "val.txt"
    lf.parent.mkdir()
    lf.write_text("".join(f"{r} {imagenet_wnids()[lab]}\n" for r, lab in reversed(rels.items())))

    src = open_source(lf, root=images)
    assert {s.id: s.label for s in src.samples} == rels
    assert [s.id for s in src.samples] == sorted(rels)
    assert all(s.path == images / s.id and s.path.is_file() for s in src.samples)
    # without root=, the same lines resolve next to the labels file (where nothing is)
    assert all(not s.path.exists() for s in open_source(lf).samples)


def test_labels_file_index_above_1000_widens_num_classes(tmp_path, photos):
    _copy(photos[0].path, tmp_path / "a.JPEG")
    lf = tmp_path / "labels.txt"
    lf.write_text("a.JPEG 1500\n")
    src = open_source(lf)
    assert src.samples[0].label == 1500 and src.num_classes == 1501


@pytest.mark.parametrize(
    "lines, line_no, needle",
    [
        (["# header", "", "a.JPEG 0", "b.JPEG"], 4, "expected `relative/path label`"),
        (["a.JPEG 0", "# c", "b.JPEG n99999999"], 3, "n99999999"),
        (["a.JPEG cat"], 1, "'cat'"),
        (["a.JPEG -3"], 1, "'-3'"),
        (["a.JPEG 1", "b.JPEG \u00b2"], 2, "'\u00b2'"),  # '²'.isdigit() but int('²') fails
    ],
)
def test_labels_file_bad_line_names_file_and_line(tmp_path, lines, line_no, needle):
    lf = tmp_path / "labels.txt"
    lf.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        open_source(lf)
    msg = str(e.value)
    assert f"{lf}:{line_no}:" in msg and needle in msg


def test_image_given_as_labels_file_is_a_data_error(photos):
    # `--data photo.JPEG`: a file is read as a labels file; a binary one must say so, by name.
    with pytest.raises(DataError, match="labels file") as e:
        open_source(photos[0].path)
    assert str(photos[0].path) in str(e.value)


def test_labels_file_duplicate_path_and_empty_file(tmp_path):
    lf = tmp_path / "labels.txt"
    lf.write_text("a.JPEG 0\nb.JPEG 1\na.JPEG n01443537\n")
    with pytest.raises(DataError, match="more than once") as e:
        open_source(lf)
    assert "a.JPEG" in str(e.value) and str(lf) in str(e.value)

    lf.write_text("# only comments\n\n")
    with pytest.raises(DataError, match="no samples") as e:
        open_source(lf)
    assert str(lf) in str(e.value)


# --------------------------------------------------------------------------- ordering, take


def test_samples_sorted_by_id_regardless_of_creation_order(tmp_path, photos):
    names = [f"{p.wnid}_{k}.JPEG" for k, p in enumerate(photos)] + [
        "n01440764_b.JPEG",
        "n01440764_a.JPEG",
        "n01440764_B.JPEG",
    ]
    ids = {}
    for order, sub in ((names, "forward"), (list(reversed(names)), "backward")):
        for n in order:
            _copy(photos[0].path, tmp_path / sub / n)
        ids[sub] = [s.id for s in open_source(tmp_path / sub).samples]
    assert ids["forward"] == ids["backward"] == sorted(names)

    # ImageFolder and labels file: same rule (relative path is the id, and the order)
    for c, f in (("zz", "b.JPEG"), ("aa", "c.JPEG"), ("zz", "a.JPEG"), ("mm", "a.JPEG")):
        _copy(photos[0].path, tmp_path / "classes" / c / f)
    (tmp_path / "classes" / "classes.txt").write_text("aa\nmm\nzz\n")
    assert [s.id for s in open_source(tmp_path / "classes").samples] == [
        "aa/c.JPEG", "mm/a.JPEG", "zz/a.JPEG", "zz/b.JPEG"
    ]
    lf = tmp_path / "labels.txt"
    lf.write_text("z.JPEG 1\nb/a.JPEG 2\na.JPEG 3\nb.JPEG 4\n")
    assert [s.id for s in open_source(lf).samples] == ["a.JPEG", "b.JPEG", "b/a.JPEG", "z.JPEG"]


def test_take_is_stable_and_validates_limit(tmp_path, photos):
    root = tmp_path / "flat"
    for k, p in enumerate(photos * 2):
        _copy(p.path, root / f"{p.wnid}_{k:02d}.JPEG")
    src = open_source(root)
    all_ids = sorted(p.name for p in root.iterdir())
    assert [s.id for s in src.take(None)] == all_ids
    first3 = [s.id for s in src.take(3)]
    assert first3 == all_ids[:3]
    for _ in range(3):
        assert [s.id for s in open_source(root).take(3)] == first3
    assert src.take(0) == []
    assert [s.id for s in src.take(10_000)] == all_ids
    with pytest.raises(DataError, match="-1"):
        src.take(-1)
    # the data fingerprint follows the samples taken
    assert DataSource.fingerprint(src.take(3)) == DataSource.fingerprint(open_source(root).take(3))
    assert DataSource.fingerprint(src.take(3)) != DataSource.fingerprint(src.take(4))


# --------------------------------------------------------------------------- layout errors


def test_open_source_missing_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="no such file or folder") as e:
        open_source(missing)
    assert str(missing) in str(e.value)


def test_open_source_empty_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="not a known layout") as e:
        open_source(empty)
    assert str(empty) in str(e.value)


def test_open_source_unknown_layout(tmp_path, photos):
    root = tmp_path / "mixed"
    _copy(photos[0].path, root / "holiday.JPEG")
    (root / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not a known layout") as e:
        open_source(root)
    assert str(root) in str(e.value)


def test_open_source_flat_names_but_no_images(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    (root / "n01440764_tench.txt").write_text("x")
    with pytest.raises(DataError, match="wnid") as e:
        open_source(root)
    assert str(root) in str(e.value)


# --------------------------------------------------------------------------- decoding


def test_load_rgb_plain_jpeg(photos):
    img, note = load_rgb(photos[0].path)
    assert img.mode == "RGB" and note == ""
    assert np.array_equal(np.asarray(img), np.asarray(_rgb(photos[0].path)))


def test_truncated_jpeg(tmp_path, photos):
    bad = write_truncated(photos[0].path, tmp_path / "t.JPEG")
    with pytest.raises(BadImageError, match="truncated"):
        load_rgb(bad)


def test_not_an_image(tmp_path):
    bad = write_not_image(tmp_path / "n01440764_text.JPEG")
    with pytest.raises(BadImageError, match="not an image"):
        load_rgb(bad)


def test_empty_file(tmp_path):
    bad = write_empty(tmp_path / "empty.JPEG")
    with pytest.raises(BadImageError) as e:
        load_rgb(bad)
    assert str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(BadImageError, match="not found"):
        load_rgb(tmp_path / "gone.JPEG")


def test_cmyk_jpeg_converted(tmp_path, photos):
    path = write_cmyk(photos[0].path, tmp_path / "cmyk.JPEG")
    img, note = load_rgb(path)
    assert img.mode == "RGB" and note == "converted from CMYK"
    diff = np.abs(np.asarray(img, float) - np.asarray(_rgb(photos[0].path), float)).mean()
    assert diff < 4.0  # the same picture (not inverted), up to JPEG loss


def test_grayscale_jpeg_converted(tmp_path, photos):
    path = write_gray(photos[0].path, tmp_path / "gray.JPEG")
    img, note = load_rgb(path)
    a = np.asarray(img)
    assert img.mode == "RGB" and note == "converted from L"
    with Image.open(path) as im:
        gray = np.asarray(im)
    assert np.array_equal(a[..., 0], gray) and np.array_equal(a[..., 1], gray)
    assert np.array_equal(a[..., 2], gray)


def test_gray16_png_scaled_not_clipped(tmp_path, photos):
    path = write_gray16(photos[0].path, tmp_path / "g16.png")
    img, note = load_rgb(path)
    a = np.asarray(img).astype(int)
    assert img.mode == "RGB" and note == "converted from I;16"
    assert not (a == 255).all() and a.max() > 128 and len(np.unique(a)) > 64
    src8 = np.asarray(_rgb(photos[0].path).convert("L")).astype(int)
    for c in range(3):
        assert np.abs(a[..., c] - src8).max() <= 1  # 16-bit value / 257 == the 8-bit original


def test_rgba_png_alpha_dropped(tmp_path, photos):
    path = write_rgba(photos[0].path, tmp_path / "rgba.png")
    img, note = load_rgb(path)
    assert img.mode == "RGB" and "RGBA" in note and "alpha dropped" in note
    assert np.array_equal(np.asarray(img), np.asarray(_rgb(photos[0].path)))


def test_palette_png_with_and_without_transparency(tmp_path, photos):
    path = write_palette_transparent(photos[0].path, tmp_path / "p.png")
    img, note = load_rgb(path)
    assert img.mode == "RGB" and note.startswith("converted from P") and "alpha dropped" in note
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGBA"))[..., :3]
    assert np.array_equal(np.asarray(img), expected)

    opaque = tmp_path / "p_opaque.png"
    _rgb(photos[0].path).quantize(64).save(opaque)
    img, note = load_rgb(opaque)
    assert img.mode == "RGB" and note == "converted from P"


# --------------------------------------------------------------------------- end to end


FAILED = ("truncated", "notimage", "empty")
CONVERTED = {  # kind -> expected note
    "cmyk": "converted from CMYK",
    "gray": "converted from L",
    "gray16": "converted from I;16",
    "rgba": "converted from RGBA (alpha dropped)",
    "palette": "converted from P (alpha dropped)",
}


@pytest.fixture
def mixed_folder(tmp_path, photos) -> tuple[Path, dict[str, str]]:
    """Flat folder: good real JPEGs plus one file of each bad/unusual kind, all wnid-named.
    Returns (folder, file name -> kind)."""
    root = tmp_path / "mixed"
    root.mkdir()
    kinds = {}
    for p in photos:
        kinds[_copy(p.path, root / p.flat_name).name] = "good"
    p0, p1 = photos[0], photos[1]
    kinds[write_truncated(p0.path, root / f"{p0.wnid}_truncated.JPEG").name] = "truncated"
    kinds[write_not_image(root / f"{p1.wnid}_notimage.JPEG").name] = "notimage"
    kinds[write_empty(root / f"{p0.wnid}_empty.JPEG").name] = "empty"
    converted = [
        (write_cmyk, "cmyk", "JPEG"), (write_gray, "gray", "JPEG"), (write_rgba, "rgba", "png")
    ]
    for k, (write, kind, ext) in enumerate(converted):
        p = photos[k % len(photos)]
        kinds[write(p.path, root / f"{p.wnid}_{kind}.{ext}").name] = kind
    kinds[write_gray16(p1.path, root / f"{p1.wnid}_gray16.png").name] = "gray16"
    kinds[write_palette_transparent(p0.path, root / f"{p0.wnid}_palette.png").name] = "palette"
    return root, kinds


def _comparable(records):
    r = records.copy()
    r["top5"] = r["top5"].map(lambda t: [int(x) for x in t])
    return r.reset_index(drop=True)


def test_evaluate_folder_with_bad_files(tmp_path, mixed_folder):
    import pandas as pd

    from robustart.engine.evaluate import evaluate

    root, kinds = mixed_folder
    res = evaluate("efficientnet_lite0", root, store=tmp_path / "store", progress=False, workers=0)
    assert not res.reused and res.meta["status"] == "complete"
    rec = res.records
    assert len(rec) == len(kinds)
    assert list(rec["sample_id"]) == sorted(kinds)
    wnids = imagenet_wnids()
    for row in rec.itertuples():
        kind = kinds[row.sample_id]
        assert row.label == wnids.index(row.sample_id[:9])
        if kind in FAILED:
            assert row.status == "failed", row
            assert row.error, row
            assert row.pred == -1 and len(row.top5) == 0 and not row.correct
            assert np.isnan(row.prob) and np.isnan(row.margin)
        else:
            assert row.status == "ok" and row.error == "", row
            assert row.note == ("" if kind == "good" else CONVERTED[kind])
            assert 0 <= row.pred < 1000 and len(row.top5) == 5 and row.top5[0] == row.pred
            assert row.correct == (row.pred == row.label)
            assert 0.0 <= row.prob <= 1.0
            assert (row.margin > 0) == row.correct
    err = {kinds[s]: e for s, e in zip(rec["sample_id"], rec["error"]) if kinds[s] in FAILED}
    assert "truncated" in err["truncated"]
    assert "not an image" in err["notimage"]
    assert err["empty"]

    m = res.metrics
    ok = rec[rec["status"] == "ok"]
    assert m["n"] == len(kinds) and m["n_failed"] == len(FAILED) and m["n_ok"] == len(kinds) - 3
    assert ok["correct"].any()  # real photos: the model gets some right
    assert m["top1"] == pytest.approx(100.0 * ok["correct"].sum() / len(ok))
    assert m["top1"] != pytest.approx(100.0 * rec["correct"].sum() / len(rec))  # failed rows excluded
    top5_hits = [int(lab) in set(t) for lab, t in zip(ok["label"], ok["top5"])]
    assert m["top5"] == pytest.approx(100.0 * np.mean(top5_hits))

    # The multi-process loader gives the very same records.
    res2 = evaluate("efficientnet_lite0", root, store=tmp_path / "store2", progress=False, workers=2)
    assert not res2.reused and res2.meta["runs"][-1]["workers"] == 2
    pd.testing.assert_frame_equal(_comparable(rec), _comparable(res2.records), check_exact=True)


# --------------------------------------------------------------------------- eval transform


@pytest.mark.parametrize(
    "model, size", [("efficientnet_lite0", 224), ("efficientnet_lite2", 260), ("inception_v3", 299)]
)
def test_eval_transform_matches_timm_eval_pipeline(photos, model, size):
    import timm.data
    import torch
    from timm.models import get_pretrained_cfg

    from robustart.data.transforms import eval_transform
    from robustart.zoo.registry import get_entry

    entry = get_entry(model)
    assert entry.data_config["input_size"][-1] == size
    ours_tf = eval_transform(entry)
    cfg = timm.data.resolve_data_config({}, pretrained_cfg=get_pretrained_cfg(entry.timm_name).to_dict())
    theirs_tf = timm.data.create_transform(**cfg)
    mean = torch.tensor(cfg["mean"])[:, None, None]
    std = torch.tensor(cfg["std"])[:, None, None]
    # photos of different shapes (landscape/portrait) and an upscaled small crop
    imgs = [load_rgb(p.path)[0] for p in photos[:3]]
    imgs.append(imgs[0].crop((0, 0, 120, 90)))
    for img in imgs:
        ours = ours_tf(img)
        assert ours.dtype == torch.uint8 and tuple(ours.shape) == (3, size, size)
        theirs = theirs_tf(img) * std + mean  # timm's float tensor, normalisation undone
        assert theirs.shape == ours.shape
        assert torch.allclose(theirs, ours.float() / 255.0, rtol=0, atol=1e-6)
