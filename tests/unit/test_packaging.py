"""What ships: every package of the layers is in the wheel and in the image."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.unit.test_architecture import LAYERS, ROOT

pytestmark = pytest.mark.unit


def test_every_layer_is_packaged() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {f"{layer}*" for layer in LAYERS} <= set(include)
    assert set(LAYERS) <= set(config["tool"]["mypy"]["packages"])


def test_every_layer_is_copied_into_the_image() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    assert set(LAYERS) <= copied


def test_static_assets_ship_with_the_package_that_serves_them() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = config["tool"]["setuptools"]["package-data"]
    for package, patterns in data.items():
        folder = ROOT / Path(*package.split("."))
        for pattern in patterns:
            assert list(folder.glob(pattern)), f"{package}: nothing matches {pattern}"
