"""Class confusion on the report's first screen: counts from the images' known and predicted classes."""

from __future__ import annotations

from nnvis_reports.confusion import MATRIX_LIMIT, confusion


def image(truth, said, status="ok"):
    names = {i: f"class {i}" for i in range(100)}
    return {"status": status, "true_class": None if truth is None else {"index": truth, "name": names[truth]},
            "predictions": [{"index": said, "name": names[said]}]}


def test_counts_true_against_predicted_over_the_classes_in_play():
    table = confusion({"images": [image(3, 3), image(3, 1), image(1, 1), image(1, 1), image(None, 7),
                                  image(3, 1, status="unreadable")]})
    assert table["classes"] == ["class 1", "class 3"]  # class index order; 7 has no known class
    assert table["counts"] == [[2, 0], [1, 1]]
    assert (table["right"], table["total"]) == (3, 4)
    assert table["indices"] == [1, 3]
    assert table["confusions"] == [{"truth": "class 3", "predicted": "class 1", "truth_index": 3, "predicted_index": 1,
                                    "count": 1}]
    assert table["draw"]


def test_no_known_class_no_table_and_many_classes_a_list():
    assert confusion({"images": [image(None, 2)]}) is None
    many = confusion({"images": [image(i, (i + 1) % 30) for i in range(30)] + [image(5, 6)]})
    assert len(many["classes"]) == 30 > MATRIX_LIMIT and not many["draw"]
    assert many["confusions"][0] == {"truth": "class 5", "predicted": "class 6", "truth_index": 5,
                                     "predicted_index": 6, "count": 2}
