"""Multiple-choice accuracy on 20 real CMMLU questions and 5 medical_o1 (MedQA-style) questions with the
embedded model: the batched letter log-likelihoods equal an independent full-sequence computation, and the
accuracies are what the per-question rows say."""

from __future__ import annotations

import pytest
import torch

from seektune.data.formats import Message
from seektune.errors import DataError
from seektune.evaluate.choice import parse_choice
from seektune.evaluate.runner import EvalOptions, evaluate_loaded, load_for_eval
from seektune.evaluate.tasks import load_eval_data
from tests.conftest import shared


@pytest.fixture(scope="module")
def base(one_thread):  # one_thread: tests/conftest.py, restored after the module
    return load_for_eval("embedded")


@pytest.mark.parametrize("text,letter", [
    ("B", "B"), ("B. 卵巢", "B"), ("答案是C", "C"), ("答案：（D）", "D"), ("我认为选A", "A"),
    ("The answer is D.", "D"), ("Answer: (c)", None), ("(A) Benign", "A"), ("应该是卵巢", "A"), ("不知道", None),
    ("All of them", None),
])
def test_parse_choice(text, letter):
    assert parse_choice(text, {"A": "卵巢", "B": "前庭大腺", "C": "前庭球", "D": "乳腺"}) == letter


def test_choice_data_is_recognised():
    cm = load_eval_data(str(shared("cmmlu/test/anatomy.csv")), max_records=20)
    assert cm.kind == "choice" and len(cm.choices) == 20
    first = cm.choices[0]
    assert first.options == {"A": "卵巢", "B": "前庭大腺", "C": "前庭球", "D": "乳腺"} and first.answer == "A"
    assert first.prompt == "女性生殖腺是\nA. 卵巢\nB. 前庭大腺\nC. 前庭球\nD. 乳腺\n答案："
    med = load_eval_data(str(shared("medical_o1_demo/demo_data.json")), max_records=5)
    assert med.kind == "choice" and set(med.choices[0].options) == set("ABCDE")
    assert med.choices[0].prompt.endswith("\nAnswer:")
    # The same file as generation data (question -> reasoning + answer), when asked.
    gen = load_eval_data(str(shared("medical_o1_demo/demo_data.json")), task="generation", max_records=2)
    assert gen.kind == "generation" and len(gen.conversations) == 2


def test_bad_gold_answer_names_file_line_and_field(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text(",Question,A,B,C,D,Answer\n0,q1,a,b,c,d,A\n1,q2,a,b,c,d,E\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_eval_data(str(f))
    msg = str(e.value)
    assert "bad.csv:3" in msg and "record 1" in msg and "`Answer`" in msg and "'E'" in msg
    with pytest.raises(DataError, match="not multiple-choice data"):
        load_eval_data(str(shared("advertisegen/dev.json")), task="choice")


@torch.no_grad()
def _full_sequence_logprob(model, renderer, prompt: str, letter: str) -> float:
    ids = renderer.prompt_ids([Message("user", prompt)])
    cont = renderer.tokenizer(letter, add_special_tokens=False)["input_ids"]
    logits = model(input_ids=torch.tensor([ids + cont])).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    return sum(float(lp[len(ids) - 1 + j, t]) for j, t in enumerate(cont))


@pytest.mark.parametrize("rel,n", [("cmmlu/test/anatomy.csv", 20), ("medical_o1_demo/demo_data.json", 2)])
def test_accuracy_on_real_questions(base, rel, n):
    model, renderer, _ = base
    data = load_eval_data(str(shared(rel)), max_records=n)
    res = evaluate_loaded(model, renderer, data, EvalOptions(choice_max_new_tokens=6, batch_size=10), "base")
    rows = res.answers
    assert len(rows) == n and res.metrics["n"] == n
    for item, row in list(zip(data.choices, rows))[:1]:  # independent check of the batched scores
        for letter, score in row["loglik"].items():
            assert score == pytest.approx(_full_sequence_logprob(model, renderer, item.prompt, letter), abs=2e-3)
    for row in rows:
        assert row["loglik_choice"] == max(row["loglik"], key=row["loglik"].get)
        assert row["gold"] in "ABCDE" and isinstance(row["generated"], str)
    assert res.metrics["accuracy_loglik"] == pytest.approx(sum(r["loglik_choice"] == r["gold"] for r in rows) / n)
    assert res.metrics["accuracy_generated"] == pytest.approx(sum(r["parsed_choice"] == r["gold"] for r in rows) / n)
    assert res.metrics["unparsed_generations"] == sum(r["parsed_choice"] is None for r in rows)
