"""Install script for ssl_zoo (metadata lives in pyproject.toml).

The top-level `pretrained/` folder (preset configs, weights, metadata) is installed
as the package data `ssl_zoo/pretrained/`, so presets load from a plain `pip install .`.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["ssl_zoo", "ssl_zoo.*"]) + ["ssl_zoo.pretrained"],
    package_dir={"ssl_zoo.pretrained": "pretrained"},
    package_data={"ssl_zoo.pretrained": ["*.md", "*/*.json", "*/*.h5"]},
)
