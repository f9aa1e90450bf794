"""Tests for nnvis_core.images: decoding every mode to RGB, clear errors, discovery, labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from nnvis_core.images import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    ImageRecord,
    discover_images,
    folder_label,
    load_rgb,
    match_label,
)

RED = (255, 0, 0)


def px(im: Image.Image, xy: tuple[int, int]) -> np.ndarray:
    return np.array(im.getpixel(xy), dtype=int)


def assert_close(im: Image.Image, xy: tuple[int, int], rgb: tuple[int, int, int], tol: int = 12) -> None:
    got = px(im, xy)
    assert np.abs(got - np.array(rgb)).max() <= tol, f"pixel {xy} = {tuple(got)}, expected ~{rgb}"


def stored(path: Path) -> tuple[str, int]:
    """(mode, frame count) of a file as stored, closing it again."""
    with Image.open(path) as im:
        return im.mode, getattr(im, "n_frames", 1)


def save(im: Image.Image, path: Path, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)
    return path


# --- formats -----------------------------------------------------------------

FORMATS = [
    ("jpg", {"quality": 95}),
    ("png", {}),
    pytest.param("webp", {"lossless": True}, marks=pytest.mark.skipif(not features.check("webp"), reason="no WebP")),
    ("bmp", {}),
    ("tiff", {}),
    ("gif", {}),
]


@pytest.mark.parametrize(("ext", "kw"), FORMATS)
def test_each_format_decodes_to_rgb(tmp_path: Path, ext: str, kw: dict) -> None:
    im = Image.new("RGB", (40, 30), RED)
    im.paste((0, 0, 255), (20, 0, 40, 30))  # right half blue
    out = load_rgb(save(im, tmp_path / f"a.{ext}", **kw))
    assert out.mode == "RGB" and out.size == (40, 30)
    assert_close(out, (5, 15), RED, tol=20)
    assert_close(out, (35, 15), (0, 0, 255), tol=20)


def test_result_is_independent_of_the_file(tmp_path: Path) -> None:
    p = save(Image.new("RGB", (16, 16), RED), tmp_path / "a.png")
    out = load_rgb(p)
    p.unlink()  # the file is closed and the pixels are already in memory
    assert_close(out, (0, 0), RED, tol=0)


def test_image_extensions() -> None:
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff"} <= IMAGE_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)
    assert not {".txt", ".csv", ".json", ".pdf", ".h5", ".mpg"} & IMAGE_EXTENSIONS


# --- modes -------------------------------------------------------------------


def test_16bit_png_scales_by_bit_depth(tmp_path: Path) -> None:
    a = np.zeros((8, 8), dtype=np.uint16)
    a[:, 0], a[:, 1], a[:, 2] = 65535, 32768, 257
    p = save(Image.fromarray(a), tmp_path / "g16.png")
    assert stored(p)[0].startswith("I;16")
    out = load_rgb(p)
    assert out.mode == "RGB"
    assert tuple(px(out, (0, 0))) == (255, 255, 255)
    assert abs(px(out, (1, 0))[0] - 128) <= 1
    assert tuple(px(out, (2, 0))) == (1, 1, 1)
    assert tuple(px(out, (3, 0))) == (0, 0, 0)


def test_16bit_big_endian_tiff(tmp_path: Path) -> None:
    a = np.zeros((8, 8), dtype=">u2")
    a[:, 0] = 65535
    a[:, 1] = 300  # a naive 8-bit convert would clip this to 255
    p = save(Image.frombytes("I;16B", (8, 8), a.tobytes()), tmp_path / "g16b.tif")
    out = load_rgb(p)
    assert tuple(px(out, (0, 0))) == (255, 255, 255)
    assert tuple(px(out, (1, 0))) == (1, 1, 1)


def test_mode_i_with_16bit_values_and_with_8bit_values(tmp_path: Path) -> None:
    im = Image.new("I", (8, 8), 0)
    im.putpixel((0, 0), 65535)
    im.putpixel((1, 0), 32768)
    out = load_rgb(save(im, tmp_path / "i16.tif"))
    assert px(out, (0, 0))[0] == 255 and abs(px(out, (1, 0))[0] - 128) <= 1
    small = Image.new("I", (8, 8), 100)
    assert px(load_rgb(save(small, tmp_path / "i8.tif")), (0, 0))[0] == 100


def test_mode_i_out_of_range_is_stretched(tmp_path: Path) -> None:
    im = Image.new("I", (8, 8), -1000)
    im.putpixel((0, 0), 100_000)
    out = load_rgb(save(im, tmp_path / "iwide.tif"))
    assert px(out, (0, 0))[0] == 255 and px(out, (1, 1))[0] == 0


def test_float_image_in_unit_range(tmp_path: Path) -> None:
    im = Image.new("F", (8, 8), 0.0)
    im.putpixel((0, 0), 1.0)
    im.putpixel((1, 0), 0.5)
    out = load_rgb(save(im, tmp_path / "f.tif"))
    assert px(out, (0, 0))[0] == 255
    assert abs(px(out, (1, 0))[0] - 128) <= 1
    assert px(out, (2, 0))[0] == 0


def test_float_image_with_large_range_and_nan(tmp_path: Path) -> None:
    im = Image.new("F", (8, 8), 0.0)
    im.putpixel((0, 0), 5000.0)
    im.putpixel((1, 0), float("nan"))
    out = load_rgb(save(im, tmp_path / "fw.tif"))
    assert px(out, (0, 0))[0] == 255 and px(out, (1, 0))[0] == 0 and px(out, (2, 0))[0] == 0


def test_palette_with_transparency_becomes_white(tmp_path: Path) -> None:
    im = Image.new("P", (10, 10), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black, 1 red
    im.paste(1, (5, 0, 10, 10))
    p = save(im, tmp_path / "pt.png", transparency=0)
    out = load_rgb(p)
    assert_close(out, (0, 0), (255, 255, 255), tol=0)  # transparent black -> white
    assert_close(out, (9, 9), RED, tol=0)
    gif = load_rgb(save(im, tmp_path / "pt.gif", transparency=0))
    assert_close(gif, (0, 0), (255, 255, 255), tol=0)


def test_palette_without_transparency(tmp_path: Path) -> None:
    im = Image.new("RGB", (10, 10), (0, 128, 0)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert im.mode == "P"
    assert_close(load_rgb(save(im, tmp_path / "p.png")), (3, 3), (0, 128, 0), tol=0)


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    im = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # invisible black
    im.paste((255, 0, 0, 255), (0, 0, 5, 10))
    im.paste((0, 0, 255, 128), (5, 0, 10, 10))  # half-transparent blue
    out = load_rgb(save(im, tmp_path / "rgba.png"))
    assert_close(out, (1, 1), RED, tol=0)
    assert_close(out, (7, 7), (127, 127, 255), tol=2)
    webp = load_rgb(save(Image.new("RGBA", (10, 10), (0, 0, 0, 0)), tmp_path / "t.webp", lossless=True))
    assert_close(webp, (1, 1), (255, 255, 255), tol=0)


def test_la_and_grayscale_and_1bit(tmp_path: Path) -> None:
    la = Image.new("LA", (10, 10), (0, 0))
    la.paste((50, 255), (0, 0, 5, 10))
    out = load_rgb(save(la, tmp_path / "la.png"))
    assert_close(out, (1, 1), (50, 50, 50), tol=0)
    assert_close(out, (8, 1), (255, 255, 255), tol=0)
    assert_close(load_rgb(save(Image.new("L", (10, 10), 77), tmp_path / "l.png")), (2, 2), (77, 77, 77), tol=0)
    bw = Image.new("1", (10, 10), 0)
    bw.paste(1, (0, 0, 5, 10))
    out = load_rgb(save(bw, tmp_path / "bw.png"))
    assert_close(out, (1, 1), (255, 255, 255), tol=0)
    assert_close(out, (8, 1), (0, 0, 0), tol=0)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    p = save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95)
    assert stored(p)[0] == "CMYK"
    out = load_rgb(p)
    assert out.mode == "RGB"
    assert_close(out, (8, 8), RED, tol=20)


def test_ycbcr_tiff(tmp_path: Path) -> None:
    im = Image.new("RGB", (16, 16), (0, 200, 0)).convert("YCbCr")
    p = save(im, tmp_path / "y.tif")
    assert stored(p)[0] == "YCbCr"
    out = load_rgb(p)
    assert_close(out, (8, 8), (0, 200, 0), tol=6)


def test_exif_orientation_6_rotates(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste(RED, (0, 0, 10, 10))  # stored top-left corner is red
    exif = Image.Exif()
    exif[0x0112] = 6  # display needs 90 degrees clockwise
    p = save(im, tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_rgb(p)
    assert out.size == (20, 40)
    assert_close(out, (18, 1), RED, tol=25)  # now at the top-right
    assert_close(out, (1, 1), (0, 0, 255), tol=25)


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (12, 12), c) for c in (RED, (0, 255, 0), (0, 0, 255))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert stored(p)[1] == 3
    assert_close(load_rgb(p), (6, 6), RED, tol=0)


# --- errors ------------------------------------------------------------------


def expect_error(path: Path, fragment: str, **kw: object) -> ImageReadError:
    with pytest.raises(ImageReadError) as info:
        load_rgb(path, **kw)
    err = info.value
    assert fragment in err.reason, err.reason
    assert err.path == path
    assert str(err) == f"{path}: {err.reason}"
    assert "\n" not in err.reason
    return err


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    expect_error(p, "empty file (0 bytes)")


def test_text_named_jpg(tmp_path: Path) -> None:
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a picture\n")
    expect_error(p, "not an image Pillow can read (cannot identify image file)")


def noisy(size: int = 128) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_truncated(tmp_path: Path, ext: str) -> None:
    full = save(noisy(), tmp_path / f"full.{ext}")
    data = full.read_bytes()
    p = tmp_path / f"cut.{ext}"
    p.write_bytes(data[: len(data) // 2])
    expect_error(p, "truncated or corrupt image data (")


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = save(Image.new("RGB", (100, 100), RED), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 10000 px: warning level
    expect_error(p, "image too large: 10000 pixels exceeds the decompression-bomb limit of 5000")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # > 2x the limit: Pillow's error level
    expect_error(p, "image too large: 10000 pixels exceeds the decompression-bomb limit of 1000")


def test_too_small(tmp_path: Path) -> None:
    p = save(Image.new("RGB", (1, 1), RED), tmp_path / "dot.png")
    expect_error(p, "image is too small (1x1 pixels)")
    q = save(Image.new("RGB", (200, 4), RED), tmp_path / "strip.png")
    expect_error(q, "image is too small (200x4 pixels)")
    assert load_rgb(q, min_side=4).size == (200, 4)  # long thin images are fine: no aspect-ratio rule


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "gone.png", "file not found")


def test_permission_denied(tmp_path: Path, permissions_enforced: None) -> None:
    p = save(Image.new("RGB", (16, 16), RED), tmp_path / "locked.png")
    p.chmod(0)
    try:
        expect_error(p, "permission denied")
    finally:
        p.chmod(0o644)


def test_permission_error_from_open_is_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs even as root (where chmod 000 cannot be tested): the mapping itself."""
    p = save(Image.new("RGB", (16, 16), RED), tmp_path / "locked.png")

    def denied(*a: object, **k: object) -> None:
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr("nnvis_core.images.Image.open", denied)
    expect_error(p, "permission denied")


