"""Class confusion of the model's top prediction against the known classes, for the report's first screen."""

from __future__ import annotations

from collections import Counter

MATRIX_LIMIT = 20  # more classes than this in play: list the confusions instead of drawing the matrix


def confusion(report: dict) -> dict | None:
    """None when no image has a known class; else the classes in play (class index order), the
    counts[true][predicted] over them, and the off-diagonal pairs, most frequent first."""
    pairs: Counter = Counter()
    names: dict[int, str] = {}
    for image in report["images"]:
        truth, predictions = image.get("true_class"), image.get("predictions")
        if image["status"] != "ok" or not truth or not predictions:
            continue
        said = predictions[0]
        names[truth["index"]], names[said["index"]] = truth["name"], said["name"]
        pairs[truth["index"], said["index"]] += 1
    if not pairs:
        return None
    order = sorted(names)
    position = {index: i for i, index in enumerate(order)}
    counts = [[0] * len(order) for _ in order]
    for (truth, said), count in pairs.items():
        counts[position[truth]][position[said]] = count
    wrong = sorted(((count, t, s) for (t, s), count in pairs.items() if t != s),
                   key=lambda entry: (-entry[0], names[entry[1]], names[entry[2]]))
    return {"classes": [names[i] for i in order], "indices": order, "counts": counts,
            "draw": len(order) <= MATRIX_LIMIT,
            "confusions": [{"truth": names[t], "predicted": names[s], "truth_index": t, "predicted_index": s,
                            "count": c} for c, t, s in wrong],
            "right": sum(count for (t, s), count in pairs.items() if t == s), "total": sum(pairs.values())}
