#!/usr/bin/env bash
# Federated distillation on Flower's deployment engine, on this machine: one SuperLink and N SuperNodes as
# separate processes on 127.0.0.1, TLS with a throw-away CA, SuperNode authentication (only registered keys
# connect), each SuperNode holding one partition of the data (its node config). Runs configs/tiny-fl.yaml
# through them and writes OUT_DIR/fl_report.json, the final student and its model card.
#
#   scripts/fl_local_deployment.sh OUT_DIR [--key value ...]      # flags of the YAML, e.g. --num_rounds 3
#
# Environment: FL_CONFIG (default configs/tiny-fl.yaml); FL_NUM_ROUNDS / FL_LOCAL_STEPS (2 / 1);
# FL_REPLY_TIMEOUT (seconds the server waits for a round's replies, 600); FL_DISCONNECT_NODE=N kills SuperNode N
# (SIGKILL) once it has received the training message of round FL_DISCONNECT_ROUND (default 1): a device lost
# mid-round;
# FL_CHECK_UNREGISTERED=1 (default) first starts a SuperNode whose key is not registered and checks that it is
# refused. Every process started here is stopped on exit, failure or Ctrl-C; their PIDs are in
# OUT_DIR/deployment/pids. Needs `pip install -e ".[fl]"` (Flower; `cryptography` comes with it).
set -euo pipefail

OUT="${1:?usage: $0 OUT_DIR [--key value ...]}"
shift
cd "$(dirname "$0")/.."
ROOT="$PWD"
CONFIG="${FL_CONFIG:-configs/tiny-fl.yaml}"
FLAGS=(--num_rounds "${FL_NUM_ROUNDS:-2}" --local_steps "${FL_LOCAL_STEPS:-1}" "$@")
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$OUT/deployment"          # certificates, keys, device data, logs, FLWR_HOME
rm -rf "$WORK"
mkdir -p "$WORK/logs"
export FLWR_HOME="$WORK/flwr-home" PYTHONUNBUFFERED=1
PIDS=()

