"""``info`` and ``models``: describe one model bundle, list the installed ones; and ``--model``
resolved to a loaded bundle for every command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_exit import EXIT_BAD_INPUT, EXIT_OK
from .errors import PancreasSSLSegError

if TYPE_CHECKING:
    from .bundle import ModelBundle


# torch (seconds to import) is imported only when a command needs it: --help stays instant.
def load_model(model: str | None) -> ModelBundle:
    """``--model``: a bundle folder, an installed model's name, or ``None`` (the shipped one)."""
    from .bundle import load_bundle
    from .catalogue import resolve_model

    return load_bundle(resolve_model(model))


def run_info(args: argparse.Namespace) -> int:
    bundle = load_model(args.model)
    print(format_bundle_info(bundle))
    return EXIT_OK


def run_models(args: argparse.Namespace) -> int:
    from .catalogue import list_models, user_model_dirs

    entries = list_models()
    checks = {}
    if args.validate:
        for entry in entries:
            if entry.problem is None:
                try:
                    load_model(str(entry.path))
                    checks[entry.path] = "ok"
                except PancreasSSLSegError as error:
                    checks[entry.path] = str(error)
    if args.json:
        print(json.dumps([{**e.as_dict(), **({"validation": checks[e.path]} if e.path in checks
                                             else {})} for e in entries], indent=2))
    else:
        print(format_catalogue(entries, checks, user_model_dirs()))
    bad = [e for e in entries if e.problem is not None or checks.get(e.path, "ok") != "ok"]
    return EXIT_BAD_INPUT if bad else EXIT_OK


def format_catalogue(entries, checks: dict, user_dirs: list[Path]) -> str:
    lines = [f"user models folder(s): {', '.join(str(d) for d in user_dirs)}"]
    if not entries:
        lines.append("no model bundles installed")
    for entry in entries:
        lines.append("")
        if entry.problem is not None:
            lines += [f"{entry.name}  (unreadable, {entry.source})", f"  path:     {entry.path}",
                      f"  problem:  {entry.problem}"]
            continue
        lines += [f"{entry.label}  ({entry.source})", f"  path:     {entry.path}",
                  f"  licence:  {entry.license}"]
        for name, stage in entry.stages.items():
            lines.append(f"  {name + ':':<9} {stage['spatial_dims']}-D, spacing "
                         f"{stage['spacing_mm']} mm, patch {stage['patch_size']}")
        figures = [(key, value) for key, value in _flatten(entry.metrics)
                   if _is_number_text(value)]
        lines.append("  figures:" if figures else "  figures:  none recorded")
        lines += [f"    {key}: {value}" for key, value in figures]
        if entry.path in checks:
            lines.append(f"  check:    {checks[entry.path]}")
    return "\n".join(lines)


def _is_number_text(value: str) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def format_bundle_info(bundle: ModelBundle) -> str:
    metadata = bundle.metadata
    lines = [f"model:    {bundle.name} {bundle.version}", f"path:     {bundle.path}",
             f"licence:  {metadata['license']}"]
    if metadata.get("description"):
        lines.append(f"about:    {metadata['description']}")
    lines.append("labels:")
    lines += [f"  {label['value']}  {label['name']}" for label in bundle.labels]
    lines.append("stages:")
    for name in metadata["stages"]:
        stage = bundle.stage(name)
        lines.append(f"  {name:<7} {stage.spatial_dims}-D, spacing {list(stage.spacing_mm)} mm, "
                     f"patch {list(stage.patch_size)}"
                     + (f", margin {stage.margin_mm:g} mm" if stage.margin_mm else ""))
    lines.append("metrics:" if metadata["metrics"] else "metrics:  none recorded")
    lines += [f"  {key}: {value}" for key, value in _flatten(metadata["metrics"])]
    return "\n".join(lines)


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested metrics → ("a.b", value) lines; lists stay one compact JSON value."""
    items: list[tuple[str, str]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value if isinstance(value, str) else json.dumps(value)))
    return items
