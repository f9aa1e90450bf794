"""A messy folder end to end: each bad file is listed with its reason, everything else is processed.

And the model-side mistakes: one line naming the problem, exit code 2, nothing written.
"""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from nnvis_cli.main import cli
from nnvis_core.demo import DemoNet
from nnvis_core.models import loaded
from nnvis_core.models.loaded import Preprocess
from nnvis_reports.reader import read_report

GREEN = (40, 180, 60)


def picture(size=(80, 60), seed=0) -> Image.Image:
    """A smooth random picture (compresses like a photo, decodes to something non-flat)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.BILINEAR)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height pixels but carries almost no data: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def make_messy_folder(root: Path) -> tuple[dict[str, str], set[str]]:
    """Write every kind of bad and awkward input; return ({bad relpath: reason fragment}, good relpaths)."""
    bad: dict[str, str] = {}
    good: set[str] = set()

    def save(relpath: str, image: Image.Image, **options) -> Path:
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **options)
        good.add(relpath)
        return path

    # Awkward but valid: each must be read and processed.
    save("plain/photo.jpg", picture(), quality=90)
    save("huge/huge.jpg", picture((4000, 3000)), quality=70)
    save("aspect/wide strip.png", picture((3000, 8)))
    save("aspect/tall strip.png", picture((8, 3000)))
    save("modes/sixteen_bit.png", Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)))
    save("modes/cmyk.jpg", Image.new("CMYK", (64, 64), (0, 255, 255, 0)), quality=95)
    palette = picture().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save("modes/palette_transparent.png", palette, transparency=0)
    save("modes/grey.png", picture().convert("L"))
    frames = [Image.new("RGB", (64, 64), colour) for colour in (GREEN, (200, 0, 0), (0, 0, 200))]
    save("modes/animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=40, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    save("modes/rotated.jpg", picture((96, 64)), exif=exif, quality=90)
    save("names/with space & more.png", picture())
    save("names/日本語 café.png", picture())
    save("names/<img src=x onerror=alert(1)>.png", picture())
    save('names/"><script>alert(1)/<b>bold.png', picture())
    save("nested/a/b/c/deep.png", picture())

    # Broken: each must be listed with its reason.
    def broken(relpath: str, data: bytes, reason: str) -> Path:
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        bad[relpath] = reason
        return path

    broken("broken/zero.png", b"", "empty file (0 bytes)")
    jpeg = root / "plain" / "photo.jpg"
    broken("broken/truncated.jpg", jpeg.read_bytes()[: jpeg.stat().st_size // 2], "truncated or corrupt image data")
    png = root / "names" / "with space & more.png"
    broken("broken/truncated.png", png.read_bytes()[: png.stat().st_size // 2], "truncated or corrupt image data")
    broken("broken/notes.jpg", b"shopping list: eggs, milk\n", "not an image Pillow can read")
    png_header_only(root / "broken" / "bomb.png", 100_000, 100_000)
    bad["broken/bomb.png"] = "exceeds the decompression-bomb limit"
    Image.new("RGB", (1, 1), GREEN).save(root / "broken" / "dot.png")
    bad["broken/dot.png"] = "image is too small (1x1 pixels)"
    locked = broken("broken/locked.png", png.read_bytes(), "permission denied")
    locked.chmod(0)
    os.symlink(root / "nowhere.png", root / "broken" / "dangling.png")
    bad["broken/dangling.png"] = "broken symbolic link"

    # Not images, and a loop: silently skipped, and the walk ends.
    (root / "plain" / "labels.csv").write_text("a,b\n")
    (root / "README.txt").write_text("not an image")
    os.symlink(root, root / "nested" / "a" / "loop")
    return bad, good


def test_messy_folder_lists_each_bad_file_and_processes_the_rest(tmp_path, permissions_enforced):
    images = tmp_path / "messy"
    bad, good = make_messy_folder(images)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["report", str(images), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    report = read_report(out)
    by_path = {image["path"]: image for image in report["images"]}
    assert set(by_path) == set(bad) | good  # nothing else, no loop, no duplicates through it
    for relpath, reason in bad.items():
        entry = by_path[relpath]
        assert entry["status"] == "unreadable" and reason in entry["error"], (relpath, entry["error"])
        assert "\n" not in entry["error"]
        [line] = [line for line in result.output.splitlines() if line.startswith(f"nnvis: {relpath}: ")]
        assert reason in line
    for relpath in good:
        entry = by_path[relpath]
        assert entry["status"] == "ok", (relpath, entry["error"])
        assert entry["results"]["saliency"]["status"] == "ok"
        with Image.open(out / entry["input"]) as shown:
            assert shown.size == (64, 64) and shown.mode == "RGB"
    assert report["input"]["unreadable"] == len(bad) and report["input"]["readable"] == len(good)
    assert f"{len(bad)} unreadable images" in result.output


def test_extreme_aspect_ratio_resizes_only_the_region_the_crop_keeps(monkeypatch):
    strip = picture((3000, 40))
    monkeypatch.setattr(loaded, "LARGE_RESIZE_PIXELS", 10**12)
    whole = Preprocess(256, 224).display(strip).astype(int)
    monkeypatch.setattr(loaded, "LARGE_RESIZE_PIXELS", 0)
    region = Preprocess(256, 224).display(strip).astype(int)
    assert np.abs(whole - region).max() <= 1  # the same pixels, up to rounding
    monkeypatch.undo()
    # Resized whole, this 2-megapixel strip would become 16 gigapixels (48 GB) before the crop.
    long_strip = Image.new("RGB", (2_000_000, 8), GREEN)
    shown = Preprocess(256, 224).display(long_strip)
    assert shown.shape == (224, 224, 3) and (shown == GREEN).all()


def test_empty_folder_and_folder_without_images_are_usage_errors(tmp_path):
    runner = CliRunner()
    (tmp_path / "empty").mkdir()
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "notes.txt").write_text("x")
    (other / "sub" / "table.csv").write_text("a,b")
    (other / "model.h5").write_bytes(b"\x89HDF")
    for folder in (tmp_path / "empty", other):
        result = runner.invoke(cli, ["report", str(folder), "-o", str(tmp_path / "out")])
        assert result.exit_code == 2
        assert result.output.splitlines() == [f"nnvis: error: {folder}: no image files found (looked for JPEG, "
                                              "PNG, WebP, BMP, TIFF, GIF...)"]
        assert not (tmp_path / "out").exists()


# --- model-side mistakes --------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    demo_state = folder / "demo_state.pt"
    torch.save(DemoNet().state_dict(), demo_state)
    _Payload.marker = str(folder / "pwned")
    evil = folder / "evil.pt"  # torch.save's format, with an object among the tensors
    torch.save({"weight": torch.zeros(1), "payload": _Payload()}, evil)
    raw = folder / "evil_raw.pt"  # a bare pickle
    raw.write_bytes(pickle.dumps({"weight": _Payload()}))
    return {"demo_state": demo_state, "evil": evil, "evil_raw": raw, "marker": folder / "pwned"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--plugins", "gradcam", "--set", "gradcam.layer=features.99"],
         "gradcam.layer: no layer named 'features.99' in DemoNet; did you mean"),
        (["--plugins", "guided_backprop", "--set", "guided_backprop.mode=feature", "--set",
          "guided_backprop.layer=clasifier"],
         "guided_backprop.layer: no layer named 'clasifier' in DemoNet; did you mean classifier"),
        (["--set", "saliency.target=unicorn"], "saliency.target: target 'unicorn' is not a class"),
        (["--set", "saliency.target=8"], "saliency.target: "),
        (["--model", "{demo_state}", "--arch", "torchvision:resnet18"],
         "does not match architecture torchvision:resnet18"),
        (["--model", "{demo_state}"], "a state_dict needs --arch"),
        (["--crop", "8"], "model demo rejects input of size 3x8x8"),
        (["--model", "{evil}", "--arch", "demo"], "holds pickled Python objects"),
        (["--model", "{evil_raw}", "--arch", "demo"], "not a PyTorch weights file that loads safely"),
        (["--labels", "{demo_state}"], "labels file is not UTF-8 text"),
    ],
    ids=["layer", "layer-feature-mode", "target-name", "target-index", "wrong-architecture", "no-arch",
         "input-size", "malicious-pickle", "malicious-raw-pickle", "labels-not-text"],
)
def test_model_side_mistakes_are_one_line_and_exit_2(few_demo_images, tmp_path, checkpoints, args, message):
    args = [a.format(**{k: str(v) for k, v in checkpoints.items()}) for a in args]
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["report", str(few_demo_images), "-o", str(out), *args])
    lines = result.output.splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("nnvis: error: ") and message in lines[0], result.output
    assert not out.exists() and not checkpoints["marker"].exists()
