"""Shape bias (Geirhos et al., ICLR 2019): on cue-conflict images, does the model follow shape or texture?"""
