# Ran in session 14 as the first GPU call (prepared in sessions 12-14 as next_s13_compile.sh; one GPU, timeout_s 600). Carry bench/.data and .whl.
# Where the skip's (train.lean_recompute) extra first-step time goes. s12_a.sh showed it in Inductor's
# Scheduler.codegen (52 s, against 3 s for Unsloth's compiled code), and not in building kernels in the training
# process while the compile pool starts (async_compile.precompile: 4.9 s). Session 13 (no GPU came) ruled out Inductor's
# Python code generation for CUDA on the CPU: 0.2-0.5 s per graph with the skip and without it
# (s13_fake_cuda_codegen_probe.py), so the time is in building kernels, the compile pool or a starved process. Sampled
# stacks of the first step name the functions (every thread: the recomputation compiles in the autograd engine's
# thread); the in-process row rules the pool in or out. Two decoder layers of the 7B shape, synthetic full rows,
# checkpointing on, each row with its own empty Inductor cache:
#   1. seektune-skipdown, its first step's stacks sampled every 20 ms (SEEKTUNE_BENCH_STACK_SAMPLES; a generous limit;
#      should it time out anyway, the stacks it dumps every 20 s are in $OUT/skip/speed.json, stderr_tail)
#   2. seektune-skipdown with no compile pool at all (TORCHINDUCTOR_COMPILE_THREADS=1: each kernel is built in the
#      process that needs it, ~0.1-0.3 s each for these graphs, as session 14 measured on the CPU). Fast here means the
#      pool is the cause (waiting on it, or its workers starving the process) and is itself a fix for the product.
#   3. seektune (no skip)
#   optional (ROWS="... skip-pool"): seektune-skipdown, waiting for the compile pool before the first step
#      (SEEKTUNE_BENCH_WAIT_POOL: the pool is started before the model loads)
# Session 14 (no GPU came either) also ruled out on the CPU: building the skip's kernels for sm_90 (Triton with its
# ptxas, s13_fake_cuda_codegen_probe.py BUILD=1: 0.5-1.7 s per graph, as without the skip), and compiling on a thread
# other than the main one, as the GPU's autograd engine does (s14_cpu_thread_probe.py).
source bench/calls/prelude.sh
export SEEKTUNE_BENCH_COMPILE=1 SEEKTUNE_BENCH_TAIL=20
row() {  # name tool limit [env...]
  local name=$1 tool=$2 limit=$3; shift 3
  env TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-$name "$@" timeout $((limit + 40)) python3 bench/train_speed.py run --models llm7b \
    --layers 2 --data synthetic --tools $tool --ckpt on --steps 2 --warmup 1 --timeout $limit --weights-root /tmp/w0 \
    --out $OUT/$name 2>&1 | grep "tok/s\|timed out\|exit" | cut -c1-300
  python3 -c "import json,sys; [print(r['tool'], r.get('step_seconds'), r.get('compile_pool_wait_seconds'), json.dumps(r.get('compile_first_step'))[:1200]) for r in json.load(open(sys.argv[1]))['results']]" $OUT/$name/speed.json
  mv $OUT/samples/$tool.txt $OUT/samples/$name.txt 2>/dev/null
}
rows=" ${ROWS:-skip skip-inproc plain} "  # ROWS="skip plain" when device time is short
[[ $rows == *" skip "* ]] && row skip seektune-skipdown 200 SEEKTUNE_BENCH_STACK_SAMPLES=$OUT/samples SEEKTUNE_BENCH_STACKS=20 SEEKTUNE_BENCH_TAIL=150
[[ $rows == *" skip-inproc "* ]] && row skip-inproc seektune-skipdown 140 TORCHINDUCTOR_COMPILE_THREADS=1
[[ $rows == *" skip-pool "* ]] && row skip-pool seektune-skipdown 140 SEEKTUNE_BENCH_WAIT_POOL=1
[[ $rows == *" plain "* ]] && row plain seektune 100
# each busy thread's 18 hottest functions (inclusive) and 8 at the top of its stack; the full files come back in $OUT
for f in $OUT/samples/*.txt; do echo "#### $f"; python3 - "$f" <<'PY'
import sys
for section in open(sys.argv[1]).read().split("== thread ")[1:]:
    head, _, rest = section.partition("\ninclusive:\n")
    inc, _, own = rest.partition("own (top of the stack):\n")
    own = [l for l in own.splitlines() if l.strip()]
    if own and own[0].split()[0] in ("100.0%", "99.9%", "99.8%") and "threading.py" in own[0]:
        continue  # an idle thread
    print("== thread", head)
    print("\n".join(l[:150] for l in inc.splitlines()[:18]))
    print("  own:"); print("\n".join(l[:150] for l in own[:8]))
PY
done
find $OUT -name speed.md -delete
