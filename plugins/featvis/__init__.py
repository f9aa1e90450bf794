"""Feature visualization plugins: images optimized to show what a unit, a channel, a layer or a class
responds to, drawn with the toolkit's renderer (nnvis_core.toolkit.featvis: objectives,
parameterizations, transforms, the loop).

Modules here: layers (which layers to show), cache (channel visualizations on disk), options (the
plugins' shared parameters). The plugins are class_maximization, channel_maximization,
semantic_dictionary, filters and activations, one module each.
"""
