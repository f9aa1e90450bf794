"""Transformer-native methods: what a vision transformer's attention shows about an image.

Each is a module with a Captum-like ``attribute(model, inputs, ...)`` returning
``(N, 1, H, W)`` maps and a built-in plugin registered through its own entry point:

- rollout: attention rollout (Abnar & Zuidema 2020), class-agnostic;
- relevance: gradient-weighted attention relevance towards a class
  (Chefer, Gur & Wolf 2021);
- maps: what the class token attends to, layer by layer and head by head.

They read attention through :func:`nnvis_core.toolkit.attention.captured_attention`
and the patch grid through :func:`nnvis_core.models.outputs.token_layout`.

>>> from nnvis_plugins.transformer import rollout
>>> maps = rollout.attribute(vit, images, head_fusion="mean")
"""

from nnvis_plugins.transformer import maps, relevance, rollout  # noqa: F401
