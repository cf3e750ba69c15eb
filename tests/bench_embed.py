#!/usr/bin/env python3
"""The reference embedding pipeline for `make bench` (tests/bench_embed.rs).

    python3 tests/bench_embed.py MODEL_DIR SENTENCES_FILE [--batch 32] [--rounds 3]

The usual Python way to embed with an ONNX sentence-transformer: `tokenizers`
pads each batch of 32 sentences (in input order) to its longest and truncates
at 256, `onnxruntime` runs the graph with its default threading, numpy does
mean pooling and L2 normalisation. Prints one JSON line on stdout:
`{"sentences_per_s": best of the rounds, "padding": share of padded tokens}`.
Needs `python3 -m pip install onnxruntime tokenizers numpy`.
"""

import argparse
import json
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("sentences")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    with open(args.sentences, encoding="utf-8") as f:
        sentences = [line.rstrip("\n") for line in f if line.strip()]
    tokenizer = Tokenizer.from_file(f"{args.model_dir}/tokenizer.json")
    tokenizer.enable_padding()  # pad to the longest of each batch
    tokenizer.enable_truncation(256)
    session = ort.InferenceSession(f"{args.model_dir}/model.onnx", providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def embed(batch):
        encodings = tokenizer.encode_batch(batch)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        hidden = session.run(None, feeds)[0]
        summed = (hidden * mask[..., None]).sum(axis=1)
        vectors = summed / np.clip(mask.sum(axis=1, keepdims=True), 1, None)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), mask

    embed(sentences[: args.batch])  # warm-up
    best = 0.0
    padded = total = 0
    for _ in range(args.rounds):
        start = time.perf_counter()
        for i in range(0, len(sentences), args.batch):
            _, mask = embed(sentences[i : i + args.batch])
            padded += int((mask == 0).sum())
            total += mask.size
        best = max(best, len(sentences) / (time.perf_counter() - start))
    print(json.dumps({"sentences_per_s": best, "padding": padded / total}))


if __name__ == "__main__":
    main()
