"""Shared helpers of the training recipe (data reading, split, model config)."""

import hashlib
import json
import lzma
import os

EOT = "<|endoftext|>"
EOT_ID = 0


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def _open_text(path):
    if path.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_stories(paths):
    """Yield story texts from JSONL files (optionally .xz), skipping exact duplicates."""
    seen = set()
    for path in paths:
        with _open_text(path) as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    text = json.loads(line)["text"].strip()
                except (ValueError, KeyError):
                    continue  # a line cut by a killed writer
                h = hashlib.md5(text.encode()).digest()
                if text and h not in seen:
                    seen.add(h)
                    yield text


def read_prose(path):
    """Yield documents of prose.txt.xz (separated by a line `<|endoftext|>`)."""
    with _open_text(path) as fh:
        doc = []
        for line in fh:
            if line.rstrip("\n") == EOT:
                if doc:
                    yield "".join(doc).strip()
                doc = []
            else:
                doc.append(line)
        if doc and "".join(doc).strip():
            yield "".join(doc).strip()


def is_val(text: str, val_permille: int) -> bool:
    """Deterministic held-out split by content hash (independent of order and of run)."""
    h = int.from_bytes(hashlib.sha1(text.encode()).digest()[:4], "little")
    return h % 1000 < val_permille


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
# MiniMax-01 architecture at demo scale. Real MiniMax-Text-01: 80 layers of 7 lightning + 1
# softmax, hidden 6144, 64 heads x 128, 8 KV heads, 32 experts top-2, post-norm with
# alpha = (2 * 80) ** 0.25 and beta = 1, rotary on 64 of the 128 head dims.
NUM_LAYERS = 8
ALPHA = (2 * NUM_LAYERS) ** 0.25  # = 2.0

MODEL_CONFIG = dict(
    vocab_size=4096,
    hidden_size=256,
    intermediate_size=160,  # per expert; gives 11.43 M parameters (22.9 MB in f16)
    num_hidden_layers=NUM_LAYERS,
    layer_types=["linear_attention"] * 7 + ["full_attention"],
    num_attention_heads=8,
    head_dim=32,
    num_key_value_heads=4,
    num_local_experts=8,
    num_experts_per_tok=2,
    hidden_act="silu",
    block_size=256,
    max_position_embeddings=2048,
    # Full-width RoPE on purpose: transformers' MiniMax ignores `partial_rotary_factor` and always
    # rotates the whole head_dim, so training with HF and running with any runtime agree only if
    # the config says "full rotary" (no partial_rotary_factor / rotary_dim keys at all).
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    rms_norm_eps=1e-5,
    initializer_range=0.02,
    tie_word_embeddings=True,
    bos_token_id=EOT_ID,
    eos_token_id=EOT_ID,
    # No pad_token_id in the model config: transformers would make it the Embedding padding_idx,
    # i.e. freeze <|endoftext|>'s input embedding at zero (and that zero row gives NaN gradients
    # through the lightning RMSNorm). Padding is set in generation_config.json / the tokenizer.
    pad_token_id=None,
    linear_attn_alpha_factor=ALPHA,
    linear_attn_beta_factor=1.0,
    full_attn_alpha_factor=ALPHA,
    full_attn_beta_factor=1.0,
    mlp_alpha_factor=ALPHA,
    mlp_beta_factor=1.0,
    router_aux_loss_coef=0.01,
    output_router_logits=False,  # switched on by train.py for the training forward
    router_jitter_noise=0.0,
    attention_dropout=0.0,
    use_cache=True,
)


def make_config(overrides=None):
    from transformers import MiniMaxConfig
    kw = dict(MODEL_CONFIG)
    kw.update(overrides or {})
    return MiniMaxConfig(**kw)


LIGHTNING_BUFFERS = ("slope_rate", "query_decay", "key_decay", "diagonal_decay")


def recompute_lightning_buffers(model):
    """Recompute the lightning decay buffers in float32 from the config (what any runtime does)."""
    import torch
    from transformers.models.minimax import modeling_minimax as mm
    for mod in model.modules():
        if isinstance(mod, mm.MiniMaxLightningAttention):
            dev = mod.slope_rate.device
            slope = mod.get_slope_rate()  # on CPU (transformers 5.17 has no device argument)
            q, k, d = mod.decay_factors(slope)
            with torch.no_grad():
                for name, val in zip(LIGHTNING_BUFFERS, (slope, q, k, d)):
                    getattr(mod, name).data = val.to(device=dev, dtype=torch.float32)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for b in iter(lambda: fh.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
