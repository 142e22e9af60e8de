"""Install script for ssl_zoo (metadata lives in pyproject.toml)."""
from setuptools import setup

setup()
