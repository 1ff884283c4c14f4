"""Hash every input file and report its size and sha256: proves a transfer path end to end.

Useful after setting up storage or a new worker: the report must match the checksums the portal shows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from algorithms.cli import BadInput, atomic_output, job_arguments, progress, read_params


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m algorithms.diagnostics checksum", description=__doc__)
    parser.add_argument("entrypoint", choices=["checksum"])
    job_arguments(parser)
    args = parser.parse_args(argv)
    params = read_params(args.params)
    if set(params) - {"copy"}:
        raise BadInput(f"unknown parameter {sorted(set(params) - {'copy'})[0]!r}")
    if args.inputs is None or not args.inputs.is_dir():
        raise BadInput("--inputs must be a folder of input slots")
    files = sorted(p for p in args.inputs.rglob("*") if p.is_file())
    report = []
    for i, path in enumerate(files):
        report.append({"slot": path.parent.name, "name": path.name, "size": path.stat().st_size,
                       "sha256": sha256_of(path)})
        progress((i + 1) / max(len(files), 1), "hash")
    with atomic_output(args.outputs / "checksums.json") as fh:
        json.dump(report, fh, indent=2)
    if params.get("copy"):
        for path in files:
            with atomic_output(args.outputs / f"copy-{path.name}", "wb") as fh:
                fh.write(path.read_bytes())
    return 0
