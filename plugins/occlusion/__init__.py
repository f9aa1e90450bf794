"""Occlusion sensitivity (Zeiler & Fergus 2014) with exact incremental inference
(Nakandala et al. 2019).

>>> from nnvis_plugins import occlusion
>>> maps = occlusion.occlusion_maps(model, image, window=32, stride=8, occluder=occlusion.grey(mean, std))
>>> drops = occlusion.attribute(model, images, target=3)     # (N, 1, H, W)

Modules: windows (positions, fills, maps), program (tracing), patches (per-position
rectangles), incremental (the engine, exact or approximate), choice (which engine
`auto` runs), runners (incremental, approximate or whole-image batches), method (the
functions above), plugin (the report plugin).
"""

from nnvis_plugins.occlusion.method import OcclusionMaps, attribute, occlusion_maps  # noqa: F401
from nnvis_plugins.occlusion.windows import OcclusionError, grey  # noqa: F401
