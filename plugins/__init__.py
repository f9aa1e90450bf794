"""nnvis's built-in visualization plugins.

Each module is registered through the `nnvis` entry-point group in
pyproject.toml, exactly as a third-party plugin would be.
"""

from nnvis_core.moved import keep_old_paths

# Saliency moved into the attribution family; its old path keeps working.
keep_old_paths({"nnvis_plugins.saliency": "nnvis_plugins.attribution.saliency"})
