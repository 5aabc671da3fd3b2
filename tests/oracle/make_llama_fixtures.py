#!/usr/bin/env python3
"""Reference fixtures for the Llama-family configs (the degenerate case of the MiniMax
architecture: softmax attention only, pre-norm residuals, dense SwiGLU MLP or MoE).

Run from anywhere:   python3 tests/oracle/make_llama_fixtures.py

Writes three tiny random models in the same format as make_fixtures.py (HF directory +
reference.json + logits.npy + greedy_logits.npy), reusing the tokenizer of
tests/fixtures/minimax-7to1 (run make_fixtures.py first):

  llama-tied/    LlamaForCausalLM, tied embeddings (like SmolLM2), GQA, rope_theta 1e5
  mixtral-moe/   MixtralForCausalLM, 8 experts top-2, per-expert block_sparse_moe names
  qwen2-bias/    Qwen2ForCausalLM, q/k/v biases, untied

Deterministic: fixed seeds, float32, one CPU thread, eager attention and experts.
"""

import json
import os
import shutil
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    LlamaConfig,
    LlamaForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

transformers.logging.set_verbosity_error()
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures"
VOCAB = 320
PROMPT_LEN = 40
N_GREEDY = 12
TOLERANCE = 1e-4
MIN_MARGIN = 1e-3

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    attn_implementation="eager",
)


def reinit_(model, seed):
    """Larger weights than HF's init so that logits and routing are far from uniform."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if p.ndim == 1:
            if name.endswith("bias"):
                p.data = torch.randn(p.shape, generator=g) * 0.1
            else:
                p.data = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        elif "embed_tokens" in name:
            p.data = 0.5 * torch.randn(p.shape, generator=g)
        else:
            p.data = 0.08 * torch.randn(p.shape, generator=g)


def forward_logits(model, ids):
    ids_t = torch.tensor([list(ids)], dtype=torch.long)
    pos = torch.arange(len(ids), dtype=torch.long)[None]
    with torch.no_grad():
        out = model(input_ids=ids_t, position_ids=pos, use_cache=False)
    return out.logits[0].float().numpy().copy()


def reference(model, seed):
    """A prompt whose greedy steps are all far from ties, its logits and greedy continuation."""
    for attempt in range(100):
        rng = np.random.default_rng(seed + attempt)
        prompt = [int(x) for x in rng.integers(3, VOCAB, size=PROMPT_LEN)]
        logits = forward_logits(model, prompt)
        seq, greedy, rows, margins = list(prompt), [], [], []
        for _ in range(N_GREEDY):
            last = forward_logits(model, seq)[-1]
            top2 = np.sort(last)[-2:]
            margins.append(float(top2[1] - top2[0]))
            nxt = int(np.argmax(last))
            greedy.append(nxt)
            rows.append(last)
            seq.append(nxt)
        if min(margins) >= MIN_MARGIN:
            return dict(prompt=prompt, logits=logits, greedy=greedy, greedy_logits=np.stack(rows),
                        prompt_seed=seed + attempt, min_greedy_margin=min(margins))
    raise RuntimeError("no well-conditioned prompt")


def write(name, model, seed, description):
    d = FIX / name
    if d.exists():
        shutil.rmtree(d)
    model.save_pretrained(d, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(FIX / "minimax-7to1" / f, d / f)
    ref = reference(model, seed)
    np.save(d / "logits.npy", ref["logits"].astype(np.float32))
    np.save(d / "greedy_logits.npy", ref["greedy_logits"].astype(np.float32))
    out = {
        "description": description,
        "prompt": ref["prompt"],
        "greedy": ref["greedy"],
        "logits_shape": list(ref["logits"].shape),
        "greedy_logits_note": "row i = last-position logits of the full forward over prompt + greedy[:i]",
        "position_ids": "explicit 0..n-1, one full forward per step, no cache",
        "tolerance_max_abs": TOLERANCE,
        "prompt_seed": ref["prompt_seed"],
        "min_greedy_margin": ref["min_greedy_margin"],
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "python": sys.version.split()[0]},
    }
    (d / "reference.json").write_text(json.dumps(out, indent=2) + "\n")
    # The saved directory must reproduce the reference.
    cls = type(model)
    back = cls.from_pretrained(d, attn_implementation="eager").eval()
    err = float(np.max(np.abs(forward_logits(back, ref["prompt"]) - ref["logits"])))
    assert err == 0.0, f"{name}: reload differs by {err}"
    names = sorted(json.loads((d / "model.safetensors").read_bytes()[8:8 + int.from_bytes(
        (d / "model.safetensors").read_bytes()[:8], "little")]).keys())
    print(f"{name}: {len(names)} tensors, e.g. {[n for n in names if 'layers.0.' in n]}")


def with_eager_experts(model):
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")
    elif hasattr(model.config, "_experts_implementation"):
        model.config._experts_implementation = "eager"
    return model


def main():
    torch.manual_seed(11)
    llama = LlamaForCausalLM(LlamaConfig(**COMMON, rope_theta=1e5, tie_word_embeddings=True)).eval()
    reinit_(llama, 12)
    llama.tie_weights()
    write("llama-tied", llama, 500, "3-layer random LlamaForCausalLM, tied embeddings, GQA 4/2, rope_theta 1e5")

    torch.manual_seed(21)
    mixtral = MixtralForCausalLM(MixtralConfig(**COMMON, num_local_experts=8, num_experts_per_tok=2,
                                               rope_theta=1e4, tie_word_embeddings=False)).eval()
    with_eager_experts(mixtral)
    reinit_(mixtral, 22)
    write("mixtral-moe", mixtral, 600, "3-layer random MixtralForCausalLM, 8 experts top-2")

    torch.manual_seed(31)
    qwen = Qwen2ForCausalLM(Qwen2Config(**COMMON, rope_theta=1e6, tie_word_embeddings=False,
                                        use_sliding_window=False)).eval()
    reinit_(qwen, 32)
    write("qwen2-bias", qwen, 700, "3-layer random Qwen2ForCausalLM with q/k/v biases")


if __name__ == "__main__":
    main()
