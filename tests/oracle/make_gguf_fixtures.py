#!/usr/bin/env python3
"""Generate the GGUF reader fixtures under tests/fixtures/gguf/.

Run from anywhere:   python3 tests/oracle/make_gguf_fixtures.py

Writes three tiny GGUF files with llama.cpp's own writer and quantizers (the PyPI `gguf`
package), so that their bytes are exactly what llama.cpp produces, plus the Hugging Face view
of every tensor as float32:

  tiny-llama.gguf    llama arch, 2 layers, hidden 64, 4 heads, 2 KV heads, ffn 96, untied
                     lm_head; tensors in F32, F16, BF16, Q8_0, Q4_0 and Q4_1; q/k stored in
                     llama.cpp's rotary row order; gpt2 tokenizer with pre "smollm", add_bos.
  tiny-mixtral.gguf  llama arch with llama.expert_count 4 (Mixtral style), 1 layer, hidden 32,
                     stacked ffn_{gate,up,down}_exps, tied embeddings, general.alignment 64,
                     pre "gpt2".
  tiny-qwen2.gguf    qwen2 arch, 1 layer, hidden 32, head_dim 32 (attention.key_length), q/k/v
                     biases, tied embeddings, pre "qwen2"; q/k are NOT permuted for qwen2.

  reference.safetensors     "<file stem>/<HF tensor name>" -> float32 in HF layout: the
                            dequantized stored tensor (gguf.quants.dequantize), with q/k rows
                            put back into Hugging Face order.
  expected-config.json      the transformers-style config each file must yield.
  tokenizer-reference.json  sample texts and the ids Hugging Face `tokenizers` gives for them
                            with the pre-tokenizer pipeline each llama.cpp `tokenizer.ggml.pre`
                            value stands for (see PRE_PIPELINES), on tiny-llama's vocabulary.

Everything is deterministic (fixed seeds). See tests/oracle/README-gguf.md.
"""

import importlib.metadata
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import gguf  # noqa: E402
import numpy as np  # noqa: E402
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf import TokenType  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "gguf"

# --------------------------------------------------------------------------------------------
# Tokenizer: a tiny byte-level BPE. It is trained WITHOUT digit splitting, so that it has
# merges such as "2 0" and "Ġ 1": a pipeline that forgets the Digits pre-tokenizer of "smollm"
# then tokenizes numbers differently, and the test can see it.
# --------------------------------------------------------------------------------------------

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # control tokens, ids 0..2
USER_DEFINED = ["<think>"]  # an added, non-special token (token_type 4)
CORPUS = [
    "In 2024 there were 123 cats, 4567 dogs and 89 birds in the 1990s census.",
    "The quick brown fox jumps over the lazy dog. 2024-01-01 12:30.",
    "Hello world! Hello there, hello again. It's a test; we're testing.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 20 24 99 100 2000 2020 2024 12345.",
    "Ünïcödé wörds and 日本語 text, plus emoji ☃ and tabs\tand  double  spaces.",
] * 20
VOCAB_SIZE = 300  # before the user-defined token

GPT2_SPLIT = None  # ByteLevel's own regex
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def pre_pipeline(pre):
    """The HF pre-tokenizer (and BPE ignore_merges flag) standing for a llama.cpp pre value.

    Mirrors llama.cpp src/llama-vocab.cpp: "smollm" (like starcoder, refact, command-r, ...)
    runs `\\p{N}` (each digit alone) before the GPT-2 regex, which in HF is what SmolLM2's own
    tokenizer.json says: Sequence[Digits(individual_digits=True), ByteLevel]. "llama-bpe"
    and "qwen2" are the Split regexes of Llama 3's and Qwen2's tokenizer.json files.
    """
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "gpt2":
        return byte_level, False
    if pre == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]), False
    split = {"llama-bpe": LLAMA3_SPLIT, "qwen2": QWEN2_SPLIT}[pre]
    seq = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return seq, pre == "llama-bpe"


