"""What the report shows of a shape-bias measurement: the per-category chart, the counts, a summary."""

from __future__ import annotations

from nnvis_core import Chart, Table, Text
from nnvis_plugins.shape_bias.counting import CueCounts

REFERENCE = "for reference, Geirhos et al. (2019) measured about 0.96 for humans and 0.22 for an ImageNet ResNet-50"


def _share(value: float | None) -> str | float:
    return "-" if value is None else round(value, 3)


def category_chart(overall: CueCounts, per_category: dict[str, CueCounts]) -> Chart | None:
    """Like the paper's figure: per shape category, the share of shape and of texture decisions among
    those that follow a cue, with the overall shape bias as a flat line; None when no decision follows a cue."""
    measured = {name: counts.shape_bias for name, counts in per_category.items() if counts.shape_bias is not None}
    if overall.shape_bias is None or not measured:
        return None
    return Chart("shape bias per category", list(range(len(measured))),
                 {"shape decisions": list(measured.values()),
                  "texture decisions": [1 - value for value in measured.values()],
                  "overall shape bias": [overall.shape_bias] * len(measured)},
                 x_ticks=list(measured), x_label="shape category",
                 y_label="fraction of the decisions that follow a cue",
                 caption="categories where no decision followed either cue are left out; the y axis spans the data")


def counts_table(overall: CueCounts, per_category: dict[str, CueCounts]) -> Table:
    rows = [[name, c.images, c.shape, c.texture, c.neither, _share(c.shape_bias)] for name, c in per_category.items()]
    rows.append(["all", overall.images, overall.shape, overall.texture, overall.neither, _share(overall.shape_bias)])
    return Table("decisions per shape category",
                 ["shape category", "images", "follow shape", "follow texture", "follow neither", "shape bias"], rows,
                 caption="shape bias = follow shape / (follow shape + follow texture)")


def summary(overall: CueCounts, decided_over: str, left_out: int) -> Text:
    cued = overall.shape + overall.texture
    if overall.shape_bias is None:
        text = f"none of the {overall.images} decisions follows the shape or the texture: no shape bias to measure"
    else:
        text = (f"shape bias {overall.shape_bias:.2f}: of the {cued} decisions that follow a cue, {overall.shape} "
                f"follow the shape and {overall.texture} the texture; {overall.neither} of the {overall.images} "
                f"images got a decision that follows neither ({REFERENCE})")
    caption = f"decisions over {decided_over}"
    if left_out:
        caption += f"; {left_out} images without cue labels or with the same class for both cues were left out"
    return Text("shape bias", text, caption=caption)
