"""A regular (non-editable) install ships every package: pyproject.toml lists packages by hand,
and a subpackage left off the list is missing only outside a developer's editable install
(``pancreas_ssl_training.experiment`` was)."""

from __future__ import annotations

import tomllib
from conftest import REPO_ROOT

ROOT = REPO_ROOT


def test_every_package_folder_is_listed_for_installation():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"]
    on_disk = set()
    for top, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            on_disk.add(".".join((top, *parts)))
    assert {"pancreas_ssl_seg", "pancreas_ssl_training.evaluation"} <= on_disk
    assert sorted(on_disk - set(setuptools["packages"])) == []
    assert sorted(set(setuptools["packages"]) - on_disk) == []
