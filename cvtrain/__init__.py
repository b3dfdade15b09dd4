"""cvtrain: one config-driven command that trains the models of a computer-vision course.

Importing the package is cheap on purpose: torch and torchvision are imported only by
the modules that build and run models, so `cvtrain --help` and config errors answer fast.
"""

__version__ = "0.1.0"