def test_unexpected_pillow_exception_is_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = save(Image.new("RGB", (16, 16), RED), tmp_path / "ok.png")

    def boom(*a: object, **k: object) -> None:
        raise ZeroDivisionError("weird\nplugin failure")

    monkeypatch.setattr("nnvis_core.images.ImageOps.exif_transpose", boom)
    expect_error(p, "weird plugin failure")


# --- discovery ---------------------------------------------------------------


def make_tree(root: Path) -> None:
    tiny = Image.new("RGB", (8, 8), RED)
    for rel in [
        "b/z.png",
        "b/a.JPG",
        "a/inner/deep.png",
        "top.png",
        "Zed.png",
        "with space/pic 1.png",
        "café/日本.png",
        "<img src=x onerror=alert(1)>.png",
        '"><b>.png',
        ".hidden/x.png",
        "a/.secret.png",
    ]:
        save(tiny, root / rel, format="PNG")
    for rel in ["b/labels.csv", "notes.txt", "meta.json", "a/README"]:
        (root / rel).write_text("x")


def test_discover_order_filters_and_names(tmp_path: Path) -> None:
    make_tree(tmp_path)
    recs = discover_images(tmp_path)
    rels = [r.relpath for r in recs]
    assert rels == sorted(rels)  # case-sensitive code-point order: 'Z' < 'a'
    assert set(rels) == {
        "b/z.png",
        "b/a.JPG",
        "a/inner/deep.png",
        "top.png",
        "Zed.png",
        "with space/pic 1.png",
        "café/日本.png",
        "<img src=x onerror=alert(1)>.png",
        '"><b>.png',
    }
    assert rels.index("Zed.png") < rels.index("a/inner/deep.png")
    assert [r.index for r in recs] == list(range(len(recs)))
    for r in recs:
        assert r.path.is_absolute() and r.path.is_file()
        assert r.path == tmp_path / r.relpath
        assert r.folder == folder_label(r.relpath)
    by_rel = {r.relpath: r for r in recs}
    assert by_rel["a/inner/deep.png"].folder == "inner"
    assert by_rel["top.png"].folder is None
    assert discover_images(tmp_path) == recs  # deterministic


