"""The concept atlas: every method's concepts (report.json `concepts` entries) gathered by class.

TCAV tests the user's concepts for a class, CRAFT finds a class's own, a sparse dictionary finds
the folder's: each plugin writes one `concepts` entry per class (or one for the folder), and the
report shows them together, one section per class, so the methods can be read side by side. The
numbers of each row's bar are worked out here; the template only places them (Jinja escapes every
label).
"""

from __future__ import annotations

BAR_WIDTH = 160  # px of a row's importance bar


def atlas_groups(view: dict, plugins: dict) -> list[dict]:
    """[{group, anchor, entries: [{plugin, entry}]}] for one model's dataset results: classes in
    the order a method first names them, the whole folder ("") last."""
    groups: dict[str, list[dict]] = {}
    for name, result in (view.get("dataset") or {}).items():
        for entry in result.get("artifacts") or []:
            if entry.get("kind") == "concepts":
                groups.setdefault(entry["group"], []).append({"plugin": plugins[name], "entry": entry})
    order = sorted(groups, key=lambda group: group == "")  # stable: the folder's goes last
    return [{"group": group, "anchor": f"concepts-{number}", "entries": groups[group]}
            for number, group in enumerate(order)]


def atlas_anchors(groups: list[dict]) -> dict[str, str]:
    """{group: its section's id}, for a plugin's card to link to."""
    return {group["group"]: group["anchor"] for group in groups}


def concept_rows(entry: dict, width: int = BAR_WIDTH) -> list[dict]:
    """Each concept of an entry with its bar in a `width`-px box: {concept, bar, whisker, chance}
    (bar: {width}; whisker: {x1, x2} or None; chance: {x, width} of the random concepts' mean +- sd,
    or None). All rows of an entry share one scale, from 0 to the largest number drawn."""
    concepts = entry["concepts"]
    drawn = [v for c in concepts for v in (c["value"], c["high"]) if v is not None]
    drawn += [c["chance"][0] + c["chance"][1] for c in concepts if c["chance"]]
    top = max([abs(v) for v in drawn] + [1e-12])

    def x(value: float) -> float:
        return round(min(max(value, 0.0), top) / top * width, 1)

    rows = []
    for concept in concepts:
        value, low, high, chance = concept["value"], concept["low"], concept["high"], concept["chance"]
        rows.append({
            "concept": concept,
            "bar": {"width": x(value)} if value is not None else None,
            "whisker": {"x1": x(low), "x2": x(high)} if low is not None else None,
            "chance": ({"x": x(chance[0] - chance[1]), "width": round(x(chance[0] + chance[1])
                                                                       - x(chance[0] - chance[1]), 1)}
                       if chance else None),
        })
    return rows
