#!/bin/sh
# The real end-to-end test (test/e2e/real.mjs) in a network namespace of its
# own with only loopback up: WebRTC in Chromium then has no interface but
# 127.0.0.1 to try, and nothing leaves 127.0.0.0/8. Also a mount namespace
# of its own, where the test bind-mounts a Chromium policy over
# /etc/chromium that the rest of the machine never sees. Needs root (or
# unprivileged user namespaces: then it runs under `unshare --map-root-user`).
#
#   test/e2e/run-real.sh BIN MODELS_DIR
#
# BIN: the tabagent binary; MODELS_DIR: holds gemma-3-270m-q4_k_m.gguf.
# Environment passed through: E2E_OUT (screenshots, logs), CHROMIUM,
# TABAGENT_LOG, E2E_KEEP=1 (keep the temporary profile and data).
# Exits non-zero if any step fails.
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 BIN MODELS_DIR" >&2
  exit 2
fi
if [ ! -x "$1" ]; then
  echo "run-real.sh: no tabagent binary at $1 (cargo build --release)" >&2
  exit 2
fi
if [ ! -d "$2" ]; then
  echo "run-real.sh: no models dir $2" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
models=$(cd "$2" && pwd)
node=$(command -v node)
if [ "$(id -u)" -eq 0 ]; then
  set -- unshare --net --mount
else
  set -- unshare --net --mount --map-root-user
fi
export TABAGENT_E2E_PRIVATE_MOUNT=1
exec "$@" sh -c 'ip link set lo up && exec "$0" "$1" "$2" "$3"' "$node" "$here/real.mjs" "$bin" "$models"
