"""Design §1: `workers/`, `algorithms/`, `compute/` and the user's client (`client/locus_client`) never import
Django (or DRF).

They must run on a GPU box or a lab PC that has no Django at all. The check imports every module of the three
packages in one fresh interpreter in which Django and DRF cannot be imported, as on such a box. It cannot
simply look for `django` in `sys.modules` with Django installed: kombu (`kombu.utils.json`) imports it
opportunistically when it is present, which is harmless because it copes with its absence.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DJANGO_FREE = ("workers", "algorithms", "compute", "client/locus_client")  # folder/package below the repo
PACKAGES = tuple(p.rpartition("/")[2] for p in DJANGO_FREE)

_PROBE = r"""
import ast, importlib, importlib.abc, json, sys, traceback
from pathlib import Path

BANNED = ("django", "rest_framework")
OURS = tuple(sys.argv[1].split(","))
GPU_ONLY = ("cupy", "cupyx", "cupy_backends")  # requirements-gpu.txt: absent from CPU machines by design
attempts = []


def importer() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not (name.startswith(("importlib", "_frozen_importlib")) or name == __name__):
            return name
        frame = frame.f_back
    return "?"


class NoDjango(importlib.abc.MetaPathFinder):
    # As on a worker or GPU box: these packages are not installed.
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BANNED:
            attempts.append([importer(), fullname])
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, NoDjango())

modules, errors, skipped = [], {}, {}
for package in OURS:
    root = Path(package.rpartition("/")[0] or ".")
    for path in sorted((root / package.rpartition("/")[2]).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if path.name == "__main__.py":
            # Running it would start the CLI: import what it imports instead.
            tree = ast.parse(path.read_text())
            for node in tree.body:
                if isinstance(node, ast.Import):
                    modules += [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    modules.append(node.module)
            continue
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))

for name in dict.fromkeys(modules):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in GPU_ONLY:
            skipped[name] = exc.name
        else:
            errors[name] = traceback.format_exc(limit=-3)
    except Exception:
        errors[name] = traceback.format_exc(limit=-3)

print(json.dumps({"imported": len(modules), "attempts": attempts, "errors": errors, "skipped": skipped,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BANNED)}))
"""


def test_workers_algorithms_and_compute_import_without_django():
    # DJANGO_SETTINGS_MODULE set on purpose: Celery loads Django through its fixup when it sees it.
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'client'}", "DJANGO_SETTINGS_MODULE": "portal.settings"}
    out = subprocess.run([sys.executable, "-c", _PROBE, ",".join(DJANGO_FREE)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    ours = [(importer, module) for importer, module in report["attempts"]
            if importer.split(".")[0] in PACKAGES]
    assert not ours, f"Django-free packages import Django/DRF (importer, module): {ours}"
    assert not report["errors"], "modules that fail to import without Django:\n" + "\n".join(
        f"{name}:\n{tb}" for name, tb in report["errors"].items())
    assert report["loaded"] == []
    assert report["imported"] > 50  # the walk found the packages (a wrong cwd would pass vacuously)
