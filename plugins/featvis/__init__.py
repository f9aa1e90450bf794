"""Feature visualization: images optimized to show what a unit, a channel, a layer or a class responds to.

A small library in the shape of Lucid/Lucent (objectives that add and scale, a
parameterization that gives parameters and an image function, composable
transforms), written with type hints and an explicit device:

>>> from nnvis_plugins.featvis import objectives as o, render
>>> goal = o.channel("features.11", [0, 1, 2, 3]) + 0.1 * o.diversity("features.11")
>>> result = render.render(model, goal, 4, render.Settings(size=64, steps=128), mean=MEAN, std=STD)

Modules: objectives (neuron, channel, layer, class logit and probability,
diversity, image penalties), parameterizations (pixel, Fourier), colour
(decorrelation), transforms (pad, jitter, scale, rotate), render (the loop),
layers (which layers to show), cache (channel visualizations on disk),
spectrum (how much of an image is high frequency). The plugins are
class_maximization, channel_maximization, semantic_dictionary, filters and
activations, one module each.
"""
