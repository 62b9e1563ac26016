"""Assemble the report: report.html (self-contained: inline CSS, SVG and a few lines of script, nothing
fetched) and PNGs of the same curves (matplotlib) for pasting elsewhere."""

from __future__ import annotations

import json
import math
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Optional

from rich.console import Console

from seektune.report.collect import RunView, collect
from seektune.report.curves import curve_warnings
from seektune.report.svg import DASHES, PALETTE, line_chart

METRICS = [("loss", "training loss"), ("grad_norm", "grad norm")]


def _short(key: str) -> str:
    return key.split(".")[-1]


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def run_label(run: RunView, varied: list[str]) -> str:
    return ", ".join(f"{_short(k)}={_value(run.params[k])}" for k in varied) if varied else run.name


def groups(runs: list[RunView], varied: list[str]) -> list[tuple[str, list[dict]]]:
    """One group per varied setting: colour by that setting's value, dash by the rest."""
    if not varied:
        return [("all runs", [{"run": r, "color": PALETTE[i % len(PALETTE)], "dash": ""} for i, r in enumerate(runs)])]
    out = []
    for key in varied:
        values = list(dict.fromkeys(_value(r.params[key]) for r in runs))
        others = list(dict.fromkeys(tuple(_value(r.params[k]) for k in varied if k != key) for r in runs))
        styled = [{"run": r, "color": PALETTE[values.index(_value(r.params[key])) % len(PALETTE)],
                   "dash": DASHES[others.index(tuple(_value(r.params[k]) for k in varied if k != key)) % len(DASHES)]}
                  for r in runs]
        out.append((_short(key), styled))
    return out


def _series(styled: list[dict], metric: str, varied: list[str], eval_rows: bool = False) -> list[dict]:
    out = []
    for s in styled:
        r = s["run"]
        rows = r.eval_rows if eval_rows else r.rows
        pts = [(m["step"], float(m[metric]) if m[metric] is not None else math.nan) for m in rows if metric in m]
        out.append({"label": run_label(r, varied), "color": s["color"], "dash": s["dash"], "points": pts})
    return out


def best_run(runs: list[RunView]) -> tuple[Optional[RunView], str]:
    """The run to mark: best eval metric when every run has one, else lowest eval loss, else final loss."""
    for key, better, label in (("rouge-l", max, "highest ROUGE-L"), ("accuracy_loglik", max, "highest accuracy"),
                               ("eval_loss", min, "lowest eval loss (eval data)")):
        vals = [r.eval_metrics.get(key) for r in runs]
        if vals and all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
            return runs[better(range(len(runs)), key=lambda i: vals[i])], label
    vals = [r.summary.get("final_eval_loss") for r in runs]
    if vals and all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
        return runs[min(range(len(runs)), key=lambda i: vals[i])], "lowest final eval loss"
    tails = []
    for r in runs:
        losses = [m["loss"] for m in r.rows[-3:] if isinstance(m.get("loss"), (int, float)) and math.isfinite(m["loss"])]
        tails.append(sum(losses) / len(losses) if losses else math.inf)
    if tails and min(tails) < math.inf:
        return runs[min(range(len(runs)), key=lambda i: tails[i])], "lowest training loss (mean of the last 3 logged steps)"
    return None, ""


