"""The concept atlas: ConceptAtlas artifacts validated, cached, kept in report.json and gathered by
class in index.html, one section per class with every method's rows, every label escaped."""

from __future__ import annotations

import json
import re
from importlib import resources

import numpy as np
import pytest
from conftest import registry_with

from nnvis_core import Concept, ConceptAtlas, Plugin, Result, Scope
from nnvis_core.contract.artifacts import ArtifactError
from nnvis_core.run.cache import decode_result, encode_result
from nnvis_core.run.config import ReportConfig
from nnvis_reports import build_report
from nnvis_reports.atlas import concept_rows
from nnvis_reports.reader import read_report

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads(resources.files("nnvis_reports").joinpath("report.schema.json").read_text())
HOSTILE = "<script>alert(1)</script>"
CROP = np.full((8, 8, 3), 200, np.uint8)


def class_atlas(group: str, title: str, image_id: int) -> ConceptAtlas:
    return ConceptAtlas(title, group, [
        Concept(HOSTILE, [CROP, CROP], [image_id, None], value=0.6, low=0.5, high=0.7, share=0.75, picture=CROP),
        Concept("stripes", [CROP], value=0.2, significant=False, chance=(0.5, 0.1)),
    ], value_label="importance <i>", share_label="crops")


class Finder(Plugin):
    """Two methods' worth of concepts: two for one class, one for the folder."""

    name = "finder"
    title = "Finder"
    description = "Made-up concepts, as a concept method returns them."
    scope = Scope.DATASET

    def run_dataset(self, ctx, items, params):
        first = min(item.record.index for item in items)
        return Result([class_atlas("circle", "first method", first), class_atlas(HOSTILE, "hostile class", first),
                       class_atlas("circle", "second method", first),
                       ConceptAtlas("atoms", "", [Concept("atom 3", [CROP], [first], value=4.0, share=0.5)])])


def test_a_concept_needs_matching_crops_and_sane_numbers():
    with pytest.raises(ArtifactError, match="2 image_ids for 1 crops"):
        ConceptAtlas("t", "c", [Concept("a", [CROP], [0, 1])]).validate()
    with pytest.raises(ArtifactError, match="low and high"):
        ConceptAtlas("t", "c", [Concept("a", value=1.0, low=0.5)]).validate()
    with pytest.raises(ArtifactError, match="share 1.5"):
        ConceptAtlas("t", "c", [Concept("a", share=1.5)]).validate()
    with pytest.raises(ArtifactError, match="NaN"):
        ConceptAtlas("t", "c", [Concept("a", value=float("nan"))]).validate()
    with pytest.raises(ArtifactError, match="no concepts"):
        ConceptAtlas("t", "c", []).validate()


def test_an_atlas_survives_the_cache():
    result = Result([class_atlas("circle", "first", 3)])
    meta, arrays = encode_result(result, 1.0)
    back, _ = decode_result(json.loads(json.dumps(meta)), {f"a{i}": a for i, a in enumerate(arrays)})
    [atlas] = back.artifacts
    assert atlas.group == "circle" and [c.label for c in atlas.concepts] == [HOSTILE, "stripes"]
    assert atlas.concepts[0].image_ids == [3, None] and atlas.concepts[1].chance == [0.5, 0.1]
    np.testing.assert_array_equal(atlas.concepts[0].crops[1], CROP)


def test_rows_share_one_scale_with_the_interval_and_chance_drawn_on_it():
    entry = {"concepts": [
        {"value": 0.6, "low": 0.5, "high": 0.7, "chance": None},
        {"value": 0.2, "low": None, "high": None, "chance": [0.5, 0.1]},
    ]}
    first, second = concept_rows(entry, width=140)  # the largest number drawn, 0.7, is 140 px
    assert first["bar"] == {"width": 120.0} and first["whisker"] == {"x1": 100.0, "x2": 140.0}
    assert first["chance"] is None and second["whisker"] is None
    assert second["bar"] == {"width": 40.0} and second["chance"] == {"x": 80.0, "width": 40.0}


def test_the_report_gathers_every_methods_concepts_by_class(few_demo_images, tmp_path):
    out = tmp_path / "out"
    outcome = build_report(ReportConfig(few_demo_images, out, plugins=["finder"]), registry_with(Finder()))
    assert outcome.exit_code == 0
    jsonschema.validate(json.loads((out / "report.json").read_text(encoding="utf-8")), SCHEMA)
    entries = read_report(out)["dataset"]["finder"]["artifacts"]
    assert [e["group"] for e in entries] == ["circle", HOSTILE, "circle", ""]
    crop = entries[0]["concepts"][0]["crops"][0]
    assert (out / crop["path"]).is_file() and crop["image_id"] == entries[3]["concepts"][0]["crops"][0]["image_id"]
    assert (out / entries[0]["concepts"][0]["picture"]).is_file() and entries[0]["concepts"][1]["picture"] is None

    page = (out / "index.html").read_text(encoding="utf-8")
    atlas = page[page.index('<section id="concepts" class="global concept-atlas">'):page.index('<section id="dataset"')]
    groups = re.findall(r'<section id="(concepts-\d+)" class="atlas-group">\s*<h3>(.*?)</h3>', atlas)
    assert [title for _, title in groups] == ["circle", "&lt;script&gt;alert(1)&lt;/script&gt;", "Whole folder"]
    circle = atlas.split('<section id="concepts-1"')[0]
    assert circle.count('<figure class="artifact concepts">') == 2  # both methods' rows under the class
    assert circle.count("<tr class=") == 4 and circle.count('class="whisker"') == 2 and circle.count('"chance"') == 2
    assert "<script>alert" not in page and "importance &lt;i&gt;" in atlas
    assert circle.count('<td class="concept-picture"><img') == 2 and circle.count("looks like</th>") == 2
    assert f'href="#img-{crop["image_id"]}"' in atlas  # a crop opens its image
    assert '<a href="#concepts">Concepts</a>' in page  # in the navigation
    card = page[page.index('<section id="dataset"'):]
    assert card.count("in the concept atlas</a>") == 4 and 'href="#concepts-0"' in card
