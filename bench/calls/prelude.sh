# Sourced at the start of every GPU call: offline, unbuffered, the carried wheels (.whl) on the path.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl .whl/opt/*.whl 2>/dev/null || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export SEEKTUNE_PRELUDE_DONE=1
