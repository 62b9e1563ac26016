"""A real 2x2 sweep (learning rate x LoRA rank) on the embedded model, its results JSONs, a rerun that
skips every finished run, and the report built from it, opened in headless Chromium."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from seektune.cli import main as cli_main
from seektune.errors import ConfigError
from seektune.report.build import build_report
from seektune.sweep.runner import run_sweep
from seektune.sweep.spec import load_sweep
from tests.conftest import ROOT, shared
from tests.report.browser import chromium_binary, visit

BASE = {
    "data": {"datasets": [{"path": None, "columns": {"prompt": "content", "response": "summary"}, "max_records": 12}],
             "max_length": 64, "holdout_prompts": 1},
    "lora": {"dropout": 0.0},
    "train": {"max_steps": 2, "per_device_batch_size": 2, "sample_max_new_tokens": 4, "save_steps": 2},
}


def _base() -> dict:
    base = json.loads(json.dumps(BASE))
    base["data"]["datasets"][0]["path"] = str(shared("advertisegen/dev.json"))
    return base


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    os.environ["OMP_NUM_THREADS"] = "1"  # the workers inherit it; 2 threads per process crawl on 2 shared cores
    d = tmp_path_factory.mktemp("sweep")
    heldout = d / "heldout.jsonl"
    heldout.write_text("\n".join(shared("advertisegen/dev.json").read_text(encoding="utf-8").splitlines()[-2:]) + "\n",
                       encoding="utf-8")
    spec = {"base": _base(), "output": "out",
            "grid": {"train.learning_rate": ["1e-4", 1.0e-3], "lora.r": [4, 8]},
            "eval": {"data": "heldout.jsonl", "columns": {"prompt": "content", "response": "summary"},
                     "max_new_tokens": 4, "metrics": ["generation"]}}
    f = d / "sweep.yaml"
    f.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = run_sweep(f)
    return f, result


def test_every_grid_point_trained_with_a_results_json(sweep):
    f, result = sweep
    assert not result.interrupted and not result.failed
    assert result.folder == f.parent / "out"
    assert list(result.statuses.values()) == ["finished"] * 4
    results = {}
    for name in result.statuses:
        res = json.loads((result.folder / name / "results.json").read_text())
        assert set(res) == {"run_info", "train_info", "eval_info", "meta_info"}
        results[name] = res
        ti = res["train_info"]
        assert ti["status"] == "complete" and ti["global_step"] == 2 and ti["train_time"] > 0
        assert ti["peak_memory_bytes"] > 100 * 2**20 and ti["final_train_loss"] >= ti["best_train_loss"] > 0
        assert len([m for m in ti["metrics"] if "loss" in m and not m.get("summary")]) == 2
        cfg = res["run_info"]["train_config"]
        assert cfg["train"]["learning_rate"] == res["run_info"]["overrides"]["train.learning_rate"]
        assert cfg["lora"]["r"] == res["run_info"]["overrides"]["lora.r"] == res["run_info"]["peft_config"]["r"]
        ev = res["eval_info"]
        assert ev["data"] == "heldout.jsonl" and {"rouge-l", "bleu-4"} <= set(ev["metrics"]) and len(ev["answers"]) == 2
        assert res["meta_info"]["system"]["torch"]
    by_r = {r["run_info"]["overrides"]["lora.r"]: r["train_info"]["num_trainable_params"] for r in results.values()}
    assert by_r[8] == 2 * by_r[4]
    assert sorted(results) == ["01-learning_rate=0.0001_r=4", "02-learning_rate=0.0001_r=8",
                               "03-learning_rate=0.001_r=4", "04-learning_rate=0.001_r=8"]


def test_rerun_skips_finished_runs(sweep, capsys):
    f, result = sweep
    stamps = {n: (result.folder / n / "results.json").stat().st_mtime_ns for n in result.statuses}
    again = run_sweep(f)
    assert again.statuses == result.statuses and not again.failed
    assert stamps == {n: (result.folder / n / "results.json").stat().st_mtime_ns for n in result.statuses}
    assert "4 runs, 4 finished" in capsys.readouterr().out


def test_sweep_spec_errors_name_the_run_and_field(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"base": _base(), "runs": [{"name": "ok"}, {"name": "bad", "lora.r": 0}]}))
    with pytest.raises(ConfigError) as e:
        load_sweep(f)
    assert "run bad" in str(e.value) and "lora.r" in str(e.value)
    f.write_text(yaml.safe_dump({"base": _base(), "grids": {"lora.r": [4]}}))
    with pytest.raises(ConfigError, match="unknown key"):
        load_sweep(f)
    f.write_text(yaml.safe_dump({"base": _base(), "runs": [{"name": "a", "train.learning_rate": "2e-4"}],
                                 "grid": {"lora.r": [4, 8]}}))
    spec = load_sweep(f)
    assert [r.name for r in spec.runs] == ["a_r=4", "a_r=8"]
    assert len(load_sweep(ROOT / "examples" / "sweeps" / "lr_rank.yaml").runs) == 6
    assert spec.runs[0].config.train.learning_rate == 2e-4 and spec.varied == ["lora.r", "train.learning_rate"]
    f.write_text("grid: [unclosed")
    with pytest.raises(ConfigError, match=r"s\.yaml: not valid YAML"):
        load_sweep(f)
    f.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping with base"):
        load_sweep(f)
    (tmp_path / "base.yaml").write_text("- not sections\n")
    f.write_text(yaml.safe_dump({"base": "base.yaml", "grid": {"lora.r": [4]}}))
    with pytest.raises(ConfigError, match=r"base\.yaml: the top level must be a mapping of sections"):
        load_sweep(f)


@pytest.fixture(scope="module")
def report(sweep):
    _, result = sweep
    cli_main(["report", str(result.folder)])
    return result.folder / "report"


def test_report_files(report):
    html = (report / "report.html").read_text(encoding="utf-8")
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    assert "<script src" not in html and "<link" not in html  # self-contained
    for png in ("curves_by_learning_rate.png", "curves_by_r.png"):
        data = (report / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    summary = json.loads((report / "report.json").read_text())
    assert summary["varied"] == ["lora.r", "train.learning_rate"] and len(summary["runs"]) == 4
    assert summary["best"] in [r["name"] for r in summary["runs"]] and "ROUGE-L" in summary["best_by"]


def test_report_in_headless_chromium(report):
    if chromium_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing under CI: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    probe = """JSON.stringify({
      charts: document.querySelectorAll('svg.chart').length,
      lines: Array.from(document.querySelectorAll('svg.chart')).map(s => s.querySelectorAll('polyline').length),
      points: Array.from(document.querySelectorAll('svg.chart polyline')).map(p => p.points.numberOfItems),
      rows: document.querySelectorAll('#runs tbody tr').length,
      best: document.querySelectorAll('#runs tr.best').length,
      samples: document.querySelectorAll('table.samples tbody tr').length,
      width: document.querySelector('svg.chart').getBoundingClientRect().width,
      hidden: (function () { document.querySelector('.legend span').click();
        return Array.from(document.querySelectorAll('g.series')).filter(g => g.style.display === 'none').length; })()
    })"""
    seen = visit((report / "report.html").resolve().as_uri(), probe)
    page = json.loads(seen.value)
    assert seen.exceptions == [], seen.exceptions
    assert [c for c in seen.console if c["level"] in ("error", "warning")] == [], seen.console
    assert all(u.startswith("file://") for u in seen.requests), seen.requests  # nothing fetched
    assert page["charts"] == 4 and page["lines"] == [4, 4, 4, 4]  # loss + grad norm, by lr and by r
    assert all(n == 2 for n in page["points"])  # two logged steps per run
    assert page["rows"] == 4 and page["best"] == 1 and page["samples"] >= 3 and page["width"] > 300
    assert page["hidden"] == 4  # the clicked run disappears from all four charts