def _num(v, fmt="{:.4f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) and math.isfinite(v) else ("—" if v is None else str(v))


def _mib(v) -> str:
    return f"{v / 2**20:,.0f} MiB" if isinstance(v, (int, float)) else "—"


def _table(runs: list[RunView], varied: list[str], best: Optional[RunView]) -> str:
    eval_keys = [k for k in ("rouge-1", "rouge-2", "rouge-l", "bleu-4", "eval_loss", "perplexity", "accuracy_loglik",
                             "accuracy_generated") if any(k in r.eval_metrics for r in runs)]
    head = (["run"] + [_short(k) for k in varied] + ["status", "steps", "final loss", "best loss", "final eval loss"]
            + [f"eval {k}" for k in eval_keys] + ["wall time", "tokens/s", "peak memory", "trainable params"])
    rows = []
    for r in runs:
        mark = r is best
        cells = [("★ " if mark else "") + escape(r.name)] + [escape(_value(r.params[k])) for k in varied]
        cells += [escape(str(r.status)), str(r.info.get("global_step", len(r.rows))),
                  _num(r.summary.get("final_train_loss")), _num(r.summary.get("best_train_loss")),
                  _num(r.summary.get("final_eval_loss"))]
        cells += [_num(r.eval_metrics.get(k)) for k in eval_keys]
        cells += [_num(r.train_time, "{:.1f} s"), _num(r.summary.get("tokens_per_second"), "{:.0f}"),
                  _mib(r.peak_memory), f"{r.info.get('trainable_parameters', 0):,}"]
        rows.append(f'<tr class="{"best" if mark else ""}" data-run="{escape(run_label(r, varied))}">'
                    + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ('<table id="runs"><thead><tr>' + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _samples(runs: list[RunView], varied: list[str]) -> str:
    prompts = list(dict.fromkeys(s["prompt"] for r in runs for s in r.samples))
    html = []
    if prompts:
        html.append("<h3>Held-out prompts (samples.md): base vs each run</h3>")
        head = ["prompt", "reference", "base model"] + [run_label(r, varied) for r in runs]
        html.append('<table class="samples"><thead><tr>' + "".join(f"<th>{escape(h)}</th>" for h in head)
                    + "</tr></thead><tbody>")
        for p in prompts:
            by_run = [next((s for s in r.samples if s["prompt"] == p), None) for r in runs]
            first = next(s for s in by_run if s)
            cells = [p, first["reference"], first["base"]] + [s["tuned"] if s else "—" for s in by_run]
            html.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
        html.append("</tbody></table>")
    answered = [r for r in runs if r.eval_answers]
    if answered:
        n = min(8, len(answered[0].eval_answers))
        html.append(f"<h3>Eval answers (first {n}; all in each run's results.json)</h3>")
        head = ["prompt", "reference"] + [run_label(r, varied) for r in answered]
        html.append('<table class="samples"><thead><tr>' + "".join(f"<th>{escape(h)}</th>" for h in head)
                    + "</tr></thead><tbody>")
        for i in range(n):
            a0 = answered[0].eval_answers[i]
            prompt = a0.get("prompt") or a0.get("question", "")
            ref = a0.get("reference") or a0.get("gold", "")
            answers = [(r.eval_answers[i].get("answer") or r.eval_answers[i].get("generated", ""))
                       if i < len(r.eval_answers) else "—" for r in answered]
            html.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in [prompt, ref] + answers) + "</tr>")
        html.append("</tbody></table>")
    return "".join(html) or "<p>No sample answers in these runs (data.holdout_prompts: 0 and no eval).</p>"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px}h3{font-size:15px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;
vertical-align:top}th{background:#f4f4f4;text-align:left}tr.best td{background:#fff6d5;font-weight:600}
table.samples td{max-width:360px;white-space:pre-wrap}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart text.title{font-weight:600;font-size:13px}
.chart text.tick,.chart text.axis{font-size:11px;fill:#555}
.legend span{display:inline-block;margin:2px 10px 2px 0;cursor:pointer;font-size:13px}
.legend span.off{opacity:.35}.legend i{display:inline-block;width:22px;height:3px;vertical-align:middle;margin-right:4px}
ul.warnings li{color:#8a3b00}.ok{color:#2a7a2a}
"""

SCRIPT = """
// Click a run in a legend to hide or show it in every chart.
document.querySelectorAll('.legend span').forEach(function (el) {
  el.addEventListener('click', function () {
    var run = el.getAttribute('data-run');
    var off = !el.classList.contains('off');
    document.querySelectorAll('.legend span').forEach(function (s) {
      if (s.getAttribute('data-run') === run) { s.classList.toggle('off', off); }
    });
    document.querySelectorAll('g.series').forEach(function (g) {
      if (g.getAttribute('data-run') === run) { g.style.display = off ? 'none' : ''; }
    });
  });
});
"""


def _legend(series: list[dict]) -> str:
    return '<div class="legend">' + "".join(
        f'<span data-run="{escape(s["label"])}"><i style="background:{s["color"]}"></i>{escape(s["label"])}</span>'
        for s in series) + "</div>"


def _pngs(out: Path, grouped, varied: list[str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for gname, styled in grouped:
        has_eval = any(s["run"].eval_rows for s in styled)
        panels = METRICS + ([("eval_loss", "eval loss")] if has_eval else [])
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
        for ax, (metric, title) in zip(axes[0], panels):
            for s in _series(styled, metric, varied, eval_rows=metric == "eval_loss"):
                xs = [p[0] for p in s["points"]]
                ys = [p[1] for p in s["points"]]
                dash = tuple(float(x) for x in s["dash"].split()) if s["dash"] else None
                ax.plot(xs, ys, marker="o", markersize=3, color=s["color"], label=s["label"],
                        linestyle=(0, dash) if dash else "-")
            ax.set_title(f"{title} by {gname}" if varied else title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        f = out / f"curves_by_{gname.replace(' ', '_')}.png"
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(f)
    return files


def build_report(paths: list, output: Optional[Path] = None, console: Optional[Console] = None) -> Path:
    """Write report.html + PNGs; return the HTML path."""
    console = console or Console()
    runs, varied = collect([Path(p) for p in paths])
    if output is None:
        first = Path(paths[0])
        output = first / "report" if len(paths) == 1 and not (first / "config.yaml").is_file() else \
            Path(f"report-{datetime.now():%Y%m%d-%H%M%S}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    best, best_why = best_run(runs)
    grouped = groups(runs, varied)
    warnings = {r.name: curve_warnings(r.rows, r.learning_rate) for r in runs}
    for r in runs:
        if r.status != "complete":
            warnings[r.name].insert(0, f"run status: {r.status}")
    title = Path(paths[0]).resolve().name if len(paths) == 1 else f"{len(runs)} runs"
    body = [f"<h1>seektune report: {escape(title)}</h1>",
            f"<p>{len(runs)} runs; varied: {escape(', '.join(varied) or 'nothing')}. Generated "
            f"{datetime.now():%Y-%m-%d %H:%M}. ★ marks the best run ({escape(best_why)}).</p>",
            "<h2>Warnings from the curves</h2>"]
    flagged = [(n, w) for n, ws in warnings.items() for w in ws]
    body.append('<ul class="warnings">' + "".join(f"<li><b>{escape(n)}</b>: {escape(w)}</li>" for n, w in flagged)
                + "</ul>" if flagged else '<p class="ok" id="no-warnings">No warnings: no NaN, spike, divergence or '
                "flat loss detected (trends need at least 5 logged steps).</p>")
    body += ["<h2>Final metrics</h2>", _table(runs, varied, best)]
    for gname, styled in grouped:
        body.append(f"<h2>Curves{' by ' + escape(gname) if varied else ''}</h2>")
        charts = []
        for metric, mtitle in METRICS:
            charts.append(line_chart(_series(styled, metric, varied), f"{mtitle}" + (f" by {gname}" if varied else ""),
                                     mtitle))
        if any(s["run"].eval_rows for s in styled):
            charts.append(line_chart(_series(styled, "eval_loss", varied, eval_rows=True), "eval loss", "eval loss"))
        body.append('<div class="charts">' + "".join(charts) + "</div>" + _legend(_series(styled, "loss", varied)))
    body += ["<h2>Sample answers</h2>", _samples(runs, varied)]
    pngs = _pngs(out, grouped, varied)
    body.append("<p>PNG copies: " + ", ".join(escape(p.name) for p in pngs) + "</p>")
    html = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>seektune report: {escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + f"<script>{SCRIPT}</script></body></html>\n")
    page = out / "report.html"
    page.write_text(html, encoding="utf-8")
    (out / "report.json").write_text(json.dumps({
        "runs": [{"name": r.name, "path": str(r.path), "params": r.params, "status": r.status, **r.summary,
                  "train_time": r.train_time, "peak_memory_bytes": r.peak_memory, "eval": r.eval_metrics,
                  "warnings": warnings[r.name]} for r in runs],
        "varied": varied, "best": best.name if best else None, "best_by": best_why,
    }, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    console.print(f"[green]report: {page}[/green] (+ {len(pngs)} PNG)")
    for n, w in flagged:
        console.print(f"[yellow]! {n}: {w}[/yellow]")
    return page
