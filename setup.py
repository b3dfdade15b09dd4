"""Only what pyproject.toml cannot say: the top-level conf/ folder installs as cvtrain/conf."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["cvtrain*"]), "cvtrain.conf"], package_dir={"cvtrain.conf": "conf"})
