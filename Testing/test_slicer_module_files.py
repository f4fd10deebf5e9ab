"""The module's Slicer-facing files: the .ui has every widget the Widget uses, the extension's
CMake files name files that exist, the icons are 128×128, and the module class describes itself."""

from __future__ import annotations

import re
import types
import xml.etree.ElementTree as ET

from PIL import Image

from slicer_harness import MODULE_DIR, install_module_stubs

install_module_stubs()
import PancreasSSLSeg as module  # noqa: E402

REPO = MODULE_DIR.parent


def test_ui_has_every_widget_the_widget_code_uses():
    tree = ET.parse(MODULE_DIR / "Resources" / "UI" / "PancreasSSLSeg.ui")
    names = {w.get("name") for w in tree.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE_DIR / "PancreasSSLSeg.py").read_text(encoding="utf-8")))
    assert used, "the Widget should use widgets from the .ui"
    assert used <= names, f"missing in the .ui: {sorted(used - names)}"


def test_cmake_files_name_existing_files_and_register_tests():
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "add_subdirectory(PancreasSSLSeg)" in top and "find_package(Slicer REQUIRED)" in top
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS",
                "DEPENDS"):
        assert f"set(EXTENSION_{key} " in top
    inner = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "WITH_GENERIC_TESTS" in inner and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in inner
    for resource in re.findall(r"(Resources/\S+/)\$\{MODULE_NAME\}(\.\w+)", inner):
        assert (MODULE_DIR / f"{resource[0]}PancreasSSLSeg{resource[1]}").is_file(), resource
    for screenshot in re.findall(r"Resources/Screenshots/(\S+?\.png)", top):
        assert (REPO / "Resources" / "Screenshots" / screenshot).is_file(), screenshot


def test_icons_are_128_pixel_pngs():
    for path in (MODULE_DIR / "Resources" / "Icons" / "PancreasSSLSeg.png",
                 REPO / "Resources" / "Icons" / "PancreasSSLSeg.png"):
        with Image.open(path) as icon:
            assert icon.format == "PNG" and icon.size == (128, 128)


def test_module_describes_itself():
    parent = types.SimpleNamespace()
    module.PancreasSSLSeg(parent)
    assert parent.title and parent.categories == ["Segmentation"]
    assert "uncertain" in parent.helpText and "NIH Pancreas-CT" in parent.acknowledgementText


def test_module_loads_in_a_slicer_without_the_engine_dependencies(monkeypatch):
    """Slicer must show the module (to offer installing torch & co.) before they are installed."""
    import importlib
    import sys

    for name in ("torch", "monai", "scipy", "psutil", "slicerio", "safetensors"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails
    for name in list(sys.modules):
        if name.startswith(("PancreasSSLSeg", "PancreasSSLSegModuleLib")):
            monkeypatch.delitem(sys.modules, name)
    loaded = importlib.import_module("PancreasSSLSeg")
    assert loaded.PancreasSSLSegLogic().engineCommand
    from PancreasSSLSegModuleLib import dependencies
    assert "torch" in dependencies.missing_packages(lambda name: sys.modules.get(name, object()))
