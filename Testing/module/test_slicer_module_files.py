"""The module's Slicer-facing files: the .ui has every widget the panel uses, of a class Slicer
provides and offering the members the panel calls; the extension's CMake files name files that
exist, the icons are 128×128, and the module class describes itself."""

from __future__ import annotations

import re
import types
import xml.etree.ElementTree as ET

from PIL import Image

from slicer_harness import MODULE_DIR, install_module_stubs

install_module_stubs()
import PancreasSSLSeg as module  # noqa: E402

REPO = MODULE_DIR.parent


UI_FILE = MODULE_DIR / "Resources" / "UI" / "PancreasSSLSeg.ui"
WIDGET_CODE = [MODULE_DIR / "PancreasSSLSeg.py",
               MODULE_DIR / "PancreasSSLSegLib" / "widget.py"]
# Widget classes a stock Slicer provides to a .ui (Qt, CTK and qMRML designer plugins), written
# out from their documentation; a class not here needs checking before it is used.
QT_CLASSES = {"QWidget", "QFrame", "QLabel", "QPushButton", "QToolButton", "QCheckBox",
              "QRadioButton", "QComboBox", "QLineEdit", "QSpinBox", "QDoubleSpinBox", "QSlider",
              "QProgressBar", "QPlainTextEdit", "QTextEdit", "QTableWidget", "QListWidget",
              "QTreeWidget", "QGroupBox", "QTabWidget", "QStackedWidget", "QScrollArea",
              "QSplitter"}
QT_LAYOUTS = {"QVBoxLayout", "QHBoxLayout", "QFormLayout", "QGridLayout"}
SLICER_CUSTOM_CLASSES = {"ctkCollapsibleButton", "ctkPathLineEdit", "ctkSliderWidget",
                         "ctkRangeWidget", "ctkCheckBox", "ctkComboBox", "ctkDirectoryButton",
                         "ctkDoubleSpinBox", "ctkMenuButton", "ctkSearchBox",
                         "ctkColorPickerButton", "qMRMLWidget", "qMRMLNodeComboBox",
                         "qMRMLCheckableNodeComboBox", "qMRMLSegmentSelectorWidget",
                         "qMRMLSubjectHierarchyTreeView", "qSlicerWidget"}
# Members each class offers (Qt 5 / CTK / qMRML documentation: properties, signals, slots and
# methods), for those the panel calls; QWidget's are every widget's.
QWIDGET_MEMBERS = {"setEnabled", "enabled", "setVisible", "visible", "styleSheet", "toolTip"}
MEMBERS = {
    "QPushButton": {"clicked", "text"},
    "QCheckBox": {"checked", "toggled", "text"},
    "QComboBox": {"addItem", "addItems", "clear", "currentIndex", "currentIndexChanged",
                  "currentText"},
    "QLabel": {"text"},
    "QProgressBar": {"value"},
    "QPlainTextEdit": {"appendPlainText", "plainText"},
    "QTableWidget": {"clearContents", "setRowCount", "setItem", "selectRow", "selectedItems",
                     "itemSelectionChanged"},
    "ctkPathLineEdit": {"currentPath", "currentPathChanged"},
    "ctkSliderWidget": {"value", "valueChanged", "minimum", "maximum"},
    "qMRMLNodeComboBox": {"currentNode", "setCurrentNode", "currentNodeChanged",
                          "setMRMLScene"},
}


def ui_widgets() -> dict[str, str]:
    """name → class of every widget in the .ui."""
    return {w.get("name"): w.get("class") for w in ET.parse(UI_FILE).iter("widget")}


def used_members() -> set[tuple[str, str]]:
    """(widget name, member) of every ``self.ui.<name>.<member>`` in the panel's code."""
    return {pair for path in WIDGET_CODE
            for pair in re.findall(r"self\.ui\.(\w+)\.(\w+)", path.read_text(encoding="utf-8"))}


def test_ui_has_every_widget_the_panel_uses():
    names = set(ui_widgets())
    used = {name for name, _ in used_members()}
    code = "".join(path.read_text(encoding="utf-8") for path in WIDGET_CODE)
    assert used == set(re.findall(r"self\.ui\.(\w+)", code)), "reach widgets as self.ui.x.y"
    assert len(used) > 20, "the panel should use the widgets of the .ui"
    assert used <= names, f"missing in the .ui: {sorted(used - names)}"


def test_ui_classes_are_ones_slicer_provides_and_custom_ones_are_declared():
    tree = ET.parse(UI_FILE)
    classes = set(ui_widgets().values())
    layouts = {layout.get("class") for layout in tree.iter("layout")}
    assert classes <= QT_CLASSES | SLICER_CUSTOM_CLASSES, classes - QT_CLASSES
    assert layouts <= QT_LAYOUTS
    declared = {c.findtext("class"): c.findtext("header") for c in tree.iter("customwidget")}
    assert set(declared) == classes & SLICER_CUSTOM_CLASSES
    assert all(header == f"{name}.h" for name, header in declared.items())
    assert tree.getroot().find("widget").get("class") == "qMRMLWidget"  # setMRMLScene


def test_the_panel_calls_only_members_of_each_widgets_class():
    widgets = ui_widgets()
    unknown = sorted((name, widgets[name], member) for name, member in used_members()
                     if member not in MEMBERS.get(widgets[name], set()) | QWIDGET_MEMBERS)
    assert not unknown, f"not a member of the widget's class (check its documentation): {unknown}"


def test_ui_connections_join_widgets_that_exist():
    names = set(ui_widgets())
    for connection in ET.parse(UI_FILE).iter("connection"):
        assert {connection.findtext("sender"), connection.findtext("receiver")} <= names


def test_cmake_files_name_existing_files_and_register_tests():
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "add_subdirectory(PancreasSSLSeg)" in top and "find_package(Slicer REQUIRED)" in top
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS",
                "DEPENDS"):
        assert f"set(EXTENSION_{key} " in top
    inner = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "WITH_GENERIC_TESTS" in inner
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in inner
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
    # this project's methods, not ones it does not use
    for method in ("signed-distance-map regression", "random-convolution views",
                   "structure-guided contrastive", "uncertain-band restoration", "PolyCL"):
        assert method in parent.acknowledgementText
    assert "mean teacher" not in parent.acknowledgementText.lower()


def test_module_loads_in_a_slicer_without_the_engine_dependencies(monkeypatch):
    """Slicer must show the module (to offer installing torch & co.) before they are installed."""
    import importlib
    import sys

    for name in ("torch", "monai", "scipy", "psutil", "slicerio", "safetensors", "tqdm"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails
    for name in list(sys.modules):
        if name.startswith(("PancreasSSLSeg", "PancreasSSLSegLib")):
            monkeypatch.delitem(sys.modules, name)
    loaded = importlib.import_module("PancreasSSLSeg")
    assert loaded.PancreasSSLSegLogic().engineCommand
    from PancreasSSLSegLib import dependencies
    assert "torch" in dependencies.missing_packages(lambda name: sys.modules.get(name, object()))
