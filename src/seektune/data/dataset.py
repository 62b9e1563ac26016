"""DataSection -> tokenized train/eval samples, held-out prompts, and a report that counts everything.

Records in = records trained + records held out + records skipped (each with its reason).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from seektune.config import DataSection, DatasetSpec
from seektune.data.formats import Conversation, detect_format, to_conversation
from seektune.data.read import read_records
from seektune.data.render import ChatRenderer, Encoded
from seektune.errors import DataError, SeektuneError, TemplateError

BUNDLED_SAMPLE = Path(__file__).parent.parent / "samples" / "identity.json"
EXPECTED = {
    "alpaca": "instruction and output as text (+ input, system, history)",
    "pair": "prompt and response as text (+ system)",
    "conversation": "conversation: a list of {input, output} objects (+ system in the first)",
    "messages": "messages: a list of {role, content}, roles user/assistant alternating (+ system first, tool)",
    "sharegpt": "conversations: a list of {from, value}, human/gpt alternating",
    "reasoning": "Question, Complex_CoT and Response as text",
}
SKIP_HINT = ". Fix the record, or pass --skip-bad-records to skip and report such records (in data_report.json)"


@dataclass
class DatasetReport:
    file: str
    format: str = ""
    records_read: int = 0
    records_used_for_training: int = 0
    records_held_out_for_eval: int = 0
    records_held_out_for_samples: int = 0
    skipped: list[dict] = field(default_factory=list)
    samples_truncated: int = 0
    tokens_cut_by_truncation: int = 0
    dropped_no_supervised_after_truncation: int = 0
    tool_turns_rendered_as_user: int = 0
    tokens: int = 0
    supervised_tokens: int = 0
    extra_samples_from_split_turns: int = 0
    records_in_last_encode: int = field(default=0, repr=False)

    @property
    def supervised_fraction(self) -> float:
        return self.supervised_tokens / self.tokens if self.tokens else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("records_in_last_encode")
        d["records_skipped"] = len(self.skipped)
        d["supervised_fraction"] = round(self.supervised_fraction, 4)
        return d


@dataclass
class PreparedData:
    train: list[Encoded]
    eval: list[Encoded]
    holdout: list[Conversation]
    reports: list[DatasetReport]

    def to_dict(self, renderer_note: str = "") -> dict:
        return {
            "template": renderer_note,
            "datasets": [r.to_dict() for r in self.reports],
            "train_samples": len(self.train),
            "eval_samples": len(self.eval),
            "holdout_prompts": len(self.holdout),
        }


def default_datasets() -> list[DatasetSpec]:
    return [DatasetSpec(path=str(BUNDLED_SAMPLE), format="alpaca")]


def load_conversations(spec: DatasetSpec, skip_bad: bool, report: DatasetReport) -> list[Conversation]:
    convs: list[Conversation] = []
    fmt = None if spec.format == "auto" else spec.format
    for rec in read_records(spec.path, skip_bad=True):
        if spec.max_records is not None and report.records_read >= spec.max_records:
            break
        report.records_read += 1
        try:
            if rec.error is not None:
                raise rec.error
            if fmt is None:
                fmt = detect_format(rec, spec.columns)
            convs.append(to_conversation(rec, fmt, spec.columns, spec.system))
        except DataError as e:
            if not skip_bad:
                expected = f". The {fmt} format expects {EXPECTED[fmt]}" if e.field and fmt in EXPECTED else ""
                raise DataError(
                    e.file, e.record, e.field, e.problem + expected + SKIP_HINT, line=e.line, column=e.column,
                ) from None
            report.skipped.append(
                {"index": rec.index, "line": rec.line, "column": e.column, "field": e.field, "reason": e.problem}
            )
    report.format = fmt or spec.format
    if report.records_read == 0:
        raise DataError(spec.path, None, None, "no records in the file (only blank lines?)")
    return convs


def encode_all(
    convs: list[Conversation], renderer: ChatRenderer, skip_bad: bool, report: DatasetReport
) -> list[Encoded]:
    out = []
    records = 0
    tool_ok = renderer.supports_role("tool")
    for conv in convs:
        try:
            encs = renderer.encode_turns(conv)  # one sample, or one per assistant turn (data.split_turns)
        except TemplateError as e:
            if not skip_bad:
                raise TemplateError(str(e) + SKIP_HINT) from None
            report.skipped.append({"index": conv.index, "line": conv.line, "field": None, "reason": str(e)})
            continue
        for enc in encs:
            enc.source = f"{Path(conv.file).name}:{conv.line or '?'} record {conv.index}"
        if not tool_ok:
            report.tool_turns_rendered_as_user += sum(m.role == "tool" for m in conv.messages)
        report.extra_samples_from_split_turns += len(encs) - 1
        kept = len(out)
        for enc in encs:
            if enc.truncated:
                report.samples_truncated += 1
                report.tokens_cut_by_truncation += enc.dropped_tokens
            if enc.n_supervised == 0:
                # Only truncation can do this (every record has a non-empty answer); count it, never hide it.
                report.dropped_no_supervised_after_truncation += 1
                continue
            report.tokens += len(enc.input_ids)
            report.supervised_tokens += enc.n_supervised
            out.append(enc)
        records += len(out) > kept
    report.records_in_last_encode = records  # records with at least one sample (split_turns makes several)
    return out


def prepare_data(cfg: DataSection, renderer: ChatRenderer, file_errors: Optional[list] = None) -> PreparedData:
    """`file_errors`: when given, a dataset whose file cannot be read at all is recorded there and left out,
    so that a dry run can report every problem at once (the caller then refuses to train)."""
    specs = cfg.datasets or default_datasets()
    rng = random.Random(cfg.seed)
    train: list[Encoded] = []
    evals: list[Encoded] = []
    holdout: list[Conversation] = []
    reports = []
    for n, spec in enumerate(specs):
        report = DatasetReport(file=spec.path)
        reports.append(report)
        try:
            convs = load_conversations(spec, cfg.skip_bad_records, report)
        except DataError as e:
            if file_errors is None or e.record is not None:
                raise
            file_errors.append(e)
            continue
        order = list(range(len(convs)))
        rng.shuffle(order)
        take = cfg.holdout_prompts if n == 0 else 0
        take = min(take, max(len(convs) - 1, 0))
        held = sorted(order[:take])
        rest = order[take:]
        n_eval = int(round(len(rest) * cfg.eval_split))
        eval_idx, train_idx = set(rest[:n_eval]), sorted(rest[n_eval:])
        holdout += [convs[i] for i in held]
        report.records_held_out_for_samples = len(held)
        encoded_eval = encode_all([convs[i] for i in sorted(eval_idx)], renderer, cfg.skip_bad_records, report)
        report.records_held_out_for_eval = report.records_in_last_encode
        evals += encoded_eval
        encoded = encode_all([convs[i] for i in train_idx], renderer, cfg.skip_bad_records, report)
        report.records_used_for_training = report.records_in_last_encode
        train += encoded
    if file_errors is not None:  # the caller (the preflight checks) judges what is left
        return PreparedData(train, evals, holdout, reports)
    if not train:
        raise SeektuneError("no training samples: every record was skipped, held out or truncated away")
    if sum(e.n_supervised for e in train) == 0:
        raise SeektuneError("nothing is supervised: no assistant token carries a loss; check the chat template")
    return PreparedData(train, evals, holdout, reports)


def fmt_report_lines(reports: list[DatasetReport]) -> list[str]:
    lines = []
    for r in reports:
        lines.append(
            f"{Path(r.file).name} [{r.format}]: {r.records_read} read, {r.records_used_for_training} train, "
            f"{r.records_held_out_for_eval} eval, {r.records_held_out_for_samples} held out for before/after, "
            f"{len(r.skipped)} skipped; {r.samples_truncated} truncated ({r.tokens_cut_by_truncation} tokens cut); "
            f"supervised {r.supervised_fraction:.1%} of {r.tokens} tokens"
        )
        if r.dropped_no_supervised_after_truncation:
            lines.append(
                f"  ! {r.dropped_no_supervised_after_truncation} samples had no answer left after truncation and were "
                "not trained on; raise data.max_length"
            )
        if r.tool_turns_rendered_as_user:
            lines.append(f"  ! the template has no tool role: {r.tool_turns_rendered_as_user} tool turns rendered as user")
        reasons: dict[str, int] = {}
        for s in r.skipped:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])[:5]:
            lines.append(f"  skipped {count}x: {reason}")
    return lines


def conversation_prompt(conv: Conversation) -> Optional[str]:
    """The last user message, for display."""
    users = [m.content for m in conv.prompt_messages if m.role == "user"]
    return users[-1] if users else None
