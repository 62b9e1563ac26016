"""Where a run may write: inside its output folder, and nowhere else.

The output folder is the user's explicit choice; every path below it is built from fixed names or from
numbers (`checkpoint-12`); a name built from anything else (a model id, a dataset name, a sweep value)
must go through `safe_join`, so that `..`, absolute paths and symlinks cannot lead a write outside it.
"""

from __future__ import annotations

import os
from pathlib import Path

from seektune.errors import SeektuneError


def safe_join(root, *parts) -> Path:
    """root/parts, refused when the result (symlinks resolved) is not inside root."""
    root_path = Path(root)
    target = root_path.joinpath(*[str(p) for p in parts])
    real_root = os.path.realpath(root_path)
    real = os.path.realpath(target)
    if os.path.commonpath([real_root, real]) != real_root or any(str(p) in ("", ".", "..") for p in parts):
        raise SeektuneError(
            f"refusing to write {target}: it is outside the output folder {root_path} "
            "(a name from the config or data contains `..`, an absolute path or a link)"
        )
    return target


def check_output_path(out) -> Path:
    """The output folder must end in a plain name (the run is written next to it as NAME.incomplete)."""
    p = Path(out)
    name = p.name
    if name in ("", ".", "..") or str(out).rstrip() in ("/", "~"):
        raise SeektuneError(
            f"output={str(out)!r}: the run folder must end in a new folder name, e.g. runs/my-run "
            "(not `.`, `..` or a filesystem root)"
        )
    if p.exists() and not p.is_dir():
        raise SeektuneError(f"output={str(out)!r} is an existing file; choose a new folder name")
    return p
