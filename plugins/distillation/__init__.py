"""Dataset distillation: a few synthetic images per class that teach the model's architecture the folder.

Two methods: unrolled inner gradient steps with learned step sizes and optional
soft labels (Wang, Zhu, Torralba & Efros 2018), and gradient matching (Zhao,
Mopuri & Bilen 2021). Both train fresh random initializations of the loaded
model's architecture; the trained weights themselves are never used.
"""
