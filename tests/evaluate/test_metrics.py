"""ROUGE/BLEU-4 on words: hand-checked values, and agreement with the reference packages
(sacrebleu for BLEU-4, rouge-chinese - ChatGLM's scorer - for ROUGE) on fixed strings and real data."""

from __future__ import annotations

import json

import pytest
import sacrebleu
from rouge_chinese import Rouge

from seektune.evaluate.metrics import bleu4, generation_scores, rouge, words
from tests.conftest import shared

EN_HYP, EN_REF = "the cat sat on the mat", "the cat is on the mat"


def test_english_hand_checked():
    # unigrams: the x2, cat, on, mat match -> 5/6 both ways; bigrams: "the cat", "on the", "the mat" -> 3/5;
    # LCS "the cat on the mat" = 5 -> 5/6.
    r = rouge(EN_HYP, EN_REF)
    assert r["rouge-1"] == pytest.approx(100 * 5 / 6)
    assert r["rouge-2"] == pytest.approx(60.0)
    assert r["rouge-l"] == pytest.approx(100 * 5 / 6)
    # BLEU-4: p1 5/6, p2 3/5, p3 1/4, p4 0/3 -> smoothed (method 3) to 1/(2*3); equal lengths, BP 1.
    expected = 100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    assert bleu4(EN_HYP, EN_REF) == pytest.approx(expected)
    assert expected == pytest.approx(37.9918, abs=1e-4)


def test_chinese_is_segmented_by_jieba_hand_checked():
    hyp, ref = "这件连衣裙很漂亮", "这条连衣裙非常漂亮"
    assert words(hyp) == ["这件", "连衣裙", "很漂亮"]
    assert words(ref) == ["这", "条", "连衣裙", "非常", "漂亮"]
    # one shared word: P 1/3, R 1/5 -> F 0.25; no shared bigram.
    r = rouge(hyp, ref)
    assert r["rouge-1"] == pytest.approx(25.0) and r["rouge-l"] == pytest.approx(25.0) and r["rouge-2"] == 0
    assert words("Red dress, 很漂亮") == ["Red", "dress", ",", "很漂亮"]
    assert words("plain English  text") == ["plain", "English", "text"]


def test_identical_and_empty():
    assert rouge("简约的牛仔外套", "简约的牛仔外套")["rouge-l"] == pytest.approx(100.0)
    assert bleu4("a b c d e", "a b c d e") == pytest.approx(100.0)
    assert rouge("", "参考") == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    assert bleu4("   ", "参考") == 0.0
    s = generation_scores(["a b c d e", ""], ["a b c d e", "x"])
    assert s["rouge-1"] == pytest.approx(50.0) and s["bleu-4"] == pytest.approx(50.0)


def _real_pairs(n=40):
    lines = shared("advertisegen/dev.json").read_text(encoding="utf-8").splitlines()[: 2 * n]
    refs = [json.loads(x)["summary"] for x in lines]
    return list(zip(refs[0::2], refs[1::2]))


def test_bleu_agrees_with_sacrebleu_on_real_data():
    for hyp, ref in _real_pairs() + [(EN_HYP, EN_REF)]:
        expected = sacrebleu.sentence_bleu(" ".join(words(hyp)), [" ".join(words(ref))], tokenize="none",
                                           smooth_method="exp").score
        assert bleu4(hyp, ref) == pytest.approx(expected, abs=1e-9)


def test_rouge_l_agrees_with_rouge_chinese_on_real_data():
    for hyp, ref in _real_pairs():
        theirs = Rouge().get_scores(" ".join(words(hyp)), " ".join(words(ref)))[0]
        assert rouge(hyp, ref)["rouge-l"] == pytest.approx(100 * theirs["rouge-l"]["f"], abs=1e-4)


def test_rouge_n_agrees_with_rouge_chinese_without_repeats_and_counts_repeats_like_rouge_score():
    # Without repeated words both packages agree on every score.
    hyp, ref = "这款外套采用白色设计", "白色设计的简约外套"
    assert len(set(words(hyp))) == len(words(hyp)) and len(set(words(ref))) == len(words(ref))
    ours = rouge(hyp, ref)
    theirs = Rouge().get_scores(" ".join(words(hyp)), " ".join(words(ref)))[0]
    assert theirs["rouge-2"]["f"] > 0
    for k in ("rouge-1", "rouge-2", "rouge-l"):
        assert ours[k] == pytest.approx(100 * theirs[k]["f"], abs=1e-4)
    # rouge-chinese counts each distinct n-gram once; we count repeats, clipped (ROUGE's definition, as
    # Google's rouge-score does): "the" twice in both strings matches twice.
    assert rouge(EN_HYP, EN_REF)["rouge-1"] == pytest.approx(100 * 5 / 6)
    assert Rouge().get_scores(EN_HYP, EN_REF)[0]["rouge-1"]["f"] == pytest.approx(0.8, abs=1e-6)
