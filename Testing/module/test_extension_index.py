"""Ready for Slicer's Extensions Index (issue 14, item 4): the catalog entry ``PancreasSSLSeg.json``
follows Slicer's catalog-entry schema and agrees with the ``EXTENSION_*`` values of the top-level
``CMakeLists.txt``, the module's category, the licence and the files the URLs name.

The schema's rules are copied from Slicer's ``Schemas/slicer-extension-catalog-entry-schema-
v1.0.2.json`` (required ``$schema``, ``category``, ``scm_url``; no other properties than those
below; ``tier`` 1..5; ``scm_type`` git or local), so no JSON-schema package is needed.
"""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

from PIL import Image

from slicer_harness import MODULE_DIR, install_module_stubs

install_module_stubs()
import PancreasSSLSeg as module  # noqa: E402

REPO = MODULE_DIR.parent
SCHEMA_URL = ("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
              "slicer-extension-catalog-entry-schema-v1.0.2.json#")
SCHEMA_TYPES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str,
                "scm_type": str, "build_dependencies": list, "dicom_support_rule": str,
                "build_subdirectory": str, "enabled": bool, "tier": int}
REQUIRED = {"$schema", "category", "scm_url"}


def cmake_values(text: str) -> dict[str, str]:
    """``set(NAME "value")`` / ``set(NAME value)`` of the top-level CMakeLists.txt, with
    ``${CMAKE_CURRENT_SOURCE_DIR}`` resolved to the checkout."""
    values = {}
    for name, quoted, bare in re.findall(r'^set\((\w+)\s+(?:"([^"]*)"|(\S+?))\s*\)', text, re.M):
        values[name] = (quoted or bare).replace("${CMAKE_CURRENT_SOURCE_DIR}", str(REPO))
    return values


def load_entry() -> dict:
    return json.loads((REPO / "PancreasSSLSeg.json").read_text(encoding="utf-8"))


def test_catalog_entry_follows_the_schema():
    entry = load_entry()
    assert REQUIRED <= set(entry) and set(entry) <= set(SCHEMA_TYPES), set(entry)
    for key, value in entry.items():
        assert type(value) is SCHEMA_TYPES[key], key  # bool is not an int here
    assert entry["$schema"] == SCHEMA_URL
    assert all(isinstance(d, str) for d in entry.get("build_dependencies", []))
    assert 1 <= entry.get("tier", 1) <= 5 and entry.get("scm_type", "git") in ("git", "local")


def test_catalog_entry_and_cmake_agree():
    entry = load_entry()
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    values = cmake_values(top)
    project = re.search(r"^project\((\w+)\)", top, re.M).group(1)
    assert project == "PancreasSSLSeg" == Path("PancreasSSLSeg.json").stem == MODULE_DIR.name

    parent = types.SimpleNamespace()
    module.PancreasSSLSeg(parent)
    assert entry["category"] == values["EXTENSION_CATEGORY"] == parent.categories[0]
    depends = values["EXTENSION_DEPENDS"]
    assert entry.get("build_dependencies", []) == ([] if depends == "NA" else depends.split())
    assert entry.get("build_subdirectory", ".") == values["EXTENSION_BUILD_SUBDIRECTORY"]

    # One repository everywhere: homepage = scm_url; icon and screenshots are its raw files at
    # scm_revision, and those files exist here.
    repository = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?", entry["scm_url"])
    assert repository, entry["scm_url"]
    assert values["EXTENSION_HOMEPAGE"] == f"https://github.com/{repository.group(1)}"
    raw = f"https://raw.githubusercontent.com/{repository.group(1)}/{entry['scm_revision']}/"
    urls = [values["EXTENSION_ICONURL"], *values["EXTENSION_SCREENSHOTURLS"].split()]
    assert len(urls) >= 2
    for url in urls:
        assert url.startswith(raw), url
        assert (REPO / url[len(raw):]).is_file(), url
    with Image.open(REPO / values["EXTENSION_ICONURL"][len(raw):]) as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)
    assert Path(values["EXTENSION_README_FILE"]) == REPO / "README.md"
    assert Path(values["EXTENSION_LICENSE_FILE"]) == REPO / "LICENSE.txt"


def test_licence_is_the_one_the_project_declares():
    text = (REPO / "LICENSE.txt").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^license = "Apache-2.0"$', pyproject, re.M)
    metadata = json.loads((REPO / "Resources" / "Models" / "pancreas-demo" / "metadata.json")
                          .read_text(encoding="utf-8"))
    assert metadata["license"] == "Apache-2.0"


def test_placeholder_owner_is_documented():
    """Until the public repository exists the URLs carry OWNER; README says to replace it."""
    entry = load_entry()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    if "OWNER" in entry["scm_url"]:
        assert "PancreasSSLSeg.json" in readme and "OWNER" in readme
