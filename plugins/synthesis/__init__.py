"""Image synthesis from a classifier's features: texture synthesis and style transfer from Gram
matrices (Gatys et al. 2015, 2016), feature inversion (Mahendran & Vedaldi 2015), and the shape
bias on cue-conflict images made by style transfer (Geirhos et al. 2019)."""
