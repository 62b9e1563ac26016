"""SWEEP.yaml -> the list of runs it asks for, every config validated before anything trains.

  base: examples/identity.yaml     # a config file (relative to this file) or an inline mapping
  output: sweeps/lr-r              # the sweep folder (default: sweeps/<this file's name>)
  grid:                            # cartesian product of dotted keys
    train.learning_rate: [1.0e-4, 1.0e-3]
    lora.r: [8, 16]
  runs:                            # and/or a list of override sets (each optionally named)
    - {name: dora, lora.use_dora: true}
  eval:                            # optional: `seektune eval` metrics after each run
    data: ../shared/data/advertisegen/dev.json
    columns: {prompt: content, response: summary}
    max_records: 50

With both grid and runs, every listed run is combined with every grid point.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from seektune.config import (
    RunConfig, _format_validation_error, _resolve_relative_paths, _set_dotted, parse_override,
)
from seektune.errors import ConfigError

KEYS = {"base", "output", "grid", "runs", "eval"}
EVAL_KEYS = {"data", "format", "columns", "task", "max_records", "system", "max_new_tokens", "batch_size",
             "max_length", "metrics"}


@dataclass
class SweepRun:
    name: str
    overrides: dict[str, Any]
    config: RunConfig


@dataclass
class SweepSpec:
    path: Path
    output: Path
    runs: list[SweepRun]
    eval: Optional[dict] = None
    varied: list[str] = field(default_factory=list)


def _value(v: Any) -> Any:
    # PyYAML reads 1e-4 (no dot) as a string; users mean a number, as with --set.
    if isinstance(v, str):
        return parse_override(f"k={v}")[1]
    return v


def _slug(v: Any) -> str:
    if isinstance(v, float):
        text = f"{v:g}"
    elif isinstance(v, (list, tuple)):
        text = "+".join(_slug(x) for x in v)
    elif isinstance(v, dict):
        text = "+".join(f"{k}-{_slug(x)}" for k, x in v.items())
    else:
        text = str(v)
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "x"


def run_name(i: int, overrides: dict[str, Any]) -> str:
    parts = [f"{k.split('.')[-1]}={_slug(v)}" for k, v in overrides.items()]
    return (f"{i:02d}-" + "_".join(parts))[:100] if parts else f"{i:02d}-base"


def load_sweep(path: Path, output: Optional[str] = None) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    spec = _yaml_mapping(path, "a mapping with base, grid and/or runs")
    unknown = set(spec) - KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; a sweep file has {sorted(KEYS)}")
    base_tree = _base_tree(spec.get("base"), path)
    grid = spec.get("grid") or {}
    listed = spec.get("runs") or []
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"{path}: grid: must map dotted keys to non-empty lists, e.g. train.learning_rate: [1e-4, 1e-3]")
    if not isinstance(listed, list) or not all(isinstance(r, dict) for r in listed):
        raise ConfigError(f"{path}: runs: must be a list of mappings of dotted keys, e.g. - {{lora.r: 8}}")
    if not grid and not listed:
        raise ConfigError(f"{path}: give grid: (values to combine) and/or runs: (override sets)")
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else [{}]
    combos = []
    for entry in listed or [{}]:
        entry = dict(entry)
        name = entry.pop("name", None)
        for point in points:
            combos.append((name, point, {**entry, **point}))
    out = Path(output or spec.get("output") or Path("sweeps") / path.stem)
    if not out.is_absolute() and spec.get("output") and not output:
        out = path.parent / out  # a folder named in the file is relative to the file, like its data paths
    out = out.resolve()
    runs, seen = [], set()
    for i, (name, point, overrides) in enumerate(combos, 1):
        overrides = {k: _value(v) for k, v in overrides.items()}
        if name:
            rname = re.sub(r"[^A-Za-z0-9._=+-]+", "_", str(name))
            if len(points) > 1:
                rname += "_" + "_".join(f"{k.split('.')[-1]}={_slug(_value(v))}" for k, v in point.items())
        else:
            rname = run_name(i, overrides)
        if rname in seen:
            raise ConfigError(f"{path}: two runs are named {rname!r}; give them different names")
        seen.add(rname)
        runs.append(SweepRun(rname, overrides, _build(base_tree, overrides, out / rname, f"{path}, run {rname}")))
    ev = spec.get("eval")
    if ev is not None:
        if isinstance(ev, str):
            ev = {"data": ev}
        if not isinstance(ev, dict) or "data" not in ev or set(ev) - EVAL_KEYS:
            raise ConfigError(f"{path}: eval: needs data: FILE and may have {sorted(EVAL_KEYS - {'data'})}")
        ev = dict(ev)
        data = Path(ev["data"]).expanduser()
        if not data.is_absolute() and (path.parent / data).exists():
            ev["data"] = str((path.parent / data).resolve())
    varied = sorted({k for r in runs for k in r.overrides})
    return SweepSpec(path, out, runs, ev, varied)


def _yaml_mapping(f: Path, must_be: str) -> dict:
    try:
        tree = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{f}: not valid YAML: {e}") from e
    if not isinstance(tree, dict):
        raise ConfigError(f"{f}: the top level must be {must_be}")
    return tree


def _base_tree(base: Any, sweep_file: Path) -> dict:
    if base is None:
        return {}
    if isinstance(base, dict):
        tree = copy.deepcopy(base)
        _resolve_relative_paths(tree, sweep_file.parent)
        return tree
    if isinstance(base, str):
        f = Path(base).expanduser()
        f = f if f.is_absolute() else sweep_file.parent / f
        if not f.is_file():
            raise ConfigError(f"{sweep_file}: base config not found: {f}")
        tree = _yaml_mapping(f, "a mapping of sections")
        _resolve_relative_paths(tree, f.parent)
        return tree
    raise ConfigError(f"{sweep_file}: base: must be a config file path or an inline mapping")


def _build(base: dict, overrides: dict, out: Path, origin: str) -> RunConfig:
    tree = copy.deepcopy(base)
    for k, v in overrides.items():
        try:
            _set_dotted(tree, k, v)
        except ConfigError as e:
            raise ConfigError(f"{origin}: {e}") from None
    tree["output"] = str(out)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, origin)) from None
