"""Models: plain nn.Modules with registered builders and no training logic.

`cvtrain.registry.MODELS` imports every module of this package at its first lookup, so
a new module registers its builders without being listed anywhere; a composite model
(the captioner) builds its parts from sub-configs through MODELS too.
"""
