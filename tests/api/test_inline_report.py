"""A run shown inline tells the truth: its header names the images and the run's own time, in one
sentence for every model; it links no file that does not exist; its footer says where the files
are; each picture is carried once (nnvis_reports.inline, through nnvis.Run)."""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path

import pytest

import nnvis

QUICK = {"saliency": {"faithfulness_steps": 0}}


def document(frame: str) -> str:
    return html.unescape(re.search(r'srcdoc="(.*)"></iframe>', frame, re.S)[1])


@pytest.fixture(scope="module")
def files(demo_images) -> list[Path]:
    return sorted(demo_images.rglob("*.png"))[::10][:3]


@pytest.fixture(scope="module")
def compared(files) -> tuple[nnvis.Run, float]:
    clock = time.perf_counter()
    run = nnvis.run(files, ["demo", "demo-vit"], plugins=["saliency"], device="cpu", progress=False, **QUICK)
    return run, time.perf_counter() - clock


def test_the_header_is_one_sentence_for_every_model_with_the_run_s_own_time(compared, demo_images, tmp_path):
    run, wall = compared
    page = run.page()
    summary = " ".join(re.search(r'<p class="summary">(.*?)</p>', page, re.S)[1].split())
    seconds = run.report()["timing"]["seconds"]
    assert summary == (f"3 of 3 images from <code>{demo_images}</code> through <strong>demo</strong> (DemoNet, "
                       f"weights: embedded, 8 classes, on cpu) and through <strong>demo-vit</strong> "
                       f"(VisionTransformer, weights: embedded, 8 classes, on cpu) in {seconds} s.")
    assert 0.9 * wall <= seconds <= round(wall, 3) + 0.001  # report.json rounds to the millisecond
    saved = json.loads((run.save(tmp_path / "saved").parent / "report.json").read_text(encoding="utf-8"))
    assert saved["timing"]["seconds"] == seconds and "nnvis-images-" not in page


def test_inline_the_page_links_no_missing_file_and_its_footer_says_so(compared, tmp_path):
    run, _ = compared
    page = run.page()
    assert ".npy" not in page.split("<footer>")[0] and "assets/" not in page
    assert "run.save(FOLDER)</code> writes this report as files" in page and "sit beside this page" not in page
    saved = run.save(tmp_path / "saved").read_text(encoding="utf-8")  # the saved page keeps its links
    assert "raw .npy</a>" in saved and "sit beside this page" in saved


def test_each_picture_is_carried_once(compared):
    run, _ = compared
    page = run.page()
    table = json.loads(re.search(r"window\.nnvisPictures = (\{.*?\});", page)[1])
    uris = re.findall(r"data:image/\w+;base64,[\w+/=]+", page)
    assert len(uris) == len(table) == len(set(table.values()))
    # the inputs, and each model's saliency overlay and map, of 3 images
    # each model's saliency overlay and map of 3 images, and their inputs (the same for both models)
    assert len(table) == 3 * 2 * 2 + 3
    assert set(re.findall(r'data-picture="([^"]+)"', page)) <= set(table)


def test_images_given_in_memory_are_named_so(files):
    from PIL import Image

    run = nnvis.run([Image.open(path) for path in files[:1]], "demo", plugins=["saliency"], device="cpu",
                    progress=False, **QUICK)
    summary = " ".join(re.search(r'<p class="summary">(.*?)</p>', run.page(), re.S)[1].split())
    assert summary.startswith("1 of 1 images given in memory through <strong>demo</strong>")


def test_the_inline_page_draws_every_picture_in_a_browser(compared, tmp_path, open_report):
    run, _ = compared
    (tmp_path / "inline.html").write_text(document(run._repr_html_()), encoding="utf-8")
    opened = open_report(tmp_path / "inline.html")
    opened.page.wait_for_selector("[data-matrix] tbody tr")
    sources = opened.page.locator("img").evaluate_all("images => images.map(i => i.getAttribute('src'))")
    assert len(sources) > 6 and all(source.startswith("data:image/webp;base64,") for source in sources)
    sizes = opened.page.locator("[data-matrix] tbody img").evaluate_all(
        "images => images.slice(0, 6).map(i => i.complete ? i.naturalWidth : -1)")
    assert sizes and all(size == 64 for size in sizes)
    assert opened.console_errors == [] and opened.page_errors == []
    assert [url for url in opened.requests if not url.startswith(("file:", "data:"))] == []


def test_a_click_in_the_inline_matrix_says_how_to_show_that_image(compared, tmp_path, open_report):
    run, _ = compared
    (tmp_path / "inline.html").write_text(document(run._repr_html_()), encoding="utf-8")
    opened = open_report(tmp_path / "inline.html")
    opened.page.wait_for_selector("[data-matrix] tbody tr")
    detail = opened.page.locator(".matrix-detail")
    assert detail.is_hidden()
    opened.page.locator("[data-matrix] tbody tr").nth(1).locator("td").first.click()
    assert detail.is_visible()
    assert f'run.show_image("{run.images[1]}")' in detail.text_content()
    assert opened.console_errors == [] and opened.page_errors == []


def test_an_image_s_detail_shows_on_demand(compared, tmp_path, open_report):
    run, _ = compared
    assert 'id="img-' not in run.page()  # the page shown inline leaves the detail out
    detail = document(run.show_image(run.images[1])._repr_html_())
    assert detail.count('<section class="image" id="img-1">') == 1 and detail.count("Gradient saliency") == 2
    assert "demo-vit" in detail and ".npy" not in detail
    (tmp_path / "detail.html").write_text(detail, encoding="utf-8")
    opened = open_report(tmp_path / "detail.html")
    sizes = opened.page.locator("img").evaluate_all("images => images.map(i => i.complete ? i.naturalWidth : -1)")
    assert len(sizes) == 2 * 2 and all(size == 64 for size in sizes)  # per model: its input and its map
    assert opened.console_errors == [] and opened.page_errors == []
    with pytest.raises(KeyError, match="no readable image"):
        run.show_image("nothing.png")
