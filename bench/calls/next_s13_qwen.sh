# Prepared in session 12 for the next GPU session (one GPU, at most ~9.5 min: use timeout_s 600); not run yet. Carry
# bench/.data and .whl. The 1.5B row beside Unsloth with the skip (train.lean_recompute), which no call has finished
# yet: s11_c's skip row hit its 70 s limit after 9 steps, and s12_a's printed no step in 120 s on a fresh machine
# (its first step compiles far longer; s14_a.sh and next_s14_codegen.sh look for why). Here each row gets 175 s.
# Synthetic full 2 048-token rows, batch 4, checkpointing on; seektune's default last, as the skip's first step is
# the long one.
source bench/calls/prelude.sh
export SEEKTUNE_BENCH_COMPILE=1 SEEKTUNE_BENCH_TAIL=25
timeout 570 python3 bench/train_speed.py run --models qwen1.5b --data synthetic \
  --tools seektune-skipdown,unsloth,seektune --ckpt on --steps 15 --warmup 3 --timeout 175 --weights-root /tmp/w0 \
  --out $OUT/qwen 2>&1 | grep "tok/s\|timed out\|exit\|^| qwen" | cut -c1-300
python3 -c "import json,sys; [print(r['tool'], r.get('step_seconds'), json.dumps(r.get('compile_first_step'))[:800]) for r in json.load(open(sys.argv[1]))['results']]" $OUT/qwen/speed.json
find $OUT -name speed.md -delete
