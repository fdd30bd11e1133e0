#!/usr/bin/env python3
"""The Python baseline of the embedding benchmark (issue 4): MiniLM in onnxruntime.

Run by `cargo bench --bench embed` with the model venv's python (onnxruntime, numpy,
tokenizers), once per ONNX file, on exactly the texts the Rust side embeds. Can also be
run alone:

    bench_python.py --texts texts.json --model-dir DIR --variant int8 --out result.json

What it times, per batch size (the same sizes as the Rust side):

- "whole": what a plain Python user writes: `tokenizers` with truncation at 256 and
  padding to the longest text of the batch (`encode_batch`), then one
  `InferenceSession.run` over the whole batch.
- "sorted": the same batch tokenised without padding, sorted by token length (stable)
  and cut into runs of `--sub-batch` texts, each padded to its own longest, as
  palisade-embeddings does. Only timed for batches larger than `--sub-batch` (for the
  others it is the same single run as "whole").

The session gets `intra_op_num_threads = --threads` and otherwise onnxruntime's
defaults, as a plain user would have it (`--no-spin` turns intra-op spinning off, as
the Rust embedder does, for comparison). `--cuda` asks for onnxruntime-gpu's
CUDAExecutionProvider and stops with an error when onnxruntime cannot register it.

Each configuration is warmed up on its first batches, then whole passes over the texts
(the first `--batch1-texts` for batch 1) are timed until `--min-secs` seconds or
`--min-passes` passes have gone by, whichever comes first (at least one pass). Each
configuration also records the CPU other processes used meanwhile (`others_cores`; the
box is shared). Tokenisation alone is timed separately: `encode_batch` over the texts
in batches of the largest size, padded to the longest.

`--out` gets a JSON object with every figure; `--vectors-out` gets the vectors of the
first timed pass of the largest batch in "sorted" mode (float32, little-endian, one row
of 384 per text in the order of the texts), so the Rust side can compare them with its
own. A readable summary goes to stderr.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import onnxruntime as ort
import tokenizers
from tokenizers import Tokenizer

OUTPUT = "sentence_embedding"
MAX_TOKENS = 256
DIMENSIONS = 384
FILES = {"fp32": "model.onnx", "int8": "model-int8.onnx"}


def log(message):
    print(f"[python] {message}", file=sys.stderr, flush=True)


def load_tokenizers(path):
    """(padded, unpadded): truncation at 256, padding to the longest of a batch or none.

    The file ships truncation at 128 and fixed padding to 128; both are overridden."""
    padded = Tokenizer.from_file(path)
    padded.enable_truncation(max_length=MAX_TOKENS)
    padded.enable_padding(pad_id=0, pad_token="[PAD]")  # no length: to the longest
    unpadded = Tokenizer.from_file(path)
    unpadded.enable_truncation(max_length=MAX_TOKENS)
    unpadded.no_padding()
    return padded, unpadded


def load_session(model_path, threads, spin, cuda):
    """An InferenceSession on the CPU, or on CUDA (failing unless CUDA really runs it)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if not cuda:
        return ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    session = ort.InferenceSession(
        model_path, options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    if session.get_providers()[0] != "CUDAExecutionProvider":
        sys.exit(
            f"--cuda: onnxruntime {ort.__version__} did not register CUDAExecutionProvider "
            f"(available: {ort.get_available_providers()})"
        )
    return session


def embed_whole(session, padded, texts):
    """A plain user's batch: tokenise padded to the longest, one run."""
    encodings = padded.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return session.run([OUTPUT], {"input_ids": ids, "attention_mask": mask})[0]


def embed_sorted(session, unpadded, texts, sub_batch):
    """palisade-embeddings' way: sorted by token length, runs of `sub_batch`, each padded
    to its own longest."""
    rows = [e.ids for e in unpadded.encode_batch(texts)]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # stable, as Rust's
    out = np.empty((len(rows), DIMENSIONS), dtype=np.float32)
    for start in range(0, len(order), sub_batch):
        run = order[start : start + sub_batch]
        width = max(1, max(len(rows[i]) for i in run))
        ids = np.zeros((len(run), width), dtype=np.int64)
        mask = np.zeros((len(run), width), dtype=np.int64)
        for r, i in enumerate(run):
            ids[r, : len(rows[i])] = rows[i]
            mask[r, : len(rows[i])] = 1
        vectors = session.run([OUTPUT], {"input_ids": ids, "attention_mask": mask})[0]
        out[run] = vectors
    return out


def chunks(items, size):
    return [items[i : i + size] for i in range(0, len(items), size)]


def machine_busy_s():
    """CPU time of the whole machine (/proc/stat: user, nice, system, irq, softirq,
    steal), in seconds."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = f.readline().split()[1:]
    return sum(float(fields[i]) for i in (0, 1, 2, 5, 6, 7)) / os.sysconf("SC_CLK_TCK")


class CpuShare:
    """CPU used by other processes (the machine's less this process's) over a span,
    in cores: the box is shared, and a figure measured while others used a core is not
    this code's speed."""

    def __init__(self):
        self.wall, self.busy = time.perf_counter(), machine_busy_s()
        t = os.times()
        self.own = t.user + t.system

    def others_cores(self):
        t = os.times()
        own = t.user + t.system - self.own
        others = machine_busy_s() - self.busy - own
        return max(0.0, others / (time.perf_counter() - self.wall))


def time_config(embed, texts, batch, args, keep=False):
    """Warm-up, then timed passes. Returns the figures (and the first pass's vectors
    when `keep`)."""
    batches = chunks(texts, batch)
    for b in batches[: max(1, 64 // batch)]:
        embed(b)
    rates, elapsed, passes, kept = [], 0.0, 0, None
    cpu = CpuShare()
    while True:
        started = time.perf_counter()
        outputs = [embed(b) for b in batches]
        took = time.perf_counter() - started
        if keep and kept is None:
            kept = np.concatenate(outputs).astype(np.float32)
        passes += 1
        elapsed += took
        rates.append(len(texts) / took)
        if elapsed >= args.min_secs or passes >= args.min_passes:
            break
    figures = {
        "batch": batch,
        "texts": len(texts),
        "passes": passes,
        "seconds": elapsed,
        "per_s": passes * len(texts) / elapsed,
        "pass_min_per_s": min(rates),
        "pass_max_per_s": max(rates),
        "others_cores": cpu.others_cores(),
    }
    return figures, kept


def time_tokenizer(padded, texts, batch, args):
    batches = chunks(texts, batch)
    for b in batches:
        padded.encode_batch(b)
    elapsed, passes = 0.0, 0
    while elapsed < 1.0 or passes < args.min_passes:
        started = time.perf_counter()
        for b in batches:
            padded.encode_batch(b)
        elapsed += time.perf_counter() - started
        passes += 1
    return {
        "batch": batch,
        "texts": len(texts),
        "passes": passes,
        "seconds": elapsed,
        "per_s": passes * len(texts) / elapsed,
        "us_per_text": elapsed / (passes * len(texts)) * 1e6,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", required=True, help="JSON array of strings")
    parser.add_argument("--model-dir", default=os.environ.get("PALISADE_MODEL_DIR"))
    parser.add_argument("--variant", choices=sorted(FILES), default="int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sub-batch", type=int, default=32)
    parser.add_argument("--batches", default="1,32,256")
    parser.add_argument("--batch1-texts", type=int, default=300)
    parser.add_argument("--min-secs", type=float, default=10.0)
    parser.add_argument("--min-passes", type=int, default=3)
    parser.add_argument("--no-spin", action="store_true", help="intra-op spinning off")
    parser.add_argument("--cuda", action="store_true", help="CUDAExecutionProvider (onnxruntime-gpu)")
    parser.add_argument("--out", help="write the figures here as JSON")
    parser.add_argument("--vectors-out", help="write the largest batch's vectors here")
    args = parser.parse_args()
    if not args.model_dir:
        parser.error("--model-dir or PALISADE_MODEL_DIR is needed")

    with open(args.texts, encoding="utf-8") as f:
        texts = json.load(f)
    padded, unpadded = load_tokenizers(os.path.join(args.model_dir, "tokenizer.json"))
    model_path = os.path.join(args.model_dir, FILES[args.variant])
    started = time.perf_counter()
    session = load_session(model_path, args.threads, spin=not args.no_spin, cuda=args.cuda)
    load_s = time.perf_counter() - started
    sizes = [int(b) for b in args.batches.split(",")]
    lengths = [len(e.ids) for e in unpadded.encode_batch(texts)]
    log(
        f"{args.variant}: {len(texts)} texts, {sum(lengths)} tokens, "
        f"threads {args.threads}, spinning {'off' if args.no_spin else 'on (default)'}"
    )

    result = {
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "variant": args.variant,
        "model": model_path,
        "threads": args.threads,
        "sub_batch": args.sub_batch,
        "spinning": not args.no_spin,
        "execution_provider": session.get_providers()[0],
        "session_load_s": load_s,
        "texts": len(texts),
        "total_tokens": sum(lengths),
        "tokenize": time_tokenizer(padded, texts, max(sizes), args),
        "whole": [],
        "sorted": [],
    }
    largest = max(sizes)
    vectors = None
    for batch in sizes:
        subset = texts[: args.batch1_texts] if batch == 1 else texts
        figures, _ = time_config(lambda b: embed_whole(session, padded, b), subset, batch, args)
        result["whole"].append(figures)
        log(
            f"{args.variant} batch {batch} whole: {figures['per_s']:.1f} emb/s "
            f"(others {figures['others_cores']:.2f} cores)"
        )
        if batch > args.sub_batch:
            figures, kept = time_config(
                lambda b: embed_sorted(session, unpadded, b, args.sub_batch),
                subset,
                batch,
                args,
                keep=batch == largest,
            )
            result["sorted"].append(figures)
            if kept is not None:
                vectors = kept
            log(
                f"{args.variant} batch {batch} sorted: {figures['per_s']:.1f} emb/s "
                f"(others {figures['others_cores']:.2f} cores)"
            )

    if args.vectors_out:
        if vectors is None:  # no batch above the sub-batch: embed the texts once
            vectors = embed_sorted(session, unpadded, texts, args.sub_batch)
        vectors.astype("<f4").tofile(args.vectors_out)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    else:
        json.dump(result, sys.stdout, indent=1)
        print()


if __name__ == "__main__":
    main()