def test_records_are_frozen(tmp_path: Path) -> None:
    save(Image.new("RGB", (8, 8)), tmp_path / "a.png")
    rec = discover_images(tmp_path)[0]
    assert isinstance(rec, ImageRecord)
    with pytest.raises(AttributeError):
        rec.index = 5  # type: ignore[misc]


def test_unreadable_image_is_listed_then_reported(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"garbage")
    save(Image.new("RGB", (8, 8)), tmp_path / "good.png")
    recs = discover_images(tmp_path)
    assert [r.relpath for r in recs] == ["bad.png", "good.png"]
    with pytest.raises(ImageReadError):
        load_rgb(recs[0].path)
    assert load_rgb(recs[1].path).size == (8, 8)


def test_symlink_loop_terminates(tmp_path: Path) -> None:
    save(Image.new("RGB", (8, 8)), tmp_path / "sub" / "a.png")
    save(Image.new("RGB", (8, 8)), tmp_path / "b.png")
    os.symlink(tmp_path / "sub", tmp_path / "sub" / "self")  # points to itself
    os.symlink(tmp_path, tmp_path / "sub" / "up")  # points to the root
    rels = [r.relpath for r in discover_images(tmp_path)]
    assert rels == ["b.png", "sub/a.png"]


def test_symlinked_folder_is_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    save(Image.new("RGB", (8, 8)), outside / "o.png")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "linked")
    recs = discover_images(root)
    assert [r.relpath for r in recs] == ["linked/o.png"]
    assert recs[0].folder == "linked"


def test_bad_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_images(tmp_path / "nope")
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        discover_images(f)


def test_empty_folder(tmp_path: Path) -> None:
    assert discover_images(tmp_path) == []


# --- labels ------------------------------------------------------------------


def test_folder_label() -> None:
    assert folder_label("x.png") is None
    assert folder_label("cat/x.png") == "cat"
    assert folder_label("train/great_white_shark/x.png") == "great_white_shark"


NAMES = ["tench", "great white shark", "Egyptian cat", "crane", "tiger-cat", "crane"]


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("great_white_shark", 1),
        ("Great-White Shark", 1),
        ("GREAT WHITE SHARK", 1),
        ("egyptian_cat", 2),
        ("tiger_cat", 4),
        ("Tiger Cat", 4),
        ("tench", 0),
        ("shark", None),
        ("greatwhiteshark", None),
        ("crane", None),  # two classes share this name: do not guess
        (None, None),
        ("", None),
    ],
)
def test_match_label(folder: str | None, expected: int | None) -> None:
    assert match_label(folder, NAMES) == expected


def test_match_label_accepts_any_sequence() -> None:
    assert match_label("b", ("a", "b")) == 1
    assert match_label("b", ["a", "b"]) == 1
