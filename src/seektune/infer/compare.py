"""`seektune compare`: the same prompts through the base model and one or more fine-tuned models, side by
side -- printed, and written as Markdown and a self-contained HTML page (with the reference answers when
the prompts come from a dataset)."""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from seektune.errors import SeektuneError
from seektune.infer.engine import Answer, Sampling, generate
from seektune.infer.prompts import PromptItem
from seektune.infer.think import shown


@dataclass
class Column:
    name: str
    answers: list[Answer] = field(default_factory=list)


@dataclass
class Comparison:
    prompts: list[PromptItem]
    columns: list[Column]
    sampling: Sampling
    show_thinking: bool = True
    notes: list[str] = field(default_factory=list)

    def cell(self, col: Column, i: int) -> str:
        a = col.answers[i]
        text = shown(a.text, a.prefill, self.show_thinking)
        return text if a.stopped else text + " [cut at max_new_tokens]"

    @property
    def has_reference(self) -> bool:
        return any(p.reference for p in self.prompts)

    def markdown(self) -> str:
        s = self.sampling
        how = "greedy" if s.temperature == 0 else f"temperature {s.temperature}, top-p {s.top_p}"
        lines = ["# Before / after", "", f"{len(self.prompts)} prompts; {how}; at most {s.max_new_tokens} new tokens.", ""]
        lines += [f"> {n}" for n in self.notes] + ([""] if self.notes else [])
        for i, p in enumerate(self.prompts, 1):
            lines += [f"## {i}. {_one_line(p.label)}", ""]
            for col in self.columns:
                lines += [f"**{col.name}:**", "", _md_block(self.cell(col, i - 1)), ""]
            if p.reference:
                lines += ["**reference:**", "", _md_block(p.reference), ""]
        return "\n".join(lines)

    def html(self) -> str:
        heads = ["prompt"] + [c.name for c in self.columns] + (["reference"] if self.has_reference else [])
        rows = []
        for i, p in enumerate(self.prompts):
            cells = [p.label] + [self.cell(c, i) for c in self.columns] + ([p.reference or ""] if self.has_reference else [])
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        notes = "".join(f"<p class=note>{html.escape(n)}</p>" for n in self.notes)
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>seektune compare</title><style>"
            "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse;width:100%}"
            "th,td{border:1px solid #ccc;padding:.5em;vertical-align:top;white-space:pre-wrap;text-align:left}"
            "th{background:#f3f3f3}td:first-child{font-weight:600}.note{color:#865}</style></head><body>"
            f"<h1>Before / after</h1>{notes}<table><thead><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in heads)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></body></html>"
        )

    def to_json(self) -> dict:
        return {
            "sampling": asdict(self.sampling),
            "notes": self.notes,
            "rows": [
                {"prompt": p.label, "messages": [asdict(m) for m in p.messages], "reference": p.reference,
                 **{c.name: {"answer": self.cell(c, i), "tokens": c.answers[i].tokens, "stopped": c.answers[i].stopped}
                    for c in self.columns}}
                for i, p in enumerate(self.prompts)
            ],
        }

    def print(self, console) -> None:
        from rich.table import Table

        table = Table(title="before / after", show_lines=True)
        table.add_column("prompt", overflow="fold")
        for c in self.columns:
            table.add_column(c.name, overflow="fold")
        if self.has_reference:
            table.add_column("reference", overflow="fold")
        for i, p in enumerate(self.prompts):
            table.add_row(p.label, *[self.cell(c, i) for c in self.columns],
                          *([p.reference or ""] if self.has_reference else []))
        console.print(table)

    def write(self, folder) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = [folder / "compare.md", folder / "compare.html", folder / "compare.json"]
        files[0].write_text(self.markdown(), encoding="utf-8")
        files[1].write_text(self.html(), encoding="utf-8")
        files[2].write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False), encoding="utf-8")
        return files


def _one_line(text: str, n: int = 80) -> str:
    t = " ".join(text.split())
    return t if len(t) <= n else t[: n - 1] + "…"


def _md_block(text: str) -> str:
    return "\n".join("> " + line for line in (text or "(empty)").splitlines()) or "> (empty)"


def compare(
    targets: list[str],
    prompts: list[PromptItem],
    base: Optional[str] = None,
    include_base: bool = True,
    sampling: Optional[Sampling] = None,
    batch_size: int = 8,
    precision: str = "auto",
    load_in: Optional[str] = None,
    show_thinking: bool = True,
    progress: Optional[Callable[[str], None]] = None,
) -> Comparison:
    """Runs sharing a base model are loaded on one copy of it, as named adapters (the base column is the
    same model with its adapters switched off, rendered with the first run's template)."""
    from seektune.infer.target import describe, load_target

    if not targets and not base:
        raise SeektuneError("compare needs at least one run folder, adapter folder or model")
    sampling = sampling or Sampling(max_new_tokens=128)
    say = progress or (lambda m: None)
    specs = [describe(t) for t in targets]
    msgs = [p.messages for p in prompts]
    result = Comparison(prompts, [], sampling, show_thinking)
    names = _unique([s.name for s in specs])

    def run_column(name, model, renderer):
        say(f"generating: {name}")
        result.columns.append(Column(name, generate(model, renderer, msgs, sampling, batch_size)))

    if include_base and base is not None:
        t = load_target(base, precision, load_in, progress=say)
        run_column("base model", t.model, t.renderer)
        del t
    done: set[int] = set()
    for i, spec in enumerate(specs):
        if i in done:
            continue
        group = [j for j, s in enumerate(specs) if j not in done and s.adapter_dir and spec.adapter_dir and s.base == spec.base]
        group = group or [i]
        t = load_target(spec, precision, load_in, extra_adapters=[specs[j].path for j in group[1:]], progress=say)
        result.notes += [f"{spec.name}: {n}" for n in t.notes]
        if include_base and base is None and i == 0 and t.adapters:
            t.use(None)
            run_column("base model", t.model, t.renderer)
        for j, adapter_name in zip(group, list(t.adapters) or [None]):
            renderer = t.use(adapter_name) if t.adapters else t.renderer
            run_column(names[j], t.model, renderer)
            done.add(j)
        done.add(i)
        del t
    order = (["base model"] if any(c.name == "base model" for c in result.columns) else []) + names
    result.columns.sort(key=lambda c: order.index(c.name))
    return result


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out
