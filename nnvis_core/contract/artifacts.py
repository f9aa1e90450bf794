"""What a plugin returns: data, never HTML.

Every artifact has a title and an optional caption; the report decides how to
draw it. Arrays are numpy so that plugins need not know about the writer, and so
the raw values can be saved beside the pictures for other tools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np


class ArtifactError(ValueError):
    """An artifact that the report cannot draw (wrong shape, NaN, ...)."""


@dataclass
class Artifact:
    title: str
    caption: str = field(default="", kw_only=True)

    kind = "artifact"

    def validate(self) -> None:
        """Raise ArtifactError when the data cannot be drawn."""


def _finite(name: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        raise ArtifactError(f"{name} contains NaN or infinite values")


def _check_rgb(pixels, shape_label: str, finite_label: str) -> None:
    """An (H, W, 3) picture of finite values; the labels name it in the error."""
    p = np.asarray(pixels)
    if p.ndim != 3 or p.shape[2] != 3:
        raise ArtifactError(f"{shape_label} must be (H, W, 3), got {p.shape}")
    _finite(finite_label, p.astype(np.float64))


@dataclass
class Image(Artifact):
    """An RGB picture: uint8 array of shape (H, W, 3), or float in [0, 1]."""

    pixels: np.ndarray
    kind = "image"

    def validate(self) -> None:
        _check_rgb(self.pixels, f"image '{self.title}'", f"image '{self.title}'")


@dataclass
class Heatmap(Artifact):
    """A scalar map over the input, drawn as a colour overlay with a colour bar.

    values: float array (H, W). The raw array is saved as .npy beside the PNG.
    signed: True when negative values mean something (drawn with a diverging map).
    overlay: draw over the input image (True) or alone (False).
    """

    values: np.ndarray
    signed: bool = False
    overlay: bool = True
    label: str = ""  # what the values measure, shown by the colour bar
    value_range: tuple[float, float] | None = None  # colour bar limits; default from the data
    kind = "heatmap"

    def validate(self) -> None:
        v = np.asarray(self.values)
        if v.ndim != 2:
            raise ArtifactError(f"heatmap '{self.title}' must be (H, W), got {v.shape}")
        _finite(f"heatmap '{self.title}'", v)


@dataclass
class CategoricalMap(Artifact):
    """A map of integer categories with a legend {category: label}."""

    categories: np.ndarray
    legend: dict[int, str]
    overlay: bool = True
    kind = "categorical"

    def validate(self) -> None:
        c = np.asarray(self.categories)
        if c.ndim != 2 or not np.issubdtype(c.dtype, np.integer):
            raise ArtifactError(f"categorical map '{self.title}' must be an integer (H, W) array")
        missing = set(np.unique(c).tolist()) - set(self.legend)
        if missing:
            raise ArtifactError(f"categorical map '{self.title}' has no legend for {sorted(missing)}")


@dataclass
class Table(Artifact):
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    kind = "table"

    def validate(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ArtifactError(
                    f"table '{self.title}': row of {len(row)} cells for {len(self.columns)} columns"
                )


@dataclass
class Scatter(Artifact):
    """Points in 2-D, each optionally tied to an input image (for thumbnails).

    points: float array (N, 2); labels: one category name per point;
    image_ids: index into the report's images list per point, or None.
    true_labels: optional second category per point (the true class), offered as a
    colouring toggle; features: optional (N, D) vectors the points embed, saved as
    .npy beside the points for reuse.
    """

    points: np.ndarray
    labels: Sequence[str] = ()
    image_ids: Sequence[int | None] = ()
    true_labels: Sequence[str] = ()
    features: np.ndarray | None = None
    kind = "scatter"

    def validate(self) -> None:
        p = np.asarray(self.points)
        if p.ndim != 2 or p.shape[1] != 2:
            raise ArtifactError(f"scatter '{self.title}' must be (N, 2), got {p.shape}")
        _finite(f"scatter '{self.title}'", p)
        for name, seq in (("labels", self.labels), ("image_ids", self.image_ids), ("true_labels", self.true_labels)):
            if len(seq) not in (0, len(p)):
                raise ArtifactError(f"scatter '{self.title}': {len(seq)} {name} for {len(p)} points")
        if self.features is not None:
            f = np.asarray(self.features)
            if f.ndim != 2 or len(f) != len(p):
                raise ArtifactError(f"scatter '{self.title}': features must be (N, D) for {len(p)} points, "
                                    f"got {f.shape}")
            _finite(f"scatter '{self.title}' features", f)


@dataclass
class Chart(Artifact):
    """Line chart: one or more named series over shared x positions.

    x_ticks: optional labels for the x positions (e.g. layer names).
    minimized: each series is a loss the plugin minimized (an optimization's curve): a series that
    ends no lower than it starts marks the result degenerate in the report.
    """

    x: Sequence[float]
    series: dict[str, Sequence[float]]
    x_label: str = ""
    y_label: str = ""
    x_ticks: Sequence[str] = ()
    minimized: bool = False
    kind = "chart"

    def validate(self) -> None:
        if not self.series:
            raise ArtifactError(f"chart '{self.title}' has no series")
        for name, values in self.series.items():
            if len(values) != len(self.x):
                raise ArtifactError(f"chart '{self.title}': series {name!r} has {len(values)} values "
                                    f"for {len(self.x)} x")
            _finite(f"chart '{self.title}'", np.asarray(values, dtype=np.float64))
        if len(self.x_ticks) not in (0, len(self.x)):
            raise ArtifactError(f"chart '{self.title}': {len(self.x_ticks)} ticks for {len(self.x)} x")


@dataclass
class BarChart(Artifact):
    """Bars: one value per label (a count or a score per class), side by side for several series.

    labels: the categories along the x axis; series: {name: one value per label}, drawn as
    grouped bars from zero (negative values hang below it). A histogram is bars over bins:
    BarChart.histogram(title, values, bins) counts them for you.
    """

    labels: Sequence[str]
    series: dict[str, Sequence[float]]
    x_label: str = ""
    y_label: str = ""
    kind = "bars"

    @classmethod
    def histogram(cls, title: str, values: Any, bins: int = 10, name: str = "count", **kwargs: Any) -> "BarChart":
        """The bars of a histogram of `values` over `bins` equal bins, labelled by their range."""
        counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins)
        labels = [f"{low:.3g} to {high:.3g}" for low, high in zip(edges[:-1], edges[1:])]
        return cls(title, labels, {name: [float(c) for c in counts]}, **kwargs)

    def validate(self) -> None:
        if not len(self.labels):
            raise ArtifactError(f"bar chart '{self.title}' has no labels")
        if not self.series:
            raise ArtifactError(f"bar chart '{self.title}' has no series")
        for name, values in self.series.items():
            if len(values) != len(self.labels):
                raise ArtifactError(
                    f"bar chart '{self.title}': series {name!r} has {len(values)} values for {len(self.labels)} labels"
                )
            _finite(f"bar chart '{self.title}'", np.asarray(values, dtype=np.float64))


@dataclass
class Gallery(Artifact):
    """A grid of small pictures, each with a label, optionally linked to a report image.

    images: one (H, W, 3) array per tile (uint8, or float in [0, 1]), or None for a
    tile that shows the input of report image `image_ids[i]` (nearest neighbours,
    top-activating examples: no second copy of the picture is written).
    labels: a short caption per tile; image_ids: index into the report's images per
    tile, or None; columns: tiles per row (0 lets the page choose); tile_size: the
    side in CSS pixels each tile is shown at (64; larger for pictures worth a closer
    look, such as distilled images).
    """

    images: Sequence[np.ndarray | None]
    labels: Sequence[str] = ()
    image_ids: Sequence[int | None] = ()
    columns: int = 0
    tile_size: int = 64
    kind = "gallery"

    def validate(self) -> None:
        if not len(self.images):
            raise ArtifactError(f"gallery '{self.title}' has no images")
        for name, seq in (("labels", self.labels), ("image_ids", self.image_ids)):
            if len(seq) not in (0, len(self.images)):
                raise ArtifactError(f"gallery '{self.title}': {len(seq)} {name} for {len(self.images)} images")
        if self.columns < 0:
            raise ArtifactError(f"gallery '{self.title}': columns must be >= 0, got {self.columns}")
        if not 32 <= self.tile_size <= 256:
            raise ArtifactError(f"gallery '{self.title}': tile_size must be 32 to 256 px, got {self.tile_size}")
        for number, pixels in enumerate(self.images):
            if pixels is None:
                if not self.image_ids or self.image_ids[number] is None:
                    raise ArtifactError(f"gallery '{self.title}': tile {number} has neither pixels nor an image id")
                continue
            _check_rgb(pixels, f"gallery '{self.title}': tile {number}", f"gallery '{self.title}' tile {number}")


@dataclass
class SemanticDictionary(Artifact):
    """For each position of a grid over a picture, its strongest units, each drawn as a small picture.

    units: (h, w, k) integers, the top-k unit ids at each grid position, strongest first;
    activations: (h, w, k) floats, their activations (drawn as thumbnail sizes);
    thumbnails: {unit id: (H, W, 3) picture} for every unit with a positive activation
    somewhere (only those are drawn), except the units in `pending`;
    pending: units drawn as an empty box because their picture is not rendered yet
    (a render budget ran out; a later image or run renders them);
    image: the (H, W, 3) picture the grid covers (uint8, or float in [0, 1])
    (Olah et al. 2018, "The Building Blocks of Interpretability"). The report lets the
    reader click a position to see its units.
    """

    image: np.ndarray
    units: np.ndarray
    activations: np.ndarray
    thumbnails: Mapping[int, np.ndarray]
    unit_label: str = "channel"
    pending: Sequence[int] = ()
    kind = "dictionary"

    def validate(self) -> None:
        units, activations = np.asarray(self.units), np.asarray(self.activations)
        name = f"semantic dictionary '{self.title}'"
        if units.ndim != 3 or not np.issubdtype(units.dtype, np.integer):
            raise ArtifactError(f"{name}: units must be an integer (h, w, k) array, got {units.dtype} {units.shape}")
        if activations.shape != units.shape:
            raise ArtifactError(f"{name}: activations {activations.shape} do not match units {units.shape}")
        _finite(name, activations.astype(np.float64))
        missing = sorted(set(units[activations > 0].tolist()) - {int(u) for u in self.thumbnails}
                         - {int(u) for u in self.pending})
        if missing:
            raise ArtifactError(f"{name}: no thumbnail for units {missing[:10]}")
        pictures = {"image": self.image, **dict(self.thumbnails)}
        for unit, pixels in pictures.items():
            _check_rgb(pixels, f"{name}: picture {unit}", f"{name} picture {unit}")


@dataclass
class Concept:
    """One concept, as a row of the concept atlas: what it looks like and how much it counts.

    crops: pictures of it ((H, W, 3), uint8 or float in [0, 1]): the crops that hold most of it, or
    examples of a user's concept; image_ids: the report image each crop is cut from (a link), or
    None; value: its importance or score, with an interval (low, high) around it when one is known;
    share: the share (0 to 1) of the class's crops or images it is the strongest concept in;
    significant: a test's decision (TCAV), None when there is no test; chance: (mean, sd) of what
    random concepts score on the same scale; picture: what the concept's direction looks like to the
    model (a feature visualization), or None.
    """

    label: str
    crops: Sequence[np.ndarray] = ()
    image_ids: Sequence[int | None] = ()
    value: float | None = None
    low: float | None = None
    high: float | None = None
    share: float | None = None
    significant: bool | None = None
    chance: tuple[float, float] | None = None
    picture: np.ndarray | None = None


@dataclass
class ConceptAtlas(Artifact):
    """The concepts a method found or tested for one class (`group`, a class name) or for the whole
    folder (`group` ""), most important first. The report gathers every method's atlases by class
    into one "Concepts" section, so that TCAV, CRAFT and a dictionary can be read side by side.

    value_label: what `value` measures (with its scale); share_label: what `share` counts.
    """

    group: str
    concepts: Sequence[Concept]
    value_label: str = "importance"
    share_label: str = "share"
    kind = "concepts"

    def validate(self) -> None:
        name = f"concept atlas '{self.title}'"
        if not len(self.concepts):
            raise ArtifactError(f"{name} has no concepts")
        for concept in self.concepts:
            if not isinstance(concept, Concept):
                raise ArtifactError(f"{name}: {type(concept).__name__} is not a Concept")
            where = f"{name}, {concept.label}"
            if len(concept.image_ids) not in (0, len(concept.crops)):
                raise ArtifactError(f"{where}: {len(concept.image_ids)} image_ids for {len(concept.crops)} crops")
            numbers = [v for v in (concept.value, concept.low, concept.high, concept.share,
                                   *(concept.chance or ())) if v is not None]
            _finite(where, np.asarray(numbers, dtype=np.float64))
            if (concept.low is None) != (concept.high is None):
                raise ArtifactError(f"{where}: give both low and high, or neither")
            if concept.share is not None and not 0 <= concept.share <= 1:
                raise ArtifactError(f"{where}: share {concept.share} is not in [0, 1]")
            for number, pixels in enumerate(concept.crops):
                _check_rgb(pixels, f"{where}: crop {number}", f"{where} crop {number}")
            if concept.picture is not None:
                _check_rgb(concept.picture, f"{where}: picture", f"{where} picture")


@dataclass
class Text(Artifact):
    text: str
    kind = "text"


ARTIFACT_TYPES = (Image, Heatmap, CategoricalMap, Table, Scatter, Chart, BarChart, Gallery, SemanticDictionary,
                  ConceptAtlas, Text)


@dataclass
class Result:
    """Artifacts plus named scalar metrics (e.g. a completeness gap).

    A plugin may return a plain list of artifacts or a Result. A dataset plugin
    may also attach artifacts to single images (`image_artifacts`, keyed by the
    report image index, e.g. each image's nearest neighbours): the report shows
    them in that image's section, under the plugin's name.
    """

    artifacts: list[Artifact]
    metrics: dict[str, float] = field(default_factory=dict)
    image_artifacts: dict[int, list[Artifact]] = field(default_factory=dict)

    def validate(self) -> None:
        for image_id, artifacts in self.image_artifacts.items():
            if not isinstance(image_id, (int, np.integer)) or isinstance(image_id, bool) or image_id < 0:
                raise ArtifactError(f"image_artifacts key {image_id!r} is not a report image index")
            Result(list(artifacts)).validate()
        for artifact in self.artifacts:
            if not isinstance(artifact, ARTIFACT_TYPES):
                raise ArtifactError(
                    f"returned {type(artifact).__name__}, not an nnvis artifact "
                    f"({', '.join(t.__name__ for t in ARTIFACT_TYPES)})"
                )
            artifact.validate()
        for name, value in self.metrics.items():
            if not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ArtifactError(f"metric {name!r} is {value!r}, not a finite number")


def as_result(returned: object) -> Result:
    """Normalize what a plugin returned, raising ArtifactError for anything else."""
    if isinstance(returned, Result):
        result = returned
    elif isinstance(returned, (list, tuple)):
        result = Result(list(returned))
    else:
        raise ArtifactError(f"returned {type(returned).__name__}; expected a list of artifacts or a Result")
    result.validate()
    return result
