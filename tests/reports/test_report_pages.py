"""A large folder's report in pieces (nnvis_reports.paging): detail pages and matrix row chunks that
open from file://, with search, filters and keyboard working across every image. The page size is
made small here so that a few images make several pages."""

from __future__ import annotations

import json
import re

import pytest
from conftest import NAME_PAYLOADS, add_hostile_names

from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_reports import build_report
from nnvis_reports.reader import read_report

PAGE = 3


def chunk_rows(path) -> tuple[int, list[dict]]:
    """(number, rows) of a matrix row chunk: nnvisMatrixRows(n, JSON.parse("...")), all ASCII."""
    text = path.read_text(encoding="ascii")  # every name escaped to ASCII
    match = re.fullmatch(r"nnvisMatrixRows\((\d+), JSON\.parse\((\"(?:[^\"\\]|\\.)*\")\)\);\n", text, re.S)
    assert match, f"{path.name} is not a row chunk"
    return int(match[1]), json.loads(json.loads(match[2]))  # a string literal holding the rows' JSON


@pytest.fixture(scope="module")
def paged(tmp_path_factory, demo_images):
    """A report of nine demo images and three hostile-named ones, three images a page."""
    from conftest import copy_demo

    root = tmp_path_factory.mktemp("paged")
    images = copy_demo(demo_images, root / "images", classes=3, per_class=3)
    names = add_hostile_names(images, root / "labels.txt", NAME_PAYLOADS)
    config = ReportConfig(images, root / "out", labels=root / "labels.txt", plugins=["saliency", "tsne"],
                          params={"tsne": {"perplexity": 3}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("nnvis_reports.render.PAGE_SIZE", PAGE)
        patch.setattr("nnvis_reports.assets.SPRITE_SHEET", 5)  # the t-SNE's 12 thumbnails on three sheets
        assert build_report(config, load_registry()).exit_code == 0
    return root / "out", names


def test_details_go_to_pages_and_rows_to_chunks(paged):
    out, _ = paged
    report = read_report(out)
    readable = [image for image in report["images"] if image["status"] == "ok"]
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'class="image"' not in index  # no detail section in the index
    pages = sorted((out / "pages").glob("images-*.html"))
    assert len(pages) == -(-len(report["images"]) // PAGE)
    for image in readable:
        page = (out / "pages" / f"images-{image['index'] // PAGE:04d}.html").read_text(encoding="utf-8")
        assert f'id="img-{image["index"]}"' in page
    chunks = sorted((out / "assets" / "matrix").glob("rows-*.js"))
    rows = []
    for number, chunk in enumerate(chunks):
        chunk_number, rows_of_chunk = chunk_rows(chunk)
        assert chunk_number == number
        rows += rows_of_chunk
    assert [row["index"] for row in rows] == [image["index"] for image in readable]
    assert all(row["href"] == f"pages/images-{row['index'] // PAGE:04d}.html#img-{row['index']}" for row in rows)
    assert "script-src 'unsafe-inline' 'self'" in index


def test_the_matrix_loads_every_chunk_and_searches_across_them(paged, open_report):
    out, _ = paged
    total = read_report(out)["input"]["readable"]
    opened = open_report(out / "index.html")
    page = opened.page
    page.wait_for_selector("[data-matrix][data-loaded=all]", state="attached")
    matrix = page.locator("[data-matrix]")
    assert matrix.locator("tbody tr").count() == total
    shown = matrix.locator("tbody tr").evaluate_all("rows => rows.map((row) => Number(row.dataset.image))")
    assert shown == sorted(shown)  # chunks requested together still run in file order
    assert matrix.locator(".matrix-count").text_content() == f"{total} of {total} images"
    matrix.locator("[data-filter=search]").fill("_02")  # the third image of each class, on different pages
    assert matrix.locator(".matrix-count").text_content() == f"3 of {total} images"
    matrix.locator("[data-filter=search]").fill("")
    matrix.locator("select.matrix-sort").select_option(label="lowest confidence first")
    confidences = matrix.locator("tbody td.predicted").all_text_contents()
    values = [float(re.search(r"\(([\d.]+)%\)", text)[1]) for text in confidences]
    assert values == sorted(values)
    assert opened.console_errors == [] and opened.page_errors == [] and opened.alerts() == []
    assert all(url.startswith(out.resolve().as_uri()) for url in opened.requests)


def test_a_row_opens_its_page_and_escape_comes_back(paged, open_report):
    out, _ = paged
    opened = open_report(out / "index.html")
    page = opened.page
    page.wait_for_selector("[data-matrix][data-loaded=all]", state="attached")
    last = page.locator("[data-matrix] tbody tr").last
    index = int(last.get_attribute("data-image"))
    last.locator("td.file").click()
    page.wait_for_url(f"**/pages/images-{index // PAGE:04d}.html#img-{index}")
    section = page.locator(f"#img-{index}")
    assert section.locator("img").first.evaluate("image => image.complete && image.naturalWidth > 0")
    page.keyboard.press("Escape")
    page.wait_for_url("**/index.html*")
    assert opened.console_errors == [] and opened.page_errors == [] and opened.alerts() == []


def test_hostile_names_stay_text_in_pages_and_chunks(paged, open_report):
    out, names = paged
    for page_file in sorted((out / "pages").glob("images-*.html")):
        opened = open_report(page_file)
        assert opened.alerts() == [] and opened.dialogs == [] and opened.page_errors == []
    opened = open_report(out / "index.html")
    opened.page.wait_for_selector("[data-matrix][data-loaded=all]", state="attached")
    files = opened.page.locator("[data-matrix] tbody td.file").all_text_contents()
    assert any(NAME_PAYLOADS[0] in text for text in files)
    assert opened.alerts() == [] and opened.dialogs == []


def test_the_first_screen_shows_a_bounded_number_of_thumbnails(paged, monkeypatch, tmp_path):
    from nnvis_reports.render import write_html

    out, _ = paged
    monkeypatch.setattr("nnvis_reports.render.FOLDER_LIMIT", 4)
    write_html(read_report(out, model=None), tmp_path / "index.html", page_size=PAGE)
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    grid = html.split('<ol class="folder-grid">')[1].split("</ol>")[0]
    assert grid.count("<li") == 4
    assert "The first 4 of" in html
    scatter = json.loads(re.search(r'class="scatter-data">(.*?)</script>', html, re.S)[1])
    assert scatter["page_size"] == PAGE  # a point opens the page its image is on
    assert scatter["src"].startswith("assets/scatter/")  # the points are beside the page, not in it


def test_the_scatter_loads_its_points_and_every_sprite_sheet(paged, open_report):
    out, _ = paged
    report = read_report(out)
    sprite = report["dataset"]["tsne"]["artifacts"][0]["sprite"]
    assert sprite["per_sheet"] == 5 and len(sprite["sheets"]) == 3 and sprite["path"] == sprite["sheets"][0]
    opened = open_report(out / "index.html")
    page = opened.page
    page.wait_for_function("() => document.querySelector('.scatter-view').nnvisScatter !== undefined")
    for _ in range(100):  # every sheet asked for (file:// loads leave no resource-timing entries)
        if len({url for url in opened.requests if ".sprite" in url}) == 3:
            break
        page.wait_for_timeout(50)
    assert len({url for url in opened.requests if ".sprite" in url}) == 3
    # Point 7 is cell 2 of sheet 1: hovering it names its image.
    scatter = page.locator(".scatter-view")
    scatter.locator("canvas").scroll_into_view_if_needed()
    x, y = scatter.evaluate("root => root.nnvisScatter.clientPosition(7)")
    page.mouse.move(x, y)
    names = [image["path"] for image in report["images"] if image["status"] == "ok"]
    tip = scatter.locator(".scatter-tip")
    assert tip.is_visible() and tip.text_content().split("\n")[0] in names
    assert opened.console_errors == [] and opened.page_errors == [] and opened.alerts() == []


def test_sprite_sheets_place_point_i_on_sheet_i_div_per_sheet(tmp_path):
    from PIL import Image

    from nnvis_reports.assets import save_sprites

    inputs = []
    for i in range(10):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(path)
        inputs.append(path)
    saved = save_sprites(inputs, tmp_path / "s.sprite.png", tile=4, per_sheet=4)
    assert [p.name for p in saved["sheets"]] == ["s.sprite.png", "s.sprite-1.png", "s.sprite-2.png"]
    assert saved["columns"] == 2 and saved["per_sheet"] == 4
    for i in range(10):
        sheet, cell = divmod(i, 4)
        row, column = divmod(cell, 2)
        with Image.open(saved["sheets"][sheet]) as picture:
            assert picture.getpixel((column * 4 + 1, row * 4 + 1))[0] == i * 20


def test_a_page_holds_fewer_images_when_each_ones_detail_is_large(paged, monkeypatch, tmp_path):
    from nnvis_reports import render
    from nnvis_reports.reader import model_label, model_view, upgrade

    out, _ = paged
    report = upgrade(read_report(out, model=None))
    views = [model_view(report, 0)]
    sections = [len("".join(render._environment().get_template("image_section.html.j2").generate(
        **render._context(report, views, [model_label(report, 0)], None), scatter_sources={}, entry=image)).encode(
        "utf-8"))
        for image in views[0]["images"] if image["status"] == "ok"]
    monkeypatch.setattr("nnvis_reports.paging.PAGE_BYTES", 2.5 * sum(sections) / len(sections))
    render.write_html(report, tmp_path / "index.html")  # up to PAGE_SIZE (500) images a page: the bytes decide
    pages = sorted((tmp_path / "pages").glob("images-*.html"))
    assert len(pages) == -(-len(views[0]["images"]) // 2)  # two images a page
    for image in views[0]["images"]:
        if image["status"] == "ok":
            page = (tmp_path / "pages" / f"images-{image['index'] // 2:04d}.html").read_text(encoding="utf-8")
            assert f'id="img-{image["index"]}"' in page
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    scatter = json.loads(re.search(r'class="scatter-data">(.*?)</script>', html, re.S)[1])
    assert scatter["page_size"] == 2  # a point opens the page its image is on
    rows = [row for path in sorted((tmp_path / "assets" / "matrix").glob("*.js")) for row in chunk_rows(path)[1]]
    hrefs = [re.fullmatch(r"pages/images-(\d+)\.html#img-(\d+)", row["href"]).groups() for row in rows]
    assert hrefs and all(int(page) == int(index) // 2 for page, index in hrefs)