descendants() {  # all descendants of a PID (Flower's SuperExec and app processes)
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

running() {  # the PIDs given that still run (not zombies)
  local pid state
  for pid in "$@"; do
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
    [ -n "$state" ] && [ "$state" != Z ] && echo "$pid"
  done
  return 0
}

cleanup() {  # stop every process started here and all their descendants (they may start children meanwhile)
  local status=$? pid seen=() alive=() i
  trap - EXIT INT TERM
  seen=("${PIDS[@]}")
  [ -f "$WORK/disconnected-pids" ] && seen+=($(cat "$WORK/disconnected-pids"))
  for i in $(seq 1 60); do  # up to ~12 s of SIGTERM, then SIGKILL
    for pid in "${seen[@]}"; do seen+=($(descendants "$pid")); done
    mapfile -t seen < <(printf '%s\n' "${seen[@]}" | sort -un)
    mapfile -t alive < <(running "${seen[@]}")
    [ "${#alive[@]}" = 0 ] && break
    for pid in "${alive[@]}"; do
      if [ "$i" -lt 60 ]; then kill -TERM "$pid" 2>/dev/null || true; else kill -KILL "$pid" 2>/dev/null || true; fi
    done
    sleep 0.2
  done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  printf '%s\n' "${seen[@]}" > "$WORK/pids"
  [ "$status" = 0 ] || echo "fl_local_deployment: failed (status $status); logs in $WORK/logs" >&2
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# 1. throw-away CA + SuperLink certificate, one key pair per device (+ one unregistered), device data files
N="$(python -m distill.federated.deployment prepare "$WORK" "$CONFIG" "${FLAGS[@]}" | tail -n 1)"
LINK_PORT="$(free_port)"
LINK="127.0.0.1:$LINK_PORT"
python - "$FLWR_HOME" "$LINK" "$WORK/ca.crt" <<'EOF'
import sys
from distill.federated.deployment import write_flower_connection
write_flower_connection(sys.argv[1], sys.argv[2], sys.argv[3], name="local-tls")
EOF

# 2. the SuperLink: TLS on every API, SuperNode authentication, no runtime dependency installation
flower-superlink --host 127.0.0.1 --port "$LINK_PORT" \
  --ssl-ca-certfile "$WORK/ca.crt" --ssl-certfile "$WORK/server.pem" --ssl-keyfile "$WORK/server.key" \
  --enable-supernode-auth --disable-runtime-dependency-installation \
  > "$WORK/logs/superlink.log" 2>&1 &
PIDS+=($!)
for i in $(seq 1 120); do  # up to 60 s
  flwr supernode ls local-tls > /dev/null 2>&1 && break
  kill -0 "${PIDS[0]}" 2>/dev/null || { echo "the SuperLink exited, see $WORK/logs/superlink.log" >&2; exit 1; }
  [ "$i" = 120 ] && { echo "the SuperLink did not answer within 60 s" >&2; exit 1; }
  sleep 0.5
done

# 3. register the devices' public keys (only these may connect)
for d in $(seq 0 $((N - 1))); do
  flwr supernode register "$WORK/node-$d.key.pub" local-tls > "$WORK/logs/register-$d.log" 2>&1
done

start_supernode() {  # KEY NODE_CONFIG LOG [extra flower-supernode flags]
  local key="$1" node_config="$2" log="$3"
  shift 3
  flower-supernode --superlink "$LINK" --root-certificates "$WORK/ca.crt" --auth-supernode-private-key "$key" \
    --host 127.0.0.1 --port "$(free_port)" --node-config "$node_config" "$@" > "$log" 2>&1 &
  PIDS+=($!)
}

# 4. a SuperNode with an unregistered key must be refused
if [ "${FL_CHECK_UNREGISTERED:-1}" = 1 ]; then
  start_supernode "$WORK/unregistered-0.key" "partition-id=0 data-file='$WORK/device-0.txt'" \
    "$WORK/logs/unregistered.log" --max-retries 2 --max-wait-time 20
  ROGUE="${PIDS[-1]}"
  for _ in $(seq 1 300); do kill -0 "$ROGUE" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$ROGUE" 2>/dev/null; then kill -KILL "$ROGUE" 2>/dev/null || true; fi
  if flwr supernode ls local-tls --format json 2>/dev/null | grep -q '"online"'; then
    echo "an unregistered SuperNode is online: authentication is not enforced" >&2; exit 1
  fi
  echo "unregistered SuperNode refused (log: $WORK/logs/unregistered.log)"
fi

# 5. the devices: one SuperNode each, holding its partition
for d in $(seq 0 $((N - 1))); do
  start_supernode "$WORK/node-$d.key" "partition-id=$d data-file='$WORK/device-$d.txt'" "$WORK/logs/supernode-$d.log"
done
NODE_PIDS=("${PIDS[@]: -N}")

if [ -n "${FL_DISCONNECT_NODE:-}" ]; then  # kill one device once it received the training message of a round
  (
    log="$WORK/logs/supernode-$FL_DISCONNECT_NODE.log"
    for _ in $(seq 1 6000); do
      if [ "$(grep -c "Receiving: train message" "$log" 2>/dev/null)" -ge "${FL_DISCONNECT_ROUND:-1}" ]; then
        descendants "${NODE_PIDS[$FL_DISCONNECT_NODE]}" > "$WORK/disconnected-pids"  # still stopped on exit
        kill -KILL "${NODE_PIDS[$FL_DISCONNECT_NODE]}" 2>/dev/null || true
        echo "device $FL_DISCONNECT_NODE disconnected (SIGKILL) in round ${FL_DISCONNECT_ROUND:-1}" \
          > "$WORK/logs/disconnect.log"
        exit 0
      fi
      sleep 0.1
    done
  ) &
  PIDS+=($!)
fi

# 6. the run: the same ServerApp / ClientApp as `distill federated`, submitted with `flwr run`
RUN_CONFIG="config='$ROOT/$CONFIG' output-dir='$OUT' num-rounds=${FL_NUM_ROUNDS:-2} local-steps=${FL_LOCAL_STEPS:-1}"
RUN_CONFIG+=" reply-timeout=${FL_REPLY_TIMEOUT:-600} query-timeout=${FL_QUERY_TIMEOUT:-300} overrides='$*'"
flwr run "$ROOT" local-tls --run-config "$RUN_CONFIG" --stream > "$WORK/logs/run.log" 2>&1 &
RUN_PID=$!
PIDS+=($RUN_PID)
wait "$RUN_PID" || { echo "flwr run failed, see $WORK/logs/run.log" >&2; exit 1; }
if [ ! -f "$OUT/fl_report.json" ]; then
  echo "no $OUT/fl_report.json: see $WORK/logs/run.log and superlink.log" >&2
  exit 1
fi
echo "Wrote $OUT/fl_report.json, the final student and its model card ($N SuperNodes, TLS, authenticated)"
