"""Configuration: typed schemas, Hydra registration, validation and help.

Nothing here imports torch, so composing and checking a config answers in well
under a second.
"""
