"""Shared pieces of every algorithm CLI (design §6): arguments, JSON progress, exit codes, atomic outputs."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """The user's input is wrong: printed as one line on stderr, exit code 2."""


def job_arguments(parser: argparse.ArgumentParser) -> None:
    """The three arguments the worker agent passes to every entrypoint."""
    parser.add_argument("--inputs", type=Path, help="folder holding one sub-folder per input slot")
    parser.add_argument("--outputs", type=Path, required=True, help="folder the outputs are written into")
    parser.add_argument("--params", type=Path, help="JSON file with the resolved parameters")


def read_params(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        params = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"params file {path} not found") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"params file {path} is not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise BadInput(f"params file {path} must hold a JSON object")
    return params


def progress(fraction: float, stage: str, **extra: Any) -> None:
    """One JSON progress line on stdout, flushed so the worker sees it now."""
    print(json.dumps({"progress": round(float(fraction), 4), "stage": stage, **extra}), flush=True)


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temp file beside `path` for writers that need a file name; renamed onto `path` on success only.

    `suffix` matters to writers that choose the format from the name (matplotlib, tifffile).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_output(path: Path, mode: str = "w") -> Iterator[Any]:
    """An open file beside `path`, renamed onto it on success: never a half-written output."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh


def run_main(main: Any, argv: list[str] | None = None) -> int:
    """Call `main(argv)`, mapping BadInput to exit 2 with a one-line message and no traceback."""
    try:
        return int(main(argv) or 0)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
