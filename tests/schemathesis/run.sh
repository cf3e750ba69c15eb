#!/bin/sh
# schemathesis against openapi.yaml and the real binary, then the SSE events
# of /api/events against openapi.yaml's Event schema (events.py).
#
#   tests/schemathesis/run.sh BIN MODELS_DIR [SCHEMATHESIS_OPTIONS...]
#
# BIN: the tabagent binary; MODELS_DIR: holds all-minilm-l6-v2/ (the test
# models, assets/fetch_models.py). The server gets a models dir of its own: a
# copy of MiniLM and the tiny GGUF (tests/fixtures/make_tiny_gguf.py), since
# schemathesis calls DeleteModel. Everything runs in a network namespace with
# only loopback up: schemathesis makes up pull URLs, and nothing may leave
# 127.0.0.0/8. Needs root (or unprivileged user namespaces).
#
# Options after MODELS_DIR go to `schemathesis run` (e.g. --include-path
# /api/chat -n 5 while fixing one route). Environment: PYTHON (python3),
# SCHEMATHESIS_KEEP=1 keeps the scratch dir (server log, schemathesis report).
# Exits non-zero on any failure.
set -eu
if [ $# -lt 2 ]; then
  echo "usage: $0 BIN MODELS_DIR [SCHEMATHESIS_OPTIONS...]" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
models=$(cd "$2" && pwd)
shift 2
python=${PYTHON:-python3}
if [ ! -x "$bin" ]; then
  echo "run.sh: no tabagent binary at $bin (cargo build --release)" >&2
  exit 2
fi
if [ ! -d "$models/all-minilm-l6-v2" ]; then
  echo "run.sh: no all-minilm-l6-v2 in $models (assets/fetch_models.py)" >&2
  exit 2
fi

if [ -z "${TABAGENT_IN_NETNS:-}" ]; then
  user=""
  if [ "$(id -u)" -ne 0 ]; then user=--map-root-user; fi
  TABAGENT_IN_NETNS=1 exec unshare --net $user \
    sh -c 'ip link set lo up && exec sh "$@"' sh "$0" "$bin" "$models" "$@"
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/tabagent-schemathesis.XXXXXX")
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
  if [ "${SCHEMATHESIS_KEEP:-}" = 1 ]; then
    echo "run.sh: kept $scratch" >&2
  else
    rm -rf "$scratch"
  fi
}
trap cleanup EXIT INT TERM

mkdir -p "$scratch/models" "$scratch/data" "$scratch/events"
cp -a "$models/all-minilm-l6-v2" "$scratch/models/"
"$python" "$root/tests/fixtures/make_tiny_gguf.py" "$scratch/models/tiny.gguf" >/dev/null
# events.py's own, as schemathesis may delete the other one's models.
cp "$scratch/models/tiny.gguf" "$scratch/events/"

# WebRTC mode: the HTTP server with signaling live (mode http would answer
# every /v1/webrtc route 501). In this namespace port 8080 is always free.
# The API key goes with every request schemathesis makes (its ignored_auth
# check leaves it out on purpose); schemathesis offers far more than the
# default 10 WebRTC offers a minute, so that limit is raised, as are the
# request rate and generations of its one address.
url=http://127.0.0.1:8080
key=schemathesis-key
env TABAGENT_DATA_DIR="$scratch/data" HOME="$scratch/data" TABAGENT_LOG=info \
  TABAGENT_API_KEY="$key" TABAGENT_WEBRTC_OFFERS_PER_MINUTE=1000000 \
  TABAGENT_RATE_LIMIT=0 TABAGENT_GENERATIONS_PER_CLIENT=1000 \
  "$bin" --mode webrtc --bind 127.0.0.1:8080 --models-dir "$scratch/models" \
  </dev/null >/dev/null 2>"$scratch/server.log" &
server=$!
i=0
until grep -q "HTTP on http://" "$scratch/server.log"; do
  i=$((i + 1))
  if [ $i -gt 200 ] || ! kill -0 "$server" 2>/dev/null; then
    cat "$scratch/server.log" >&2
    echo "run.sh: the server did not start" >&2
    exit 1
  fi
  sleep 0.1
done

# A small context bounds each generated chat (schemathesis asks for up to a
# million tokens) to ~100 tokens of the tiny model; later PATCHes may change it.
"$python" -c 'import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1] + "/api/params", data=b"{\"context_size\": 128}", method="PATCH", headers={"Content-Type": "application/json", "Authorization": "Bearer " + sys.argv[2]}), timeout=10)' "$url" "$key"

status=0
# schemathesis keeps its example database in the working dir.
cd "$scratch"
run_schemathesis() {
  status=0
  # A higher recursion limit keeps hypothesis' deep schemas clear of the
  # CPython 3.11.7 AST bug below, which fires when the limit is reached.
  "$python" -c 'import sys; sys.setrecursionlimit(10000); from schemathesis.cli import schemathesis; sys.argv[0] = "schemathesis"; sys.exit(schemathesis())' \
    --config-file "$here/schemathesis.toml" run "$root/openapi.yaml" --url "$url" \
    --header "Authorization: Bearer $key" \
    --checks all --mode all --report junit --report-dir "$scratch/report" "$@" \
    >"$scratch/schemathesis.out" 2>&1 || status=$?
  cat "$scratch/schemathesis.out"
}
run_schemathesis "$@"
# CPython 3.11.7's parser can trip over its own recursion counter while
# hypothesis reads a strategy's source ("SystemError: AST constructor
# recursion depth mismatch", fixed in later CPythons): a crash of the tool,
# not a finding. Only a run that failed on that alone, with no check failing,
# is run once more.
if [ $status -ne 0 ] && grep -q "AST constructor recursion depth mismatch" "$scratch/schemathesis.out" \
  && ! grep -q "= FAILURES =" "$scratch/schemathesis.out"; then
  echo "run.sh: schemathesis crashed on CPython's AST recursion bug; running it once more" >&2
  run_schemathesis "$@"
fi
if ! kill -0 "$server" 2>/dev/null; then
  tail -50 "$scratch/server.log" >&2
  echo "run.sh: the server died during the schemathesis run" >&2
  exit 1
fi
kill "$server"
wait "$server" 2>/dev/null || true
server=""
if [ $status -ne 0 ]; then
  echo "run.sh: schemathesis failed (server log: $scratch/server.log)" >&2
  SCHEMATHESIS_KEEP=1
fi

"$python" "$here/events.py" "$bin" "$scratch/events" "$root/openapi.yaml" || status=1
exit $status
