"""The report's image entries live on disk while a run goes on (nnvis_reports.image_store), so that
the report process's memory does not grow with the folder."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_reports import build_report
from nnvis_reports.image_store import ImageStore, images_json
from nnvis_reports.writer import ModelSection


def entry(index: int) -> dict:
    curve = [round(0.9 ** k, 6) for k in range(33)]
    return {"index": index, "path": f"cat/é_{index}.png", "status": "ok", "results": {
        "saliency": {"metrics": {"deletion_auc": index / 7}, "series": {"deletion": curve, "insertion": curve[::-1]}}}}


def test_entries_read_back_as_written_and_replaced_in_place():
    store = ImageStore(entry(i) for i in range(5))
    assert len(store) == 5 and store[3] == entry(3) and store[-1] == entry(4)
    changed = store[2]
    changed["status"] = "unreadable"
    assert store[2] == entry(2)  # a read is a copy: nothing changes until it is assigned back
    store[2] = changed
    assert store[2]["status"] == "unreadable" and store[1] == entry(1) and store[3] == entry(3)
    assert list(store) == [entry(0), entry(1), changed, entry(3), entry(4)]
    assert store[1:3] == [entry(1), changed]
    assert json.loads(store.raw(4)) == entry(4)
    assert json.loads("".join(images_json(store))) == list(store)
    assert json.loads("".join(images_json([entry(0)]))) == [entry(0)]
    with pytest.raises(IndexError):
        store[5]
    store.close()


def test_entries_on_disk_cost_a_few_bytes_of_memory_each():
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = ImageStore(entry(i) for i in range(4000))
    on_disk = tracemalloc.get_traced_memory()[0] - before
    in_memory = [entry(i) for i in range(4000)]
    as_objects = tracemalloc.get_traced_memory()[0] - before - on_disk
    tracemalloc.stop()
    assert len(store) == len(in_memory)
    assert on_disk < 64 * 4000  # two 8-byte positions an image, and the arrays' spare room
    assert as_objects > 30 * on_disk
    store.close()


def test_a_run_keeps_only_the_entries_of_images_still_being_computed(demo_images, tmp_path, monkeypatch):
    held = []
    settle = ModelSection._settle

    def watched(self, index, finished=False):
        settle(self, index, finished)
        held.append(len(self.open))

    monkeypatch.setattr(ModelSection, "_settle", watched)
    outcome = build_report(ReportConfig(demo_images, tmp_path / "out", plugins=["saliency", "gradcam", "tsne"],
                                        batch_size=4), load_registry())
    assert outcome.exit_code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    images = report["by_model"][0]["images"]
    assert len(images) == 40 and all(image["results"].keys() == {"saliency", "gradcam"} for image in images)
    assert max(held) <= 4  # at most a batch of images is in memory, never the folder
