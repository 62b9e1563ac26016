"""Generation metrics against references: ROUGE-1/2/L and BLEU-4 on words.

Chinese text is segmented into words with jieba, as the ChatGLM / AdvertiseGen evaluation does;
other text is split on whitespace. Scores are per-sample F1 (ROUGE) and sentence BLEU-4 with
Chen & Cherry's method 3 smoothing (NLTK's SmoothingFunction().method3, ChatGLM's choice), times
100 and averaged over samples. The n-gram arithmetic is done by the reference packages
(rouge-score, NLTK), only the word segmentation is ours.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def words(text: str) -> list[str]:
    """jieba words for text with Chinese characters, whitespace tokens otherwise; never a blank token."""
    text = text.strip()
    if not text:
        return []
    if has_cjk(text):
        return [w for w in _jieba().lcut(text) if w.strip()]
    return text.split()


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading chatter is not for our users
    return jieba


class _WordTokenizer:
    """rouge-score's tokenizer interface over `words` (its default one deletes every non-ASCII letter)."""

    def tokenize(self, text: str) -> list[str]:
        return words(text)


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_WordTokenizer())


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F1 (0-100) of one prediction against one reference."""
    if not words(prediction) or not words(reference):
        return {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    s = _scorer().score(reference, prediction)
    return {"rouge-1": 100 * s["rouge1"].fmeasure, "rouge-2": 100 * s["rouge2"].fmeasure,
            "rouge-l": 100 * s["rougeL"].fmeasure}


def bleu4(prediction: str, reference: str) -> float:
    """Sentence BLEU-4 (0-100), uniform weights, method-3 smoothing."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    hyp, ref = words(prediction), words(reference)
    if not hyp or not ref:
        return 0.0
    return 100 * sentence_bleu([ref], hyp, smoothing_function=SmoothingFunction().method3)


def generation_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L and BLEU-4 over samples (0-100)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return {}
    totals = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu-4": 0.0}
    for p, r in zip(predictions, references):
        for k, v in rouge(p, r).items():
            totals[k] += v
        totals["bleu-4"] += bleu4(p, r)
    return {k: round(v / len(predictions), 4) for k, v in totals.items()}
