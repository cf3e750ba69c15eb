#!/usr/bin/env python3
"""The SSE events of /api/events, checked against openapi.yaml.

    python3 tests/schemathesis/events.py BIN MODELS_DIR OPENAPI_YAML

schemathesis leaves /api/events out (the stream never ends), so this test
reads one itself. It starts BIN in HTTP mode on a free loopback port, with a
`low_memory_bytes` above any machine's RAM (so LowMemory comes right after
Subscribed), subscribes, then loads and unloads `tiny` and pulls a copy of it
from a local HTTP server (MODELS_DIR must hold tiny.gguf). Every event's
`data` must be JSON that matches the /api/events 200 `text/event-stream`
schema of openapi.yaml (its `contentSchema`), and every event kind must
arrive. Needs the PyPI packages jsonschema and pyyaml. Exits non-zero on a
failure; every wait is bounded by a few seconds.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import yaml

TIMEOUT = 10.0
KINDS = {"ModelLoadProgress", "PullProgress", "ModelLoaded", "ModelUnloaded", "LowMemory"}


# The API key the server gets and every request sends.
KEY = "events-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def event_validator(openapi: dict) -> jsonschema.Draft202012Validator:
    """A validator of one event's `data`, from the document's own description."""
    media = openapi["paths"]["/api/events"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    data = media["schema"]["properties"]["data"]
    assert data.get("contentMediaType") == "application/json", data
    # `$ref`s inside point at #/components: resolve them against the document.
    schema = {**data["contentSchema"], "components": openapi["components"]}
    return jsonschema.Draft202012Validator(schema)


def start_server(binary: str, models: Path, data: Path) -> tuple[subprocess.Popen, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(data),
        "TABAGENT_DATA_DIR": str(data),
        "TABAGENT_LOG": "info",
        "TABAGENT_LOW_MEMORY_BYTES": str(1 << 60),
        "TABAGENT_API_KEY": KEY,
        # The pull's source is a plain-http server on loopback.
        "TABAGENT_ALLOW_LOOPBACK_PULLS": "true",
    }
    if "ORT_DYLIB_PATH" in os.environ:
        env["ORT_DYLIB_PATH"] = os.environ["ORT_DYLIB_PATH"]
    server = subprocess.Popen(
        [binary, "--mode", "http", "--bind", "127.0.0.1:0", "--models-dir", str(models)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found: queue.Queue[str] = queue.Queue()

    def read_log() -> None:
        assert server.stderr is not None
        for line in server.stderr:
            if "HTTP on http://" in line:
                found.put(line.split("HTTP on http://", 1)[1].strip())
            if os.environ.get("TABAGENT_TEST_LOG"):
                sys.stderr.write("server: " + line)

    threading.Thread(target=read_log, daemon=True).start()
    return server, found.get(timeout=TIMEOUT)


def subscribe(address: str, events: queue.Queue) -> http.client.HTTPConnection:
    """Opens the stream and feeds each event's `data` text into `events`."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    connection.request("POST", "/api/events", body=b"{}", headers={"Content-Type": "application/json", **AUTH})
    response = connection.getresponse()
    if response.status != 200:
        raise SystemExit(f"events.py: /api/events answered {response.status}: {response.read()[:300]!r}")

    def read() -> None:
        try:
            # http.client undoes the chunked framing; SSE comments (`:`) and
            # blank lines between events are skipped.
            for line in response:
                if line.startswith(b"data: "):
                    events.put(("data", line[6:].decode().rstrip("\n")))
        except (OSError, http.client.HTTPException) as e:
            events.put(("closed", str(e)))
        events.put(("closed", "end of stream"))

    threading.Thread(target=read, daemon=True).start()
    return connection


class TinyModel(http.server.BaseHTTPRequestHandler):
    """Serves one file's bytes at any path, so PullModel has a source on loopback."""

    payload = b""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *_args) -> None:
        pass


def post(address: str, path: str, body: dict) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://{address}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **AUTH},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main() -> int:
    binary, models, openapi_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    validator = event_validator(yaml.safe_load(openapi_path.read_text()))
    TinyModel.payload = (models / "tiny.gguf").read_bytes()
    source = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TinyModel)
    threading.Thread(target=source.serve_forever, daemon=True).start()

    failures: list[str] = []
    seen: dict[str, int] = {}
    events: queue.Queue = queue.Queue()
    with tempfile.TemporaryDirectory(prefix="tabagent-events.") as data:
        server, address = start_server(binary, models, Path(data))
        try:
            stream = subscribe(address, events)

            def take_until(kind: str) -> None:
                deadline = time.monotonic() + TIMEOUT
                while time.monotonic() < deadline:
                    try:
                        what, text = events.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    if what == "closed":
                        failures.append(f"the stream closed: {text}")
                        return
                    try:
                        value = json.loads(text)
                    except json.JSONDecodeError as e:
                        failures.append(f"data is not JSON ({e}): {text[:200]}")
                        continue
                    for error in validator.iter_errors(value):
                        failures.append(f"{text[:200]}\n  {error.message} at {list(error.absolute_path)}")
                    name = value.get("event") or value.get("response_type")
                    seen[name] = seen.get(name, 0) + 1
                    if name == kind:
                        return
                failures.append(f"no {kind} event within {TIMEOUT} s")

            take_until("Subscribed")
            take_until("LowMemory")
            status, body = post(address, "/api/models/tiny/load", {})
            if status != 200:
                failures.append(f"load answered {status}: {body[:300]!r}")
            take_until("ModelLoaded")
            status, body = post(address, "/api/models/tiny/unload", {})
            if status != 200:
                failures.append(f"unload answered {status}: {body[:300]!r}")
            take_until("ModelUnloaded")
            pull = {"url": f"http://127.0.0.1:{source.server_port}/copy.gguf", "model": "copy", "allow_unverified": True}
            status, body = post(address, "/api/pull", pull)
            if status != 200 or b"PullComplete" not in body:
                failures.append(f"pull answered {status}: {body[:300]!r}")
            take_until("PullProgress")
            stream.close()
            if server.poll() is not None:
                failures.append(f"the server exited with {server.returncode}")
        finally:
            server.kill()
            server.wait(timeout=TIMEOUT)
            source.shutdown()
    missing = KINDS - seen.keys()
    if missing:
        failures.append(f"never seen: {sorted(missing)}")
    for failure in failures:
        print(f"events.py: {failure}", file=sys.stderr)
    if not failures:
        print(f"events.py: {sum(seen.values())} events match openapi.yaml ({seen})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
