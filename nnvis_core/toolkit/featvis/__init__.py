"""Feature visualization: images optimized to show what a unit, a channel, a direction, a layer or a
class responds to.

A small library in the shape of Lucid/Lucent (objectives that add and scale, a parameterization that
gives parameters and an image function, composable transforms), written with type hints and an
explicit device. It lives in the toolkit so that any plugin family can draw what it found (the
featvis plugins a unit, the concept plugins a concept's direction):

>>> from nnvis_core.toolkit.featvis import objectives as o, render
>>> goal = o.channel("features.11", [0, 1, 2, 3]) + 0.1 * o.diversity("features.11")
>>> result = render.render(model, goal, 4, render.Settings(size=64, steps=128), mean=MEAN, std=STD)

Modules: objectives (neuron, channel, direction, layer, class logit and probability, diversity,
image penalties), parameterizations (pixel, Fourier), colour (decorrelation), transforms (pad,
jitter, scale, rotate), render (the loop), spectrum (how much of an image is high frequency).
"""
