"""Held-out data -> evaluation items: generation items (prompt + reference, in any format the core
reads) or multiple-choice items (question, lettered options, gold letter).

Multiple choice is recognised from the fields: CMMLU's CSV columns (Question, A, B, C, D, Answer)
or MedQA-style records (question, options {A: ..}, answer_idx), as in medical_o1_demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from seektune.config import DatasetSpec
from seektune.data.dataset import DatasetReport, load_conversations
from seektune.data.formats import Conversation
from seektune.data.read import RawRecord, read_records
from seektune.errors import DataError
from seektune.evaluate.metrics import has_cjk

LETTERS = "ABCDEFGHIJ"


@dataclass
class ChoiceItem:
    question: str
    options: dict[str, str]  # letter -> option text, in letter order
    answer: str  # the gold letter
    file: str
    index: int
    line: Optional[int] = None

    @property
    def prompt(self) -> str:
        """The question as examples/cmmlu.yaml trains it: options on their own lines, then the answer cue."""
        lines = [self.question.strip()] + [f"{k}. {v}" for k, v in self.options.items()]
        cue = "答案：" if has_cjk(self.question) else "Answer:"
        return "\n".join(lines) + "\n" + cue


@dataclass
class EvalData:
    path: str
    kind: Literal["generation", "choice"]
    conversations: list[Conversation] = field(default_factory=list)
    choices: list[ChoiceItem] = field(default_factory=list)
    report: Optional[DatasetReport] = None

    def __len__(self) -> int:
        return len(self.conversations) if self.kind == "generation" else len(self.choices)

    @property
    def name(self) -> str:
        return Path(self.path).name


def _choice_shape(data) -> Optional[str]:
    if not isinstance(data, dict):
        return None
    if {"Question", "A", "B", "Answer"} <= set(data):
        return "cmmlu"
    if isinstance(data.get("options"), dict) and "answer_idx" in data and ("question" in data or "Question" in data):
        return "medqa"
    return None


def _to_choice(rec: RawRecord, shape: str) -> ChoiceItem:
    d = rec.data

    def fail(fld, problem):
        raise DataError(rec.file, rec.index, fld, problem, line=rec.line)

    if _choice_shape(d) != shape:
        fail(None, f"expected the same multiple-choice fields as the first record ({shape})")
    if shape == "cmmlu":
        question, answer_field = d["Question"], "Answer"
        options = {k: d[k] for k in LETTERS if k in d}
    else:
        question = d.get("question", d.get("Question"))
        answer_field = "answer_idx"
        options = {str(k).strip(): v for k, v in d["options"].items()}
    if not isinstance(question, str) or not question.strip():
        fail("Question" if shape == "cmmlu" else "question", "missing or empty question")
    for k, v in options.items():
        if not isinstance(v, (str, int, float)) or not str(v).strip():
            fail(k if shape == "cmmlu" else f"options.{k}", "option text missing or empty")
    if len(options) < 2:
        fail(None, "fewer than two options")
    answer = str(d.get(answer_field, "")).strip().upper()
    if answer not in options:
        fail(answer_field, f"gold answer {d.get(answer_field)!r} is not one of the options {', '.join(options)}")
    return ChoiceItem(question, {k: str(v).strip() for k, v in options.items()}, answer, rec.file, rec.index, rec.line)


def load_eval_data(
    path: str,
    format: str = "auto",  # noqa: A002  (the same key as in a dataset spec)
    columns: Optional[dict[str, str]] = None,
    task: str = "auto",
    max_records: Optional[int] = None,
    system: Optional[str] = None,
) -> EvalData:
    """Read one held-out file. `task`: auto (choice when the fields say so), generation, or choice."""
    if task not in ("auto", "generation", "choice"):
        raise DataError(path, None, None, f"unknown task {task!r}; use auto, generation or choice")
    if task != "generation":
        first = next(iter(read_records(path)))
        shape = _choice_shape(first.data)
        if shape is None and task == "choice":
            raise DataError(
                path, first.index, None,
                f"not multiple-choice data: fields {sorted(first.data) if isinstance(first.data, dict) else '?'}; "
                "expected Question, A, B, C, D, Answer (CMMLU) or question, options, answer_idx (MedQA style)",
                line=first.line,
            )
        if shape is not None:
            items = []
            for rec in read_records(path):
                if max_records is not None and len(items) >= max_records:
                    break
                items.append(_to_choice(rec, shape))
            return EvalData(path, "choice", choices=items)
    spec = DatasetSpec(path=path, format=format, columns=columns or {}, system=system, max_records=max_records)
    report = DatasetReport(file=path)
    convs = load_conversations(spec, skip_bad=False, report=report)
    return EvalData(path, "generation", conversations=convs, report=report)
