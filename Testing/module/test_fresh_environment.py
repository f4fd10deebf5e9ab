"""Issue 12, item 4: what a stock Slicer's Python gets is enough to run the engine.

A new virtual environment (no system site-packages, no user site, nothing of the developer's
environment) gets only what the module's own installer asks for: ``dependencies.ensure_installed``
runs inside it, with torch coming through a stand-in for Slicer's PyTorch Utils extension (which
installs the torch build this machine has: the developer environment's version, a local wheel
here). Then the engine CLI runs there exactly as the module starts it (``ENGINE_ARGS``, module
folder on ``PYTHONPATH``) on the example CT. A package the engine imports but the requirement list
lacks (tqdm and matplotlib were missing before) fails this test.

Cost: one ``venv`` (~5 s), torch from the local wheel (~30 s), the rest from the package index
(~30 s, needs the index CI installs from anyway), one Fast run of the shipped model. Measured
in NOTES.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import SimpleITK as sitk
import torch
from slicer_harness import MODULE_DIR, install_module_stubs

install_module_stubs()
from pancreas_ssl_seg.case_files import output_paths  # noqa: E402
from PancreasSSLSegLib.dependencies import REQUIREMENTS  # noqa: E402
from PancreasSSLSegLib.logic import ENGINE_ARGS  # noqa: E402

# The torch build this machine installs (on this project's machines a local CPU wheel; the same
# pin as the Makefile's TORCH_SPEC), without its local label ("2.13.0+cpu" → "2.13.0").
TORCH_PIN = f"torch=={torch.__version__.split('+', 1)[0]}"

PYTORCH_UTILS_STAND_IN = f'''
"""Stand-in for Slicer's PyTorch Utils extension: installs the machine's torch build."""
import subprocess, sys

class PyTorchUtilsLogic:
    def installTorch(self, askConfirmation=False, torchVersionRequirement=""):
        with open(__file__ + ".log", "a", encoding="utf-8") as log:
            log.write(torchVersionRequirement + "\\n")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "{TORCH_PIN}"],
                       check=True)
'''

INSTALL = textwrap.dedent("""
    import json, sys
    from PancreasSSLSegLib import dependencies
    before = dependencies.missing_packages()
    ok = dependencies.ensure_installed(lambda question: True)
    print(json.dumps({"before": before, "ok": ok, "after": dependencies.missing_packages()}))
""")


def clean_environment(python_path: list[Path]) -> dict[str, str]:
    """This process's environment (pip's configuration included) without anything that would let
    the new environment see the developer's packages."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONUSERBASE",
                        "PYTHONSTARTUP")}
    env.update(PYTHONNOUSERSITE="1", PYTHONPATH=os.pathsep.join(map(str, python_path)),
               OMP_NUM_THREADS="2", MPLBACKEND="Agg")
    return env


def run(command: list[str], env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    completed = subprocess.run(command, env=env, capture_output=True, text=True, encoding="utf-8",
                               timeout=timeout)
    assert completed.returncode == 0, (command, completed.stdout[-3000:], completed.stderr[-3000:])
    return completed


def test_engine_runs_in_a_new_environment_with_only_what_the_module_installs(tmp_path, example_ct):
    timings = {}
    started = time.perf_counter()
    venv = tmp_path / "slicer-python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    timings["venv"] = time.perf_counter() - started

    stand_in = tmp_path / "extensions"
    stand_in.mkdir()
    (stand_in / "PyTorchUtils.py").write_text(PYTORCH_UTILS_STAND_IN, encoding="utf-8")
    env = clean_environment([MODULE_DIR, stand_in])
    bare = run([python, "-c", "import importlib.util as u; print([n for n in "
                "('torch', 'numpy', 'SimpleITK', 'yaml', 'pancreas_ssl_training') "
                "if u.find_spec(n)])"], env, 60)
    assert bare.stdout.strip() == "[]"  # nothing of the developer's environment is visible

    started = time.perf_counter()
    installed = json.loads(run([python, "-c", INSTALL], env, 900).stdout.strip().splitlines()[-1])
    timings["install"] = time.perf_counter() - started
    assert installed == {"before": list(REQUIREMENTS), "ok": True, "after": []}
    requested = (stand_in / "PyTorchUtils.py.log").read_text(encoding="utf-8").split()
    assert requested == [REQUIREMENTS["torch"][len("torch"):]]

    started = time.perf_counter()
    out_dir = tmp_path / "out"
    completed = run([python, *ENGINE_ARGS, "segment", str(example_ct), "-o", str(out_dir),
                     "--progress", "json", "--fast", "--device", "cpu"], env, 600)
    timings["segment"] = time.perf_counter() - started
    done = json.loads(completed.stdout.strip().splitlines()[-1])
    assert (done["stage"], done["status"], done["cases_ok"]) == ("done", "ok", 1)
    paths = output_paths(out_dir, "example_ct")
    assert all(path.is_file() for path in paths.values())
    labels, ct = (sitk.ReadImage(str(p)) for p in (paths["labels"], example_ct))
    assert labels.GetSize() == ct.GetSize() and labels.GetSpacing() == ct.GetSpacing()
    # Isolation held to the end: training's packages never came in.
    leftovers = run([python, "-c", "import importlib.util as u; print([n for n in "
                     "('yaml', 'pancreas_ssl_training', 'skimage') if u.find_spec(n)])"], env, 60)
    assert leftovers.stdout.strip() == "[]"
    print("fresh environment timings (s):", {k: round(v, 1) for k, v in timings.items()})
