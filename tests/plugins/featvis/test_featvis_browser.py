"""The semantic dictionary in a real browser: clicking a position shows that position's channels."""

from __future__ import annotations

from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_reports import build_report
from nnvis_reports.reader import read_report


def shown_units(page, section: str) -> list[dict]:
    return page.evaluate(
        """(section) => [...document.querySelectorAll(section + ' .dictionary-entry figure.unit')].map(f => ({
            caption: f.querySelector('figcaption').textContent,
            src: f.querySelector('img').getAttribute('src'),
            width: f.querySelector('img').style.width,
            rendered: f.querySelector('img').getBoundingClientRect().width}))""", section)


def test_clicking_a_position_shows_its_dictionary(few_demo_images, tmp_path, open_report, monkeypatch):
    monkeypatch.setenv("NNVIS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    params = {"semantic_dictionary": {"steps": "2", "transforms": "false", "size": "32", "top": "4"}}
    build_report(ReportConfig(few_demo_images, out, plugins=["semantic_dictionary"], params=params), load_registry())
    report = read_report(out)
    image = report["images"][1]
    [dictionary] = image["results"]["semantic_dictionary"]["artifacts"]
    section = f"#img-{image['index']}"

    opened = open_report(out / "index.html")
    page = opened.page
    page.evaluate("Promise.all([...document.images].map(i => i.loading = 'eager'))")
    # page.evaluate runs outside the page's CSP; wait_for_function polls with eval, which it forbids.
    page.evaluate("Promise.all([...document.images].map(i => i.decode().catch(() => null)))")
    assert page.evaluate("[...document.images].filter(i => i.naturalWidth === 0).length") == 0

    def expect(index: int) -> None:
        cell = dictionary["cells"][index]
        shown = shown_units(page, section)
        assert [s["caption"].split(":")[0] for s in shown] == [f"channel {u['unit']}" for u in cell]
        assert [s["src"] for s in shown] == [dictionary["thumbnails"][str(u["unit"])] for u in cell]
        assert [s["width"] for s in shown] == [f"{u['size']}px" for u in cell]
        assert [round(s["rendered"]) for s in shown] == [u["size"] for u in cell]
        pressed = page.evaluate(f"[...document.querySelectorAll('{section} button[aria-pressed=true]')]"
                                ".map(b => Number(b.dataset.cell))")
        assert pressed == [index]
        row, column = divmod(index, dictionary["grid"][1])
        assert page.locator(f"{section} .dictionary-where").inner_text().startswith(f"row {row}, column {column}")

    expect(dictionary["selected"])  # drawn by the page itself, before any click
    busy = [i for i, cell in enumerate(dictionary["cells"]) if len(cell) >= 2 and i != dictionary["selected"]]
    assert busy, "no other position with two active channels to click"
    for index in (busy[0], busy[-1]):
        page.click(f"{section} button[data-cell='{index}']")
        expect(index)
    empty = [i for i, cell in enumerate(dictionary["cells"]) if not cell]
    if empty:
        page.click(f"{section} button[data-cell='{empty[0]}']")
        assert shown_units(page, section) == []
        assert "no active channel" in page.locator(f"{section} .dictionary-where").inner_text()
    # the other images' dictionaries did not change
    other = report["images"][0]["results"]["semantic_dictionary"]["artifacts"][0]
    assert len(shown_units(page, f"#img-{report['images'][0]['index']}")) == len(other["cells"][other["selected"]])
    assert opened.console_errors == [] and opened.page_errors == []
    assert all(url.startswith("file://") for url in opened.requests)


def test_a_channel_left_for_later_is_an_empty_box_of_its_size(few_demo_images, tmp_path, open_report, monkeypatch):
    monkeypatch.setenv("NNVIS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    params = {"semantic_dictionary": {"steps": "2", "transforms": "false", "size": "32", "top": "4", "renders": "1"}}
    build_report(ReportConfig(few_demo_images, out, plugins=["semantic_dictionary"], params=params), load_registry())
    image = read_report(out)["images"][0]
    [dictionary] = image["results"]["semantic_dictionary"]["artifacts"]
    section = f"#img-{image['index']}"
    cells = [i for i, cell in enumerate(dictionary["cells"]) if any(u["unit"] in dictionary["pending"] for u in cell)]
    assert cells, "no position shows a channel left for later"

    opened = open_report(out / "index.html")
    page = opened.page
    page.click(f"{section} button[data-cell='{cells[-1]}']")
    boxes = page.evaluate(
        """(section) => [...document.querySelectorAll(section + ' .dictionary-entry figure.unit')].map(f => ({
            caption: f.querySelector('figcaption').textContent,
            pending: f.querySelector('.pending') !== null, image: f.querySelector('img') !== null,
            width: Math.round(f.firstElementChild.getBoundingClientRect().width)}))""", section)
    cell = dictionary["cells"][cells[-1]]
    assert [b["pending"] for b in boxes] == [u["unit"] in dictionary["pending"] for u in cell]
    assert [b["image"] for b in boxes] == [u["unit"] not in dictionary["pending"] for u in cell]
    assert [b["width"] for b in boxes] == [u["size"] for u in cell]
    assert opened.console_errors == [] and opened.page_errors == []
