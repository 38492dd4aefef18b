#!/usr/bin/env bash
# Throughput of synthgen against real vLLM servers on a GPU machine.
#
#   pip install -e '.[vllm]'           # on a machine with NVIDIA GPU(s)
#   bench/vllm_gpu.sh Qwen/Qwen2.5-0.5B-Instruct
#   REPLICAS=2 N=4 bench/vllm_gpu.sh Qwen/Qwen2.5-1.5B-Instruct
#
# 1. Starts `synthgen teacher start --backend vllm` (REPLICAS servers, one GPU each),
#    answers every bundled seed prompt N times with top-5 logprobs, prints requests/s and
#    completion tokens/s from the store, and always stops the servers (trap on EXIT).
# 2. Then (COMPARE=1, the default) the comparison bench/vllm_client.py makes on a CPU, on
#    one GPU server: vLLM's own client, `vllm bench serve`, and synthgen, back to back in
#    ABBA order, the same prompts, max tokens (ignore_eos) and concurrency; it prints output
#    tok/s of each and the ratio (bench/RESULTS.md, "synthgen against vLLM's own client").
#    Knobs: CMP_PROMPTS (1024), CMP_TOKENS (256), CMP_CONCURRENCY (256), CMP_ROUNDS (2).
# Knobs (environment): REPLICAS, N, MAX_TOKENS, CONCURRENCY, MAX_MODEL_LEN, GPU_MEM, DB, COMPARE.
#
# Dry run on a CPU machine (checks the script, not vLLM): put a `vllm` on PATH that runs
# tests/fake_vllm.py (`exec python3 tests/fake_vllm.py "$@"`) and set SYNTHGEN_GPUS=2.
set -euo pipefail

MODEL=${1:?usage: bench/vllm_gpu.sh MODEL_ID_OR_PATH}
REPLICAS=${REPLICAS:-1}
N=${N:-1}
MAX_TOKENS=${MAX_TOKENS:-256}
CONCURRENCY=${CONCURRENCY:-256}
MAX_MODEL_LEN=${MAX_MODEL_LEN:-4096}
GPU_MEM=${GPU_MEM:-0.90}
DB=${DB:-bench_vllm.duckdb}
cd "$(dirname "$0")/.."

STATE=$(mktemp -d)
trap 'synthgen teacher stop --state-dir "$STATE" >/dev/null || true; rm -rf "$STATE"' EXIT

t0=$(date +%s.%N)
mapfile -t URLS < <(synthgen teacher start --backend vllm --model "$MODEL" \
    --replicas "$REPLICAS" --max-model-len "$MAX_MODEL_LEN" \
    --gpu-memory-utilization "$GPU_MEM" --state-dir "$STATE")
t1=$(date +%s.%N)
base_urls=()
for url in "${URLS[@]}"; do base_urls+=(--base-url "$url"); done

rm -f "$DB"
synthgen generate --input data/seeds.jsonl --template demo --db "$DB" --model "$MODEL" \
    "${base_urls[@]}" --concurrency "$CONCURRENCY" --n "$N" --max-tokens "$MAX_TOKENS" \
    --temperature 0.8 --top-p 0.95 --seed 0 --logprobs 5
startup=$(python3 -c "print(round($t1 - $t0, 2))")
echo "vLLM startup: ${startup}s for $REPLICAS replica(s) of $MODEL"
# Rates over the run's own span (plan + requests), not the CLI's import time.
synthgen sql --db "$DB" "
  WITH r AS (SELECT *, epoch(ended_at - started_at) AS s FROM runs ORDER BY run_id DESC LIMIT 1)
  SELECT answered, failed, completion_tokens, round(s, 2) AS seconds,
         round(answered / s, 2) AS requests_per_s,
         round(completion_tokens / s, 1) AS tokens_per_s,
         (SELECT count(DISTINCT endpoint) FROM corpus) AS endpoints_used
  FROM r"

if [ "${COMPARE:-1}" = 1 ]; then
    synthgen teacher stop --state-dir "$STATE" >/dev/null  # the GPU(s) for one compared server
    python bench/vllm_client.py --vllm "$(command -v vllm)" --model "$MODEL" \
        --prompts "${CMP_PROMPTS:-1024}" --max-tokens "${CMP_TOKENS:-256}" \
        --concurrency "${CMP_CONCURRENCY:-256}" --rounds "${CMP_ROUNDS:-2}" \
        --max-model-len "$MAX_MODEL_LEN" --serve-arg=--gpu-memory-utilization="$GPU_MEM"
fi
