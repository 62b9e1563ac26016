"""Property test: random and adversarial records in every format (alpaca, pair, conversation, messages,
sharegpt, reasoning), written as JSON, JSONL or CSV, go through the readers and the chat-template renderer.
Nothing crashes except with the documented DataError/TemplateError, and no record is lost:
records in = records trained + held out + skipped (each with a reason)."""

from __future__ import annotations

import csv
import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from seektune.config import DataSection
from seektune.data.dataset import prepare_data
from seektune.data.render import ChatRenderer
from seektune.errors import DataError, SeektuneError, TemplateError

ADVERSARIAL = ["", " ", "\n", "\x00", '"', "}{", "][", ",", "<|im_end|>", "<|im_start|>assistant\n", "{{ 1/0 }}",
               "{% raise %}", "</think>", "<think>", "SEEKTUNE_ANSWER_7f3a", "\\u0000", "é中文🙂", "a" * 300]
TEXT = st.one_of(st.sampled_from(ADVERSARIAL), st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
JUNK = st.one_of(st.none(), st.integers(), st.booleans(), st.lists(st.integers(), max_size=2), st.just({"x": 1}))
VALUE = st.one_of(TEXT, TEXT, TEXT, JUNK)


def _maybe(keys: dict) -> st.SearchStrategy:
    """A record with each field present or absent, good or adversarial."""
    return st.fixed_dictionaries({}, optional={k: v for k, v in keys.items()})


ROLES = st.sampled_from(["user", "assistant", "system", "tool", "human", "gpt", "", None, "ASSISTANT"])
FROMS = st.sampled_from(["human", "gpt", "system", "observation", "function_call", "robot", None])
RECORDS = {
    "alpaca": _maybe({"instruction": VALUE, "input": VALUE, "output": VALUE, "system": VALUE,
                      "history": st.one_of(JUNK, st.lists(st.lists(TEXT, min_size=2, max_size=2), max_size=2))}),
    "pair": _maybe({"prompt": VALUE, "response": VALUE, "system": VALUE}),
    "reasoning": _maybe({"Question": VALUE, "Complex_CoT": VALUE, "Response": VALUE, "system": VALUE}),
    "conversation": _maybe({"conversation": st.one_of(JUNK, st.lists(
        _maybe({"input": VALUE, "output": VALUE, "system": VALUE}), max_size=3))}),
    "messages": _maybe({"messages": st.one_of(JUNK, st.lists(
        st.fixed_dictionaries({"role": ROLES, "content": VALUE}), max_size=4))}),
    "sharegpt": _maybe({"conversations": st.one_of(JUNK, st.lists(
        st.fixed_dictionaries({"from": FROMS, "value": VALUE}), max_size=4)), "system": VALUE}),
}
# A handful of well-formed records per format, so that every file also exercises the good path.
GOOD = {
    "alpaca": {"instruction": "Say hi", "input": "", "output": "Hi!"},
    "pair": {"prompt": "Say hi", "response": "Hi!"},
    "reasoning": {"Question": "2+2?", "Complex_CoT": "Add them.", "Response": "4"},
    "conversation": {"conversation": [{"system": "Be kind.", "input": "Hello", "output": "Hello!"}]},
    "messages": {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
    "sharegpt": {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
}
FLAT = ("alpaca", "pair", "reasoning")


@st.composite
def datasets(draw):
    fmt = draw(st.sampled_from(sorted(RECORDS)))
    container = draw(st.sampled_from(["json", "jsonl", "csv"] if fmt in FLAT else ["json", "jsonl"]))
    records = draw(st.lists(st.one_of(RECORDS[fmt], st.just(GOOD[fmt]), st.just(GOOD[fmt]),
                                      JUNK if container != "csv" else st.nothing()), min_size=1, max_size=8))
    return fmt, container, records


def _write(folder, container, records) -> tuple:
    path = folder / f"data.{container}"
    if container == "json":
        path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    elif container == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    else:
        cols = sorted({k for r in records for k in r}) or ["instruction"]
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            for r in records:
                w.writerow({k: v if isinstance(v, str) or v is None else json.dumps(v) for k, v in r.items()})
    return path


@pytest.fixture(scope="module")
def renderer(smol_tokenizer):
    return ChatRenderer(smol_tokenizer, max_length=96)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(ds=datasets(), eval_split=st.sampled_from([0.0, 0.3]))
def test_every_record_is_trained_held_out_or_reported(tmp_path_factory, renderer, ds, eval_split):
    fmt, container, records = ds
    path = _write(tmp_path_factory.mktemp("fuzz"), container, records)
    spec = {"path": str(path), "format": fmt}
    # Skipping: everything read is accounted for.
    cfg = DataSection(datasets=[spec], skip_bad_records=True, eval_split=eval_split, holdout_prompts=1, max_length=96)
    file_errors: list = []
    data = prepare_data(cfg, renderer, file_errors)
    assert not file_errors, file_errors
    (rep,) = data.reports
    event(f"{fmt}/{container}: {'some' if rep.skipped else 'no'} skipped, {'some' if data.train else 'no'} trained")
    assert rep.records_read == len(records)
    assert rep.records_read == (rep.records_used_for_training + rep.records_held_out_for_eval
                                + rep.records_held_out_for_samples + len(rep.skipped)
                                + rep.dropped_no_supervised_after_truncation)
    assert len(data.train) == rep.records_used_for_training and len(data.eval) == rep.records_held_out_for_eval
    assert all(isinstance(s["reason"], str) and s["reason"] for s in rep.skipped)
    assert len({s["index"] for s in rep.skipped}) == len(rep.skipped)  # each record reported once
    for enc in data.train + data.eval:
        assert enc.n_supervised > 0 and len(enc.input_ids) == len(enc.labels) <= 96
    # Not skipping: either it all works, or the error is a documented one that names the file.
    strict = cfg.model_copy(update={"skip_bad_records": False})
    try:
        prepare_data(strict, renderer)
    except (DataError, TemplateError) as e:
        assert rep.skipped, f"strict mode failed where skipping found nothing bad: {e}"
        assert str(path) in str(e) and "--skip-bad-records" in str(e)
    except SeektuneError as e:
        assert "no training samples" in str(e) and not data.train
    else:
        assert not rep.skipped