PRE_PIPELINES = ["gpt2", "smollm", "llama-bpe", "qwen2"]

SAMPLES = [
    "Hello world",
    "In 2024, 123 + 4567 = 4690.",
    " leading space and trailing  ",
    "<|im_start|>user\nhi there<|im_end|>\n",
    "<think>ok</think> done",
    "Ünïcödé 日本語 ☃ 1990s",
    "line one\n\n  indented 42\tx",
    "It's we'RE they'll",
]


def train_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.add_tokens(USER_DEFINED)
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    tokens = [None] * (len(vocab) + len(USER_DEFINED))
    for t, i in vocab.items():
        tokens[i] = t
    for t in data["added_tokens"]:
        tokens[t["id"]] = t["content"]
    assert all(t is not None for t in tokens), "token ids must be dense"
    types = [
        TokenType.CONTROL if t in SPECIALS else TokenType.USER_DEFINED if t in USER_DEFINED else TokenType.NORMAL
        for t in tokens
    ]
    return tok, tokens, types, merges


def reference_tokenizer(base, pre, bos_id):
    """`base` with the pipeline of `pre` and, when `bos_id` is set, a BOS template."""
    tok = Tokenizer.from_str(base.to_str())
    tok.pre_tokenizer, ignore_merges = pre_pipeline(pre)
    if ignore_merges:
        data = json.loads(tok.to_str())
        data["model"]["ignore_merges"] = True
        tok = Tokenizer.from_str(json.dumps(data))
    if bos_id is not None:
        bos = SPECIALS[bos_id]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A:0", pair=f"{bos} $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
        )
    return tok


# --------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------


