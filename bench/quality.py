"""Measured quality: base vs fine-tuned embedded SmolLM2-135M on held-out slices never trained on.

  python bench/quality.py                 # writes bench/quality.md (+ bench/quality.json); CPU is fine
  python bench/quality.py --work DIR      # keep runs and evals in DIR; a rerun reuses the finished parts
  python bench/quality.py --model deepseek-ai/deepseek-llm-7b-chat --scale 10   # the same on a GPU, bigger slices

1. AdvertiseGen (../shared/data/advertisegen/dev.json): fine-tune on the first records, then ROUGE-1/2/L
   and BLEU-4 (jieba words) of base vs fine-tuned on the last records (a held-out slice; records whose
   `content` also occurs in the training slice are left out of it).
2. EmoLLM (../shared/data/emollm_data/data.json): fine-tune on the first conversations, then eval loss and
   perplexity on the counsellor turns of the last conversations.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SEEKTUNE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _write_jsonl(path: Path, records: list) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _finished(work: Path, name: str):
    """(run info, eval report) of a part this --work folder already finished, so a stopped bench resumes."""
    run_json, eval_json = work / f"{name}_run" / "run.json", work / f"{name}_eval" / "eval.json"
    if run_json.is_file() and eval_json.is_file():
        info = json.loads(run_json.read_text(encoding="utf-8"))
        if info.get("status") == "complete":
            return info, json.loads(eval_json.read_text(encoding="utf-8"))
    return None


def _train_and_eval(work: Path, name: str, cfg: dict, data: dict, opts) -> tuple[dict, dict, float, float]:
    import seektune
    from seektune.evaluate.runner import evaluate

    done = _finished(work, name)
    if done is not None:
        info, ev = done
        print(f"{name}: reusing the finished run and eval in {work}")
        return info, ev, info["seconds"], sum(r["seconds"] for r in ev["results"])
    t0 = time.time()
    run = seektune.train(cfg)
    train_s = time.time() - t0
    t0 = time.time()
    ev = evaluate([str(run.path)], [data], output=work / f"{name}_eval", with_base=True, options=opts)
    return run.info, ev, train_s, time.time() - t0


def advertisegen(work: Path, model, scale: int) -> dict:
    from seektune.evaluate.runner import EvalOptions

    recs = [json.loads(line) for line in (DATA / "advertisegen" / "dev.json").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    n_train, n_eval = 120 * scale, 24 * scale
    train = recs[:n_train]
    seen = {r["content"] for r in train}
    held = [r for r in recs[-n_eval:] if r["content"] not in seen]
    assert len(recs) >= n_train + n_eval, "not enough records for these slices"
    _write_jsonl(work / "adgen_train.jsonl", train)
    _write_jsonl(work / "adgen_heldout.jsonl", held)
    cfg = {
        "model": {"source": model},
        "data": {"datasets": [{"path": str(work / "adgen_train.jsonl"), "format": "pair",
                               "columns": {"prompt": "content", "response": "summary"}}],
                 "max_length": 160, "holdout_prompts": 0},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "train": {"epochs": 2, "learning_rate": 1e-3, "per_device_batch_size": 8, "warmup_ratio": 0.1,
                  "save_steps": 1000},
        "output": str(work / "adgen_run"),
    }
    info, ev, train_s, eval_s = _train_and_eval(
        work, "adgen", cfg, {"path": str(work / "adgen_heldout.jsonl"), "format": "pair",
                             "columns": {"prompt": "content", "response": "summary"}},
        EvalOptions(max_new_tokens=64, batch_size=8, max_length=512))
    return {"train_records": len(train), "heldout_records": len(held), "steps": info["global_step"],
            "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1),
            "data_report": json.loads((work / "adgen_run" / "data_report.json").read_text())["datasets"][0],
            "results": ev["results"], "answers": ev["answers"], "eval_md": str(work / "adgen_eval" / "eval.md")}


def emollm(work: Path, model, scale: int) -> dict:
    from seektune.evaluate.runner import EvalOptions

    recs = json.loads((DATA / "emollm_data" / "data.json").read_text(encoding="utf-8"))
    n_train, n_eval = 48 * scale, 24 * scale
    assert len(recs) >= n_train + n_eval
    first_inputs = {r["conversation"][0]["input"] for r in recs[:n_train]}
    held = [r for r in recs[-n_eval:] if r["conversation"][0]["input"] not in first_inputs]
    (work / "emo_train.json").write_text(json.dumps(recs[:n_train], ensure_ascii=False), encoding="utf-8")
    (work / "emo_heldout.json").write_text(json.dumps(held, ensure_ascii=False), encoding="utf-8")
    cfg = {
        "model": {"source": model},
        "data": {"datasets": [{"path": str(work / "emo_train.json"), "format": "conversation"}],
                 "max_length": 256, "holdout_prompts": 0},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "train": {"epochs": 1, "learning_rate": 1e-3, "per_device_batch_size": 4, "warmup_ratio": 0.1,
                  "save_steps": 1000},
        "output": str(work / "emo_run"),
    }
    info, ev, train_s, eval_s = _train_and_eval(
        work, "emo", cfg, {"path": str(work / "emo_heldout.json"), "format": "conversation"},
        EvalOptions(batch_size=4, max_length=1024, metrics=("loss",)))
    return {"train_records": n_train, "heldout_records": len(held), "steps": info["global_step"],
            "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1),
            "data_report": json.loads((work / "emo_run" / "data_report.json").read_text())["datasets"][0],
            "results": ev["results"]}


def _row(res: dict, cols: list[str]) -> list[str]:
    out = []
    for r in res["results"]:
        out.append(f"| {r['model']} | " + " | ".join(f"{r['metrics'][c]:.4g}" if r["metrics"].get(c) is not None
                                                    else "—" for c in cols) + " |")
    return out


def markdown(adg: dict, emo: dict, meta: dict) -> str:
    gen = ["rouge-1", "rouge-2", "rouge-l", "bleu-4", "eval_loss"]
    md = [
        "# Measured quality: base vs fine-tuned (embedded SmolLM2-135M-Instruct)", "",
        f"Produced by `{meta['command']}` on {meta['machine']}, {meta['date']}: {meta['total_seconds']:.0f} s of "
        "training and evaluation in all (the machine was shared with other jobs; times are wall-clock).",
        "Greedy decoding. ROUGE-1/2/L F1 and sentence BLEU-4 (method-3 smoothing), ×100, averaged over samples, on",
        "jieba words (`seektune.evaluate.metrics`). Loss and perplexity are over the assistant tokens only.", "",
        "## AdvertiseGen: product attributes → ad copy", "",
        f"- training: the first {adg['train_records']} records of `../shared/data/advertisegen/dev.json`, max_length "
        f"160 ({adg['data_report']['samples_truncated']} samples truncated), LoRA r=16, lr 1e-3, 2 epochs = "
        f"{adg['steps']} steps of 8: {adg['train_seconds']:.0f} s",
        f"- held out: the last {adg['heldout_records']} records (never trained on; none shares a `content` with the "
        f"training slice), answers up to 64 new tokens: {adg['eval_seconds']:.0f} s for both models", "",
        "| model | " + " | ".join(gen) + " |", "|---|" + "---|" * len(gen), *_row(adg, gen), "",
        "Three held-out answers (all in the eval folder's eval.json):", "",
    ]
    base_rows, tuned_rows = adg["answers"][0]["rows"], adg["answers"][1]["rows"]
    for b, t in list(zip(base_rows, tuned_rows))[:3]:
        md += [f"- **prompt** {b['prompt']}", f"  - reference: {b['reference']}", f"  - base: {b['answer'][:200]}",
               f"  - fine-tuned: {t['answer'][:200]}"]
    loss = ["eval_loss", "perplexity", "supervised_tokens", "samples_truncated"]
    md += [
        "", "## EmoLLM: multi-turn counselling conversations", "",
        f"- training: the first {emo['train_records']} conversations of `../shared/data/emollm_data/data.json`, "
        f"max_length 256 ({emo['data_report']['samples_truncated']} truncated), LoRA r=16, lr 1e-3, 1 epoch = "
        f"{emo['steps']} steps of 4: {emo['train_seconds']:.0f} s",
        f"- held out: the last {emo['heldout_records']} conversations, loss on every counsellor turn (max_length "
        f"1024): {emo['eval_seconds']:.0f} s", "",
        "| model | " + " | ".join(loss) + " |", "|---|" + "---|" * len(loss), *_row(emo, loss), "",
    ]
    return "\n".join(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model to fine-tune (default: the embedded SmolLM2)")
    ap.add_argument("--scale", type=int, default=1, help="multiply the slice sizes")
    ap.add_argument("--work", default=None, help="folder for runs and evals (default: a temporary folder)")
    ap.add_argument("--md", default=str(ROOT / "bench" / "quality.md"))
    args = ap.parse_args()
    import platform
    import tempfile

    import torch

    work = Path(args.work or tempfile.mkdtemp(prefix="seektune-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    adg = advertisegen(work, args.model, args.scale)
    emo = emollm(work, args.model, args.scale)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{os.cpu_count()}-core CPU"
    meta = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix().split(str(ROOT) + "/")[-1]] + sys.argv[1:]),
            "machine": f"{device} ({platform.machine()}), torch {torch.__version__}",
            "date": time.strftime("%Y-%m-%d"),
            "total_seconds": sum(p["train_seconds"] + p["eval_seconds"] for p in (adg, emo))}
    Path(args.md).write_text(markdown(adg, emo, meta), encoding="utf-8")
    summary = {"meta": meta, "advertisegen": {k: v for k, v in adg.items() if k != "answers"}, "emollm": emo}
    Path(args.md).with_suffix(".json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "quality.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print(f"wrote {args.md} ({time.time() - t0:.0f} s); runs and evals in {work}")
    base, tuned = adg["results"][0]["metrics"], adg["results"][1]["metrics"]
    ok = tuned["rouge-l"] > base["rouge-l"] and tuned["bleu-4"] > base["bleu-4"]
    ok &= emo["results"][1]["metrics"]["eval_loss"] < emo["results"][0]["metrics"]["eval_loss"]
    print("fine-tuned beats base on every measure" if ok else "WARNING: the fine-tuned model does not beat the base")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
