"""Concept plugins: what the model has learned about each class across the folder (TCAV, CRAFT,
sparse dictionaries of activations)."""
