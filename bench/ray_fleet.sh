#!/usr/bin/env bash
# A real vLLM fleet on a Ray cluster with GPUs, driven by one synthgen client (and, with
# SHARDS > 0, by sharded clients too). Not run in CI; no GPU machine was lent to write it.
#
#   pip install -e '.[ray,vllm]'                     # on every node, same Ray version
#   ray start --head --num-gpus 8                    # head (GPU or not)
#   ray start --address HEAD:6379                    # each other GPU node
#   REPLICAS=8 bench/ray_fleet.sh Qwen/Qwen2.5-1.5B-Instruct
#   REPLICAS=8 SHARDS=4 SHARD_DIR=/shared/bench bench/ray_fleet.sh Qwen/Qwen2.5-1.5B-Instruct
#
# Starts `synthgen teacher start --backend vllm --ray` (REPLICAS actors, GPUS each), answers
# the bundled seeds N times (top-5 logprobs) through `generate --teacher`, prints requests/s,
# tokens/s and the answers per replica from the store, kills one replica's server and checks
# that Ray brought it back (RESTART_CHECK=1), and always stops the fleet (trap on EXIT).
# Knobs (environment): RAY_ADDRESS (default: the cluster `ray start` made here), REPLICAS,
# GPUS, N, MAX_TOKENS, CONCURRENCY, MAX_MODEL_LEN, GPU_MEM, SHARDS, SHARD_DIR, DB,
# RESTART_CHECK, PYTHON (the venv's python, for the restart check; default python3).
#
# Dry run without GPUs (checks the script, not vLLM): `ray start --head --num-gpus 2
# --num-cpus 4`, and a `vllm` on every node's PATH that runs tests/fake_vllm.py.
set -euo pipefail

MODEL=${1:?usage: bench/ray_fleet.sh MODEL_ID_OR_PATH}
REPLICAS=${REPLICAS:-2}
GPUS=${GPUS:-1}
N=${N:-4}
MAX_TOKENS=${MAX_TOKENS:-256}
CONCURRENCY=${CONCURRENCY:-512}
MAX_MODEL_LEN=${MAX_MODEL_LEN:-4096}
GPU_MEM=${GPU_MEM:-0.90}
SHARDS=${SHARDS:-0}
DB=${DB:-bench_ray_fleet.duckdb}
RESTART_CHECK=${RESTART_CHECK:-1}
cd "$(dirname "$0")/.."

STATE=$(mktemp -d)
trap 'synthgen teacher stop --name bench --state-dir "$STATE" || true; rm -rf "$STATE"' EXIT
ray_flag=(--ray)
[ -n "${RAY_ADDRESS:-}" ] && ray_flag=(--ray "$RAY_ADDRESS")

t0=$(date +%s.%N)
synthgen teacher start --backend vllm --model "$MODEL" "${ray_flag[@]}" --replicas "$REPLICAS" \
    --gpus-per-replica "$GPUS" --tensor-parallel-size "$GPUS" --max-model-len "$MAX_MODEL_LEN" \
    --gpu-memory-utilization "$GPU_MEM" --name bench --state-dir "$STATE"
t1=$(date +%s.%N)
echo "fleet startup: $(python3 -c "print(round($t1 - $t0, 1))")s for $REPLICAS replica(s) of $MODEL"
synthgen teacher status --name bench --state-dir "$STATE"

sample=(--input data/seeds.jsonl --template demo --model "$MODEL" --n "$N" \
        --max-tokens "$MAX_TOKENS" --temperature 0.8 --top-p 0.95 --seed 0 --logprobs 5 \
        --teacher bench --teacher-state-dir "$STATE")
report() {
    synthgen sql --db "$1" "
      WITH r AS (SELECT *, epoch(ended_at - started_at) AS s FROM runs ORDER BY run_id DESC LIMIT 1)
      SELECT answered, failed, completion_tokens, round(s, 2) AS seconds,
             round(answered / s, 2) AS requests_per_s, round(completion_tokens / s, 1) AS tokens_per_s
      FROM r"
    synthgen sql --db "$1" "SELECT endpoint, count(*) AS answers, round(avg(latency_ms)) AS avg_ms
                            FROM corpus GROUP BY 1 ORDER BY 1"
}

rm -f "$DB"
echo "== one client, $REPLICAS replica(s), $CONCURRENCY in flight"
synthgen generate "${sample[@]}" --db "$DB" --concurrency "$CONCURRENCY"
report "$DB"

if [ "$SHARDS" -gt 0 ]; then
    SDB=${DB%.duckdb}.sharded.duckdb
    rm -f "$SDB"
    shard_dir=()
    [ -n "${SHARD_DIR:-}" ] && shard_dir=(--shard-dir "$SHARD_DIR")
    echo "== $SHARDS sharded clients, $CONCURRENCY in flight each"
    synthgen generate "${sample[@]}" --db "$SDB" --concurrency "$CONCURRENCY" \
        "${ray_flag[@]}" --shards "$SHARDS" "${shard_dir[@]}"
    report "$SDB"
fi

if [ "$RESTART_CHECK" = 1 ]; then
    # Kill replica 0's vLLM server (on its own node, through Ray) and wait for Ray's restart.
    echo "== restart check: killing replica 0's server"
    "${PYTHON:-python3}" - "$STATE" <<'PY'
import json, os, signal, sys, time
from synthgen.cluster.connect import connect
record = json.load(open(os.path.join(sys.argv[1], "bench.json")))
connect(record["ray_address"], must_exist=True)  # synthgen's own way in (token auth and all)
import ray
actor = ray.get_actor(record["actors"][0], namespace=record["ray_namespace"])
before = ray.get(actor.info.remote())
node = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == before["node"]][0]
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

def kill(pid):  # runs on the replica's node
    os.kill(pid, signal.SIGKILL)

ray.get(ray.remote(num_cpus=0)(kill).options(
    scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(before["pid"]))
t = time.monotonic()
while True:
    try:
        after = ray.get(actor.info.remote(), timeout=5)
        if after["restarted"] and after["pid"] != before["pid"]:
            break
    except Exception:
        pass
    time.sleep(1)
print(f"replica 0 restarted by Ray in {time.monotonic() - t:.1f}s at {after['base_url']} "
      f"(was {before['base_url']})")
PY
    synthgen teacher status --name bench --state-dir "$STATE"
fi
