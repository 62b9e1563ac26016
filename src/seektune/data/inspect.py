"""`seektune inspect-data`: what the model will be trained on, with the supervised tokens marked."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from seektune.config import RunConfig
from seektune.data.dataset import DatasetReport, default_datasets, encode_all, fmt_report_lines, load_conversations
from seektune.data.reasoning import ReasoningOptions
from seektune.data.render import IGNORE, ChatRenderer, resolve_template
from seektune.models.load import load_tokenizer
from seektune.models.source import resolve_source


def show_samples(cfg: RunConfig, n: int, console: Console) -> None:
    source = resolve_source(cfg.model.source, revision=cfg.model.revision, allow_pickle=cfg.model.allow_pickle)
    tokenizer = load_tokenizer(source, cfg.model.trust_remote_code)
    template, note = resolve_template(cfg.model.chat_template, tokenizer)
    renderer = ChatRenderer(tokenizer, template, cfg.data.loss_on, cfg.data.max_length, ReasoningOptions.from_data(cfg.data))
    console.print(f"template: {note}; end of turn: {renderer.end_of_turn!r}")
    reports = []
    for spec in cfg.data.datasets or default_datasets():
        report = DatasetReport(file=spec.path)
        convs = load_conversations(spec, cfg.data.skip_bad_records, report)
        encoded = encode_all(convs, renderer, cfg.data.skip_bad_records, report)
        reports.append(report)
        for enc in encoded[:n]:
            console.rule(f"{spec.path} (green = supervised, {enc.n_supervised}/{len(enc.input_ids)} tokens)")
            console.print(_marked(tokenizer, enc.input_ids, enc.labels))
    console.rule("summary")
    for line in fmt_report_lines(reports):
        console.print(line)


def _marked(tokenizer, ids: list[int], labels: list[int]) -> Text:
    text = Text()
    run: list[int] = []
    state = None
    for tok, lab in zip(ids, labels):
        sup = lab != IGNORE
        if state is not None and sup != state:
            text.append(tokenizer.decode(run), style="bold green" if state else "dim")
            run = []
        run.append(tok)
        state = sup
    if run:
        text.append(tokenizer.decode(run), style="bold green" if state else "dim")
    return text