def to_gguf_rows(w, groups):
    """llama.cpp's q/k row order: within each head, rows (i, i + half) become (2i, 2i + 1)."""
    rows = w.shape[0]
    return w.reshape(groups, 2, rows // groups // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_hf_rows(w, groups):
    rows = w.shape[0]
    return w.reshape(groups, rows // groups // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class Fixture:
    def __init__(self, stem, arch, alignment=None):
        self.stem = stem
        self.writer = gguf.GGUFWriter(str(OUT / f"{stem}.gguf"), arch)
        if alignment is not None:
            self.writer.add_custom_alignment(alignment)
        self.reference = {}

    def tensor(self, gguf_name, hf_name, w, qtype, groups=None):
        """Store HF tensor `w` (after llama.cpp's row permutation when `groups` is set) as
        `qtype`; the reference is what dequantizing the stored bytes gives, in HF row order."""
        w = w.astype(np.float32)
        stored = to_gguf_rows(w, groups) if groups else w
        assert groups is None or np.array_equal(to_hf_rows(stored, groups), w)
        data = gguf.quants.quantize(stored, qtype)
        self.writer.add_tensor(gguf_name, data, raw_dtype=qtype)
        deq = gguf.quants.dequantize(data, qtype).astype(np.float32).reshape(w.shape)
        ref = to_hf_rows(deq, groups) if groups else deq
        if groups:
            # Row permutation commutes with row-wise block quantization.
            direct = gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype).reshape(w.shape)
            assert np.array_equal(ref, direct), gguf_name
        if qtype != Q.F32:
            assert not np.array_equal(ref, w), f"{gguf_name}: {qtype.name} must change the values"
        self.reference[f"{self.stem}/{hf_name}"] = np.ascontiguousarray(ref)

    def close(self):
        self.writer.write_header_to_file()
        self.writer.write_kv_data_to_file()
        self.writer.write_tensors_to_file()
        self.writer.close()


def add_tokenizer(w, tokens, types, merges, pre, add_bos, template=None):
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(2)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    if template is not None:
        w.add_chat_template(template)


def common_hparams(w, layers, hidden, heads, kv_heads, ffn, ctx, theta, eps, rope_dim):
    w.add_block_count(layers)
    w.add_context_length(ctx)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(eps)
    w.add_rope_dimension_count(rope_dim)


def norm(rng, n):
    return 1.0 + 0.1 * rng.standard_normal(n)


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_llama(tokens, types, merges):
    rng = np.random.default_rng(1)
    V, C, H, KV, F, L = len(tokens), 64, 4, 2, 96, 2
    D = C // H
    f = Fixture("tiny-llama", "llama")
    w = f.writer
    w.add_name("tiny-llama")
    common_hparams(w, L, C, H, KV, F, ctx=2048, theta=500000.0, eps=1e-5, rope_dim=D)
    w.add_vocab_size(V)
    add_tokenizer(w, tokens, types, merges, "smollm", add_bos=True, template=CHAT_TEMPLATE)
    g = lambda *s: 0.5 * rng.standard_normal(s)  # noqa: E731
    f.tensor("token_embd.weight", "model.embed_tokens.weight", g(V, C), Q.Q8_0)
    f.tensor("output_norm.weight", "model.norm.weight", norm(rng, C), Q.BF16)
    f.tensor("output.weight", "lm_head.weight", g(V, C), Q.Q4_1)
    types_by_layer = [
        dict(q=Q.Q4_0, k=Q.Q8_0, v=Q.Q4_1, o=Q.F16, gate=Q.Q4_0, up=Q.Q4_1, down=Q.Q8_0),
        dict(q=Q.F16, k=Q.Q4_1, v=Q.F32, o=Q.Q8_0, gate=Q.F16, up=Q.F32, down=Q.Q4_0),
    ]
    for i, t in enumerate(types_by_layer):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        f.tensor(b + "attn_norm.weight", p + "input_layernorm.weight", norm(rng, C), Q.F32)
        f.tensor(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", norm(rng, C), Q.F32)
        f.tensor(b + "attn_q.weight", p + "self_attn.q_proj.weight", g(H * D, C), t["q"], groups=H)
        f.tensor(b + "attn_k.weight", p + "self_attn.k_proj.weight", g(KV * D, C), t["k"], groups=KV)
        f.tensor(b + "attn_v.weight", p + "self_attn.v_proj.weight", g(KV * D, C), t["v"])
        f.tensor(b + "attn_output.weight", p + "self_attn.o_proj.weight", g(C, H * D), t["o"])
        f.tensor(b + "ffn_gate.weight", p + "mlp.gate_proj.weight", g(F, C), t["gate"])
        f.tensor(b + "ffn_up.weight", p + "mlp.up_proj.weight", g(F, C), t["up"])
        f.tensor(b + "ffn_down.weight", p + "mlp.down_proj.weight", g(C, F), t["down"])
    f.close()
    config = dict(
        model_type="llama", num_hidden_layers=L, hidden_size=C, intermediate_size=F,
        num_attention_heads=H, num_key_value_heads=KV, rope_theta=500000.0, rms_norm_eps=1e-5,
        max_position_embeddings=2048, vocab_size=V, bos_token_id=0, eos_token_id=2,
        tie_word_embeddings=False, hidden_act="silu",
    )
    return f.reference, config


def make_mixtral(tokens, types, merges):
    rng = np.random.default_rng(2)
    V, C, H, KV, F, E, L = len(tokens), 32, 2, 1, 32, 4, 1
    D = C // H
    f = Fixture("tiny-mixtral", "llama", alignment=64)
    w = f.writer
    common_hparams(w, L, C, H, KV, F, ctx=4096, theta=1e6, eps=1e-5, rope_dim=D)
    w.add_expert_count(E)
    w.add_expert_used_count(2)
    add_tokenizer(w, tokens, types, merges, "gpt2", add_bos=None)
    g = lambda *s: 0.5 * rng.standard_normal(s)  # noqa: E731
    f.tensor("token_embd.weight", "model.embed_tokens.weight", g(V, C), Q.Q4_0)
    f.tensor("output_norm.weight", "model.norm.weight", norm(rng, C), Q.F32)
    p, b = "model.layers.0.", "blk.0."
    f.tensor(b + "attn_norm.weight", p + "input_layernorm.weight", norm(rng, C), Q.F32)
    f.tensor(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", norm(rng, C), Q.F32)
    f.tensor(b + "attn_q.weight", p + "self_attn.q_proj.weight", g(H * D, C), Q.Q8_0, groups=H)
    f.tensor(b + "attn_k.weight", p + "self_attn.k_proj.weight", g(KV * D, C), Q.Q4_0, groups=KV)
    f.tensor(b + "attn_v.weight", p + "self_attn.v_proj.weight", g(KV * D, C), Q.F16)
    f.tensor(b + "attn_output.weight", p + "self_attn.o_proj.weight", g(C, H * D), Q.Q8_0)
    f.tensor(b + "ffn_gate_inp.weight", p + "block_sparse_moe.gate.weight", g(E, C), Q.F16)
    # Stacked experts [E, rows, cols]: expert e is rows e*rows..(e+1)*rows of the stack.
    for gname, hname, shape, qtype in [
        ("ffn_gate_exps", "w1", (F, C), Q.Q4_0),
        ("ffn_up_exps", "w3", (F, C), Q.Q8_0),
        ("ffn_down_exps", "w2", (C, F), Q.Q4_1),
    ]:
        stack = g(E, *shape).astype(np.float32)
        data = gguf.quants.quantize(stack, qtype)
        w.add_tensor(f"{b}{gname}.weight", data, raw_dtype=qtype)
        deq = gguf.quants.dequantize(data, qtype).reshape(stack.shape)
        for e in range(E):
            f.reference[f"{f.stem}/{p}block_sparse_moe.experts.{e}.{hname}.weight"] = np.ascontiguousarray(deq[e])
    f.close()
    config = dict(
        model_type="mixtral", num_hidden_layers=L, hidden_size=C, intermediate_size=F,
        num_attention_heads=H, num_key_value_heads=KV, rope_theta=1e6, rms_norm_eps=1e-5,
        max_position_embeddings=4096, vocab_size=V, num_local_experts=E, num_experts_per_tok=2,
        bos_token_id=0, eos_token_id=2, tie_word_embeddings=True, hidden_act="silu",
    )
    return f.reference, config


def make_qwen2(tokens, types, merges):
    rng = np.random.default_rng(3)
    V, C, H, KV, D, F, L = len(tokens), 32, 2, 1, 32, 64, 1
    f = Fixture("tiny-qwen2", "qwen2")
    w = f.writer
    common_hparams(w, L, C, H, KV, F, ctx=32768, theta=1e6, eps=1e-6, rope_dim=D)
    w.add_key_length(D)
    w.add_value_length(D)
    add_tokenizer(w, tokens, types, merges, "qwen2", add_bos=False)
    g = lambda *s: 0.5 * rng.standard_normal(s)  # noqa: E731
    f.tensor("token_embd.weight", "model.embed_tokens.weight", g(V, C), Q.F16)
    f.tensor("output_norm.weight", "model.norm.weight", norm(rng, C), Q.F32)
    p, b = "model.layers.0.", "blk.0."
    f.tensor(b + "attn_norm.weight", p + "input_layernorm.weight", norm(rng, C), Q.F32)
    f.tensor(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", norm(rng, C), Q.F32)
    # qwen2 uses NeoX RoPE in llama.cpp: its converter stores q/k unpermuted.
    for part, rows, qtype in [("q", H * D, Q.Q8_0), ("k", KV * D, Q.Q4_0), ("v", KV * D, Q.Q4_1)]:
        f.tensor(f"{b}attn_{part}.weight", f"{p}self_attn.{part}_proj.weight", g(rows, C), qtype)
        f.tensor(f"{b}attn_{part}.bias", f"{p}self_attn.{part}_proj.bias", g(rows), Q.F32)
    f.tensor(b + "attn_output.weight", p + "self_attn.o_proj.weight", g(C, H * D), Q.F16)
    f.tensor(b + "ffn_gate.weight", p + "mlp.gate_proj.weight", g(F, C), Q.Q8_0)
    f.tensor(b + "ffn_up.weight", p + "mlp.up_proj.weight", g(F, C), Q.Q4_0)
    f.tensor(b + "ffn_down.weight", p + "mlp.down_proj.weight", g(C, F), Q.Q4_1)
    f.close()
    config = dict(
        model_type="qwen2", num_hidden_layers=L, hidden_size=C, intermediate_size=F,
        num_attention_heads=H, num_key_value_heads=KV, head_dim=D, rope_theta=1e6,
        rms_norm_eps=1e-6, max_position_embeddings=32768, vocab_size=V, bos_token_id=0,
        eos_token_id=2, tie_word_embeddings=True, hidden_act="silu",
    )
    return f.reference, config


def tokenizer_reference(base):
    out = {"samples": SAMPLES, "by_pre": {}}
    for pre in PRE_PIPELINES:
        for add_bos in (False, True):
            tok = reference_tokenizer(base, pre, 0 if add_bos else None)
            ids = [tok.encode(s).ids for s in SAMPLES]
            for s, i in zip(SAMPLES, ids):
                assert tok.decode(i, skip_special_tokens=False).removeprefix(SPECIALS[0] if add_bos else "") == s
            out["by_pre"][f"{pre}{'+bos' if add_bos else ''}"] = ids
    by = out["by_pre"]
    assert by["smollm"][1] != by["gpt2"][1], "the digit sample must tell smollm from gpt2"
    assert by["llama-bpe"][1] != by["qwen2"][1], "the digit sample must tell llama-bpe from qwen2"
    return out


def transformers_observation(samples):
    """What transformers' own GGUF tokenizer loader makes of tiny-llama.gguf (reported only)."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(OUT), gguf_file="tiny-llama.gguf")
        return {
            "transformers": importlib.metadata.version("transformers"),
            "pre_tokenizer": json.loads(tok.backend_tokenizer.to_str())["pre_tokenizer"],
            "ids": [tok(s)["input_ids"] for s in samples],
        }
    except Exception as e:  # pragma: no cover - an observation, never a failure
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for p in OUT.glob("*"):
        if p.suffix in (".gguf", ".safetensors", ".json"):
            p.unlink()
    base, tokens, types, merges = train_tokenizer()
    reference, configs = {}, {}
    for make in (make_llama, make_mixtral, make_qwen2):
        ref, config = make(tokens, types, merges)
        reference.update(ref)
        configs[next(iter(ref)).split("/")[0]] = config
    save_file(dict(sorted(reference.items())), str(OUT / "reference.safetensors"))
    (OUT / "expected-config.json").write_text(json.dumps(configs, indent=1, sort_keys=True) + "\n")
    tok_ref = tokenizer_reference(base)
    tok_ref["transformers_gguf_observation"] = transformers_observation(SAMPLES)
    tok_ref["versions"] = {
        "python": sys.version.split()[0],
        "gguf": importlib.metadata.version("gguf"),
        "numpy": np.__version__,
        "tokenizers": importlib.metadata.version("tokenizers"),
        "safetensors": importlib.metadata.version("safetensors"),
    }
    (OUT / "tokenizer-reference.json").write_text(json.dumps(tok_ref, indent=1, ensure_ascii=False) + "\n")
    total = sum(p.stat().st_size for p in OUT.glob("*"))
    for p in sorted(OUT.glob("*")):
        print(f"{p.stat().st_size:>8}  {p.name}")
    print(f"{total:>8}  total")
    assert total < 1_000_000, "fixtures must stay well under 1 MB"


if __name__ == "__main__":
    main()
