"""generate, chat, compare, merge and export from the command line, as real subprocesses over the trained run.
The commands start together (each spends seconds importing torch); each test waits for its own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import shared
from tests.processes import child_env, seektune_cmd

CHAT_INPUT = "Who are you?\n/adapter base\nWho are you?\n/adapter nope\n/system Answer in one word.\n/reset\n/exit\nnever read\n"


def _start(args, cwd, stdin=None):
    proc = subprocess.Popen(seektune_cmd(*args), cwd=cwd, env=child_env(one_thread=False), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, text=True)
    if stdin:  # a few lines fit the pipe; communicate() closes it later (closing it here upsets communicate)
        proc.stdin.write(stdin)
        proc.stdin.flush()
    return proc


def _finish(proc, timeout=600):
    try:
        out, err = proc.communicate(timeout=timeout)  # reads both pipes, so neither can fill up and block
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"{proc.args} timed out")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def commands(run: Path, tiny: Path):
    ident = shared("identity/identity.json")
    return {
        "generate": (["generate", run, "Who are you?", "--max-new-tokens", "40"], None),
        "generate_file": (["generate", run, "--file", ident, "--limit", "3", "--no-stream", "--output", "answers.jsonl",
                           "--max-new-tokens", "64", "--batch-size", "3"], None),
        "chat": (["chat", run, "--max-new-tokens", "24"], CHAT_INPUT),
        "compare": (["compare", run, "--file", ident, "--limit", "2", "--output", "cmp", "--max-new-tokens", "24"], None),
        "merge": (["merge", run, "--output", "merged", "--dtype", "bf16"], None),
        "export_lora": (["export", "gguf", run, "--adapter-only", "--output", "lora.gguf"], None),
        "export_ollama": (["export", "ollama", tiny, "--output", "ollama", "--type", "q8_0"], None),
    }


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, smol_dir):
    """A small random Llama with the embedded ChatML tokenizer: `export ollama` end to end in seconds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tok = AutoTokenizer.from_pretrained(smol_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("models") / "tiny-llama"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(str(d), safe_serialization=True)
    tok.save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def launched(trained_run, tiny_llama, tmp_path_factory):
    procs = {}
    for name, (args, stdin) in commands(trained_run.path, tiny_llama).items():
        d = tmp_path_factory.mktemp(name)
        procs[name] = (d, _start(args, d, stdin))
    yield procs
    for _, proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def result(launched, name):
    d, proc = launched[name]
    return d, _finish(proc)


def test_generate_streams_one_answer(launched):
    _, r = result(launched, "generate")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "<|im_end|>" not in r.stdout and "reached --max-new-tokens" not in r.stderr


def test_generate_file_of_dataset_prompts(launched):
    d, r = result(launched, "generate_file")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("### ") == 3
    rows = [json.loads(line) for line in (d / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3 and all(row["reference"] and row["answer"] for row in rows)
    assert all(row["stopped"] for row in rows)


def test_chat_commands(launched):
    _, r = result(launched, "chat")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.count("assistant: ") == 2  # one answer with the adapter, one from the base model
    assert "[now using the base model (no adapter)]" in out
    assert "no adapter named 'nope'" in out
    assert "[system prompt set; history cleared]" in out and "[history cleared]" in out
    a, b = [part.split("\n")[0] for part in out.split("assistant: ")[1:3]]
    assert a != b  # the adapter and the base model answer differently


def test_compare_writes_markdown_and_html(launched):
    d, r = result(launched, "compare")
    assert r.returncode == 0, r.stderr
    md = (d / "cmp" / "compare.md").read_text(encoding="utf-8")
    page = (d / "cmp" / "compare.html").read_text(encoding="utf-8")
    assert md.count("**base model:**") == 2 and md.count("**identity:**") == 2 and md.count("**reference:**") == 2
    assert "<th>base model</th><th>identity</th><th>reference</th>" in page and "<script" not in page
    rows = json.loads((d / "cmp" / "compare.json").read_text(encoding="utf-8"))["rows"]
    assert rows[0]["base model"]["answer"] != rows[0]["identity"]["answer"]
    assert "before / after" in r.stdout


def test_merge_bf16_from_cli(launched):
    d, r = result(launched, "merge")
    assert r.returncode == 0, r.stderr
    assert "max |logit diff| base+adapter vs merged" in r.stdout
    cfg = json.loads((d / "merged" / "config.json").read_text())
    assert cfg["dtype"] == "bfloat16"
    assert (d / "merged" / "tokenizer.json").is_file()


def test_export_adapter_only_and_ollama(launched):
    d, r = result(launched, "export_lora")
    assert r.returncode == 0, r.stderr
    assert (d / "lora.gguf").stat().st_size > 1000 and "--lora" in r.stdout
    d, r = result(launched, "export_ollama")
    assert r.returncode == 0, r.stderr
    modelfile = (d / "ollama" / "Modelfile").read_text(encoding="utf-8")
    assert modelfile.startswith("FROM ./model-q8_0.gguf") and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert (d / "ollama" / "model-q8_0.gguf").is_file() and "ollama create" in r.stdout
