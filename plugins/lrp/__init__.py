"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019) for convnets, equal to Zennit's.

>>> from nnvis_plugins import lrp
>>> maps = lrp.attribute(model, images, target=3, composite="epsilon-plus-flat")   # (N, C, H, W)

Modules, in the order a pass uses them: composites (which rule each layer gets), canonize (the
rewritten deep copy: BatchNorm merged, ResNet sums split), layers (the layers ruled by their type,
and those refused by it), rules (the rules' arithmetic), backward (autograd functions that carry
relevance), calls (what each torch call a forward makes does to relevance), functional (the watch
that gives each such call its rule or refuses it), propagate (one pass,
:func:`attribute`), plugin (the report plugin). docs/lrp.md has the formulas and the parity
figures against Zennit.

AttnLRP for vision transformers (the `attnlrp` plugin) reuses all of it: transformer_rules (softmax,
matrix products, LayerNorm), transformer_watch (attention written out, sums of two activations,
F.linear and F.normalize), attnlrp (one pass, :func:`nnvis_plugins.lrp.attnlrp.attribute`, and the
plugin); parity with LXT in docs/lrp.md.
"""

from nnvis_plugins.lrp.composites import COMPOSITES  # noqa: F401
from nnvis_plugins.lrp.propagate import attribute, box_bounds  # noqa: F401
from nnvis_plugins.lrp.rules import RULE_NAMES  # noqa: F401
