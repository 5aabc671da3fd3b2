#!/usr/bin/env python3
"""Generate the MiniMax-01 reference fixtures under tests/fixtures/.

Run from anywhere:   python3 tests/oracle/make_fixtures.py

Everything is deterministic (fixed seeds, float32, single CPU thread, eager
attention, eager experts) and nothing is downloaded (HF_HUB_OFFLINE=1).

Fixtures produced (each a directory with model files + reference.json +
logits.npy + greedy_logits.npy):

  minimax-7to1/          HF (transformers 5) format, 8 layers, 7 lightning + 1 softmax, f32
  minimax-sharded-bf16/  HF format, 4 layers, bf16 weights in >= 2 safetensors shards, MoE written
                         in the FUSED transformers-5 layout (mlp.gate, mlp.experts.gate_up_proj /
                         down_proj) instead of the per-expert names save_pretrained writes
  minimax-remote-code/   same weights/reference as minimax-7to1, original MiniMax-Text-01
                         remote-code naming/config (converted by this script)
  minimax-partial-rope/  HF format, 2 layers, rotary_dim 8 of head_dim 16; the reference is
                         HF + a documented monkeypatch (transformers ignores partial RoPE)

See tests/oracle/README.md.
"""

import contextlib
import copy
import json
import os
import shutil
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("USE_HUB_KERNELS", "0")

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import MiniMaxConfig, MiniMaxForCausalLM  # noqa: E402
from transformers.models.minimax import modeling_minimax as mm  # noqa: E402

transformers.logging.set_verbosity_error()
try:
    transformers.utils.logging.disable_progress_bar()
except Exception:  # pragma: no cover
    pass

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures"

VOCAB = 320
PROMPT_LEN = 40
N_GREEDY = 12
TOLERANCE = 1e-4
MIN_GREEDY_MARGIN = 1e-3  # top1 - top2 logit gap required at every greedy step
MIN_ROUTER_GAP = 1e-4     # gap between 2nd and 3rd router logit required everywhere

VERSIONS = {
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "numpy": np.__version__,
    "safetensors": safetensors.__version__,
    "tokenizers": tokenizers.__version__,
    "python": sys.version.split()[0],
}

BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    num_attention_heads=4,
    head_dim=16,
    num_key_value_heads=2,
    num_local_experts=8,
    num_experts_per_tok=2,
    intermediate_size=32,
    rms_norm_eps=1e-5,
    block_size=16,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    max_position_embeddings=512,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    hidden_act="silu",
    linear_attn_alpha_factor=1.7,
    linear_attn_beta_factor=0.8,
    full_attn_alpha_factor=1.3,
    full_attn_beta_factor=0.9,
    mlp_alpha_factor=1.5,
    mlp_beta_factor=0.7,
)

LAYERS_7TO1 = ["linear_attention"] * 7 + ["full_attention"]
LAYERS_BF16 = ["linear_attention", "full_attention", "linear_attention", "linear_attention"]
LAYERS_PROPE = ["linear_attention", "full_attention"]

# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------

# Text written for this script (no third-party source); used only to train a tiny BPE.
CORPUS = [
    "The lighthouse keeper woke before the gulls, as he had done every morning for thirty years. "
    "He climbed the spiral stairs, counted the one hundred and twelve steps, and wiped the salt "
    "from the great glass lens with a soft grey cloth. Outside, the sea was flat and silver, and "
    "the fishing boats were already moving slowly toward the horizon.",
    "In the valley below the old mill, the river ran quickly after the spring rain. Children "
    "from the village threw sticks from the stone bridge and raced to the other side to see "
    "whose stick would appear first. The miller, who was tired of their shouting, pretended to "
    "be angry, but he always kept a jar of honey cakes near the door.",
    "A small robot named Pim lived on a shelf in a quiet library. Every night, when the lamps "
    "were turned off, Pim walked along the rows of books and read the first line of each one. "
    "It never read the second line, because it believed that the first line of a book was a "
    "promise, and it wanted to keep every promise unbroken.",
    "The recipe was simple: two cups of flour, one cup of water, a pinch of salt, and a little "
    "patience. Mix the flour and the water, let the dough rest for an hour, then fold it seven "
    "times. Bake it in a hot oven until the crust sings when you tap it with your finger.",
    "On the train to the northern city, a woman in a green coat solved the same crossword "
    "puzzle three times. The conductor asked her why. She smiled and said that the answers "
    "never changed, but she did, and every time she found a different favourite word.",
    "Numbers can be friendly too: 1, 2, 3, 5, 8, 13, 21, 34. Each one is the sum of the two "
    "before it. Write them down, add them up, and watch the pattern grow like the spiral of a "
    "shell or the seeds in the face of a sunflower.",
]

TOKENIZER_SAMPLES = [
    "The lighthouse keeper counted the steps.",
    "Hello, world! 1 + 2 = 3.",
    "caf\u00e9 na\u00efve \u2014 \u4f60\u597d \U0001f642",
]


def train_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=1,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def build_tokenizer():
    tok = train_tokenizer()
    tok2 = train_tokenizer()
    assert tok.to_str() == tok2.to_str(), "BPE training is not deterministic"
    vocab = tok.get_vocab()
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    assert max(vocab.values()) < VOCAB and min(vocab.values()) >= 0
    assert sorted(vocab.values()) == list(range(VOCAB))
    assert vocab["<pad>"] == 0 and vocab["<s>"] == 1 and vocab["</s>"] == 2
    samples = []
    for text in TOKENIZER_SAMPLES:
        ids = tok.encode(text).ids
        assert tok.decode(ids) == text, (text, tok.decode(ids))
        assert all(0 <= i < VOCAB for i in ids)
        samples.append({"text": text, "ids": ids})
    return tok, samples


TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<pad>",
    "unk_token": None,
    "add_bos_token": False,
    "add_eos_token": False,
    "clean_up_tokenization_spaces": False,
    "model_max_length": 512,
}


def write_tokenizer(tok, d: Path):
    tok.save(str(d / "tokenizer.json"), pretty=True)
    with open(d / "tokenizer_config.json", "w") as f:
        json.dump(TOKENIZER_CONFIG, f, indent=2)
        f.write("\n")


# --------------------------------------------------------------------------------------
# Model construction
# --------------------------------------------------------------------------------------


def make_config(layer_types, **extra):
    kw = dict(BASE)
    kw.update(extra)
    cfg = MiniMaxConfig(num_hidden_layers=len(layer_types), layer_types=list(layer_types), **kw)
    cfg._attn_implementation = "eager"
    cfg._experts_implementation = "eager"
    return cfg


def reinit_(model, seed):
    """Re-initialise every parameter with a large std so logits/routing are non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):  # input/post_attention layernorm, lightning norm, final norm
                p.copy_(1.0 + 0.1 * noise)
            elif name == "model.embed_tokens.weight":
                p.copy_(0.5 * noise)
            else:
                p.copy_(0.08 * noise)


def build_model(layer_types, seed, **extra):
    torch.manual_seed(seed)
    cfg = make_config(layer_types, **extra)
    model = MiniMaxForCausalLM(cfg)
    model.set_attn_implementation("eager")
    model.set_experts_implementation("eager")
    model = model.float().eval()
    reinit_(model, seed + 1)
    assert model.config._attn_implementation == "eager"
    assert model.config._experts_implementation == "eager", model.config._experts_implementation
    return model


def load_hf(d: Path):
    model, info = MiniMaxForCausalLM.from_pretrained(
        str(d), dtype=torch.float32, attn_implementation="eager", experts_implementation="eager",
        local_files_only=True, output_loading_info=True,
    )
    # Every checkpoint tensor must land in the model and nothing may stay randomly initialised.
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs", "conversion_errors"):
        assert not info.get(key), (d.name, key, info.get(key))
    return model.float().eval()


# --------------------------------------------------------------------------------------
# Partial RoPE patch (original MiniMax behaviour; transformers 5 ignores partial RoPE)
# --------------------------------------------------------------------------------------

_PARTIAL_ROPE_CALLS = [0]


def _partial_apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """NeoX rotate-half on the first rd = cos.shape[-1] dims of q/k; the rest pass through."""
    _PARTIAL_ROPE_CALLS[0] += 1
    rd = cos.shape[-1]
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_rot, q_pass = q[..., :rd], q[..., rd:]
    k_rot, k_pass = k[..., :rd], k[..., rd:]
    q_emb = (q_rot * cos) + (mm.rotate_half(q_rot) * sin)
    k_emb = (k_rot * cos) + (mm.rotate_half(k_rot) * sin)
    return torch.cat((q_emb, q_pass), dim=-1), torch.cat((k_emb, k_pass), dim=-1)


def partial_inv_freq(theta, rotary_dim):
    return 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim))


@contextlib.contextmanager
def partial_rope(model, rotary_dim):
    """Monkeypatch HF MiniMax so the full-attention layers use partial RoPE."""
    theta = model.config.rope_parameters["rope_theta"]
    re = model.model.rotary_emb
    old_inv, old_orig = re.inv_freq, re.original_inv_freq
    new_inv = partial_inv_freq(theta, rotary_dim)
    re.inv_freq = new_inv.clone()
    re.original_inv_freq = new_inv.clone()
    old_fn = mm.apply_rotary_pos_emb
    mm.apply_rotary_pos_emb = _partial_apply_rotary_pos_emb
    try:
        yield
    finally:
        mm.apply_rotary_pos_emb = old_fn
        re.inv_freq, re.original_inv_freq = old_inv, old_orig


# --------------------------------------------------------------------------------------
# Forward passes / reference computation
# --------------------------------------------------------------------------------------


class RouterRecorder:
    def __init__(self, model):
        self.handles = []
        self.logits = {}
        for i, layer in enumerate(model.model.layers):
            self.handles.append(layer.mlp.gate.register_forward_hook(self._hook(i)))

    def _hook(self, i):
        def fn(_mod, _inp, out):
            self.logits[i] = out[0].detach().float().clone()
        return fn

    def clear(self):
        self.logits = {}

    def remove(self):
        for h in self.handles:
            h.remove()


@torch.no_grad()
def forward_logits(model, ids):
    ids_t = torch.tensor([list(ids)], dtype=torch.long)
    pos = torch.arange(len(ids), dtype=torch.long)[None]
    out = model(input_ids=ids_t, position_ids=pos, use_cache=False)
    return out.logits[0].float().numpy().copy()


def router_stats(router_logits, top_k, n_exp):
    """Return (min gap between k-th and (k+1)-th router logit, per-layer histogram)."""
    min_gap = float("inf")
    hist = {}
    for i, lg in sorted(router_logits.items()):
        s = torch.sort(lg, dim=-1, descending=True).values
        min_gap = min(min_gap, float((s[:, top_k - 1] - s[:, top_k]).min()))
        idx = torch.topk(lg, top_k, dim=-1).indices.reshape(-1)
        hist[i] = torch.bincount(idx, minlength=n_exp).tolist()
    return min_gap, hist


def compute_reference(model, prompt):
    rec = RouterRecorder(model)
    try:
        logits = forward_logits(model, prompt)
        min_gap, hist = router_stats(rec.logits, model.config.num_experts_per_tok, model.config.num_local_experts)
        seq = list(prompt)
        greedy, greedy_logits, margins = [], [], []
        for _ in range(N_GREEDY):
            rec.clear()
            lg = forward_logits(model, seq)
            g, _ = router_stats(rec.logits, model.config.num_experts_per_tok, model.config.num_local_experts)
            min_gap = min(min_gap, g)
            last = lg[-1]
            top2 = np.sort(last)[-2:]
            margins.append(float(top2[1] - top2[0]))
            nxt = int(np.argmax(last))
            greedy.append(nxt)
            greedy_logits.append(last)
            seq.append(nxt)
        # the step-0 greedy logits must equal the last prompt row of the one-shot pass
        assert np.max(np.abs(greedy_logits[0] - logits[-1])) < 1e-6
    finally:
        rec.remove()
    return dict(
        logits=logits.astype(np.float32),
        greedy=greedy,
        greedy_logits=np.stack(greedy_logits).astype(np.float32),
        min_greedy_margin=min(margins),
        min_router_gap=min_gap,
        router_hist=hist,
    )


def choose_prompt_and_reference(model, seed, ctx=contextlib.nullcontext):
    """Pseudo-random prompt; reseed until greedy steps and routing are far from ties."""
    for attempt in range(100):
        rng = np.random.default_rng(seed + attempt)
        prompt = [int(x) for x in rng.integers(3, VOCAB, size=PROMPT_LEN)]
        with ctx():
            ref = compute_reference(model, prompt)
        if ref["min_greedy_margin"] >= MIN_GREEDY_MARGIN and ref["min_router_gap"] >= MIN_ROUTER_GAP:
            ref["prompt"] = prompt
            ref["prompt_seed"] = seed + attempt
            return ref
        print(f"  prompt seed {seed + attempt}: margins too small "
              f"(greedy {ref['min_greedy_margin']:.2e}, router {ref['min_router_gap']:.2e}); retrying")
    raise RuntimeError("could not find a well-conditioned prompt")


def print_hist(name, hist):
    tot = np.sum(np.array(list(hist.values())), axis=0)
    print(f"  router histogram ({name}, prompt forward, top-2 picks per expert):")
    for i, h in hist.items():
        print(f"    layer {i}: {h}")
    print(f"    total  : {tot.tolist()}")
    used = [sum(1 for c in h if c > 0) for h in hist.values()]
    assert min(used) >= 4, f"routing too concentrated: experts used per layer {used}"


def write_reference(d: Path, ref, description, extra=None):
    np.save(d / "logits.npy", ref["logits"])
    np.save(d / "greedy_logits.npy", ref["greedy_logits"])
    out = {
        "description": description,
        "prompt": ref["prompt"],
        "greedy": ref["greedy"],
        "logits_file": "logits.npy",
        "logits_shape": list(ref["logits"].shape),
        "greedy_logits_file": "greedy_logits.npy",
        "greedy_logits_shape": list(ref["greedy_logits"].shape),
        "greedy_logits_note": "row i = last-position logits of the full forward over prompt + greedy[:i]; "
                              "argmax(row i) == greedy[i]",
        "position_ids": "explicit 0..n-1, one full forward per step, no KV/linear cache",
        "tolerance_max_abs": TOLERANCE,
        "prompt_seed": ref["prompt_seed"],
        "min_greedy_margin": ref["min_greedy_margin"],
        "min_router_gap": ref["min_router_gap"],
        "router_histogram_prompt": {str(k): v for k, v in ref["router_hist"].items()},
        "versions": VERSIONS,
    }
    if extra:
        out.update(extra)
    with open(d / "reference.json", "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


def fresh_dir(name):
    d = FIX / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


def safetensors_names(d: Path):
    out = {}
    for fn in sorted(d.glob("*.safetensors")):
        with safe_open(str(fn), "pt") as f:
            for k in f.keys():
                sl = f.get_slice(k)
                out[k] = (sl.get_shape(), sl.get_dtype(), fn.name)
    return out


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


# --------------------------------------------------------------------------------------
# Original (remote-code) format conversion
# --------------------------------------------------------------------------------------

GARBAGE_SLOPE = 123.0


def hf_to_remote_state_dict(model):
    cfg = model.config
    F_ = cfg.intermediate_size
    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    out = {}
    out["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"]
    out["model.norm.weight"] = sd["model.norm.weight"]
    out["lm_head.weight"] = sd["lm_head.weight"]
    for i, lt in enumerate(cfg.layer_types):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = sd[p + "input_layernorm.weight"]
        out[p + "post_attention_layernorm.weight"] = sd[p + "post_attention_layernorm.weight"]
        if lt == "linear_attention":
            for n in ("qkv_proj", "output_gate", "out_proj", "norm"):
                out[p + f"self_attn.{n}.weight"] = sd[p + f"self_attn.{n}.weight"]
            out[p + "self_attn.slope_rate"] = torch.full((cfg.num_attention_heads, 1, 1), GARBAGE_SLOPE)
        else:
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                out[p + f"self_attn.{n}.weight"] = sd[p + f"self_attn.{n}.weight"]
        out[p + "block_sparse_moe.gate.weight"] = sd[p + "mlp.gate.weight"]
        gate_up = sd[p + "mlp.experts.gate_up_proj"]  # [E, 2F, C]
        down = sd[p + "mlp.experts.down_proj"]        # [E, C, F]
        assert gate_up.shape == (cfg.num_local_experts, 2 * F_, cfg.hidden_size)
        assert down.shape == (cfg.num_local_experts, cfg.hidden_size, F_)
        for e in range(cfg.num_local_experts):
            q = p + f"block_sparse_moe.experts.{e}."
            out[q + "w1.weight"] = gate_up[e, :F_, :].clone().contiguous()  # gate  [F, C]
            out[q + "w3.weight"] = gate_up[e, F_:, :].clone().contiguous()  # up    [F, C]
            out[q + "w2.weight"] = down[e].clone().contiguous()             # down  [C, F]
    return {k: v.clone().contiguous() for k, v in out.items()}


def remote_config(model):
    c = model.config
    attn_type_list = [0 if t == "linear_attention" else 1 for t in c.layer_types]
    return {
        "architectures": ["MiniMaxText01ForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_minimax_text_01.MiniMaxText01Config",
            "AutoModelForCausalLM": "modeling_minimax_text_01.MiniMaxText01ForCausalLM",
        },
        "model_type": "minimax_text_01",
        "attn_type_list": attn_type_list,
        "attention_dropout": 0.0,
        "block_size": c.block_size,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "hidden_size": c.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": c.intermediate_size,
        "layernorm_full_attention_alpha": c.full_attn_alpha_factor,
        "layernorm_full_attention_beta": c.full_attn_beta_factor,
        "layernorm_linear_attention_alpha": c.linear_attn_alpha_factor,
        "layernorm_linear_attention_beta": c.linear_attn_beta_factor,
        "layernorm_mlp_alpha": c.mlp_alpha_factor,
        "layernorm_mlp_beta": c.mlp_beta_factor,
        "max_position_embeddings": c.max_position_embeddings,
        "num_attention_heads": c.num_attention_heads,
        "num_experts_per_tok": c.num_experts_per_tok,
        "num_hidden_layers": c.num_hidden_layers,
        "num_key_value_heads": c.num_key_value_heads,
        "num_local_experts": c.num_local_experts,
        "output_router_logits": False,
        "postnorm": True,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_parameters["rope_theta"],
        "rotary_dim": c.head_dim,
        "router_aux_loss_coef": 0.001,
        "router_jitter_noise": 0.0,
        "shared_intermediate_size": 0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": c.vocab_size,
    }


def remote_to_hf_model(d: Path):
    """Inverse mapping: read the remote-code fixture back into a fresh HF model."""
    rc = json.load(open(d / "config.json"))
    layer_types = ["linear_attention" if t == 0 else "full_attention" for t in rc["attn_type_list"]]
    assert rc["rotary_dim"] == rc["head_dim"]
    cfg = make_config(
        layer_types,
        rope_parameters={"rope_type": "default", "rope_theta": float(rc["rope_theta"])},
        linear_attn_alpha_factor=rc["layernorm_linear_attention_alpha"],
        linear_attn_beta_factor=rc["layernorm_linear_attention_beta"],
        full_attn_alpha_factor=rc["layernorm_full_attention_alpha"],
        full_attn_beta_factor=rc["layernorm_full_attention_beta"],
        mlp_alpha_factor=rc["layernorm_mlp_alpha"],
        mlp_beta_factor=rc["layernorm_mlp_beta"],
        block_size=rc["block_size"],
    )
    torch.manual_seed(999)
    model = MiniMaxForCausalLM(cfg)
    model.set_attn_implementation("eager")
    model.set_experts_implementation("eager")
    model = model.float().eval()
    tensors = {}
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    F_ = cfg.intermediate_size
    new_sd = {}
    used = set()
    for k, v in tensors.items():
        if k.endswith("self_attn.slope_rate"):
            assert torch.all(v == GARBAGE_SLOPE)
            used.add(k)
            continue
        if ".block_sparse_moe.experts." in k:
            continue
        nk = k.replace(".block_sparse_moe.gate.", ".mlp.gate.")
        new_sd[nk] = v
        used.add(k)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}.block_sparse_moe.experts."
        w1 = [tensors[p + f"{e}.w1.weight"] for e in range(cfg.num_local_experts)]
        w3 = [tensors[p + f"{e}.w3.weight"] for e in range(cfg.num_local_experts)]
        w2 = [tensors[p + f"{e}.w2.weight"] for e in range(cfg.num_local_experts)]
        for e in range(cfg.num_local_experts):
            used.update(p + f"{e}.{w}.weight" for w in ("w1", "w2", "w3"))
        new_sd[f"model.layers.{i}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([a, b], dim=0) for a, b in zip(w1, w3)])
        new_sd[f"model.layers.{i}.mlp.experts.down_proj"] = torch.stack(w2)
        assert new_sd[f"model.layers.{i}.mlp.experts.gate_up_proj"].shape == (cfg.num_local_experts, 2 * F_, cfg.hidden_size)
    assert used == set(tensors), set(tensors) - used
    missing, unexpected = model.load_state_dict(new_sd, strict=False)
    assert not unexpected, unexpected
    # Only the (recomputed, non-checkpoint) decay buffers may be missing.
    assert all(m.split(".")[-1] in ("query_decay", "key_decay", "diagonal_decay", "slope_rate") for m in missing), missing
    return model


# --------------------------------------------------------------------------------------
# Independent numpy (float64) re-implementation on the remote-code tensors
# --------------------------------------------------------------------------------------


def _rms(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_moe(h, gate_w, w1, w2, w3, top_k):
    """h [N, C]; w1/w3 [E, F, C]; w2 [E, C, F].  softmax -> top-k -> renormalise."""
    lg = h @ gate_w.T
    pr = np.exp(lg - lg.max(-1, keepdims=True))
    pr /= pr.sum(-1, keepdims=True)
    idx = np.argsort(-pr, axis=-1, kind="stable")[:, :top_k]
    out = np.zeros_like(h)
    for n in range(h.shape[0]):
        w = pr[n, idx[n]]
        w = w / w.sum()
        for j, e in enumerate(idx[n]):
            y = (_silu(h[n] @ w1[e].T) * (h[n] @ w3[e].T)) @ w2[e].T
            out[n] += w[j] * y
    return out


def np_forward(tensors, rc, ids, rotary_dim=None):
    """Reference forward of the ORIGINAL MiniMax-Text-01 semantics (postnorm=True)."""
    T = {k: v.astype(np.float64) for k, v in tensors.items()}
    H, D, KV = rc["num_attention_heads"], rc["head_dim"], rc["num_key_value_heads"]
    NL, E, K = rc["num_hidden_layers"], rc["num_local_experts"], rc["num_experts_per_tok"]
    eps, theta = rc["rms_norm_eps"], float(rc["rope_theta"])
    rd = rotary_dim if rotary_dim is not None else rc.get("rotary_dim", D)
    L = len(ids)
    pos = np.arange(L, dtype=np.float64)
    x = T["model.embed_tokens.weight"][np.array(ids)]
    for i, at in enumerate(rc["attn_type_list"]):
        p = f"model.layers.{i}."
        h = _rms(x, T[p + "input_layernorm.weight"], eps)
        resid = h  # postnorm: the residual branch is the *normalised* hidden state
        if at == 0:
            qkv = _silu(h @ T[p + "self_attn.qkv_proj.weight"].T).reshape(L, H, 3 * D)
            q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
            base = 1.0 / (2.0 ** (8.0 / H))
            slope = base ** np.arange(1, H + 1) * (1 - i / (NL - 1 + 1e-5) + 1e-5)
            dt = pos[:, None] - pos[None, :]
            o = np.zeros((L, H, D))
            for hh in range(H):
                dec = np.where(dt >= 0, np.exp(-slope[hh] * np.maximum(dt, 0)), 0.0)
                o[:, hh] = ((q[:, hh] @ k[:, hh].T) * dec) @ v[:, hh]
            o = _rms(o.reshape(L, H * D), T[p + "self_attn.norm.weight"], 1e-6)  # HF: default eps 1e-6
            o = _sigmoid(h @ T[p + "self_attn.output_gate.weight"].T) * o
            a = o @ T[p + "self_attn.out_proj.weight"].T
            alpha, beta = rc["layernorm_linear_attention_alpha"], rc["layernorm_linear_attention_beta"]
        else:
            q = (h @ T[p + "self_attn.q_proj.weight"].T).reshape(L, H, D)
            k = (h @ T[p + "self_attn.k_proj.weight"].T).reshape(L, KV, D)
            v = (h @ T[p + "self_attn.v_proj.weight"].T).reshape(L, KV, D)
            inv = 1.0 / theta ** (np.arange(0, rd, 2, dtype=np.float64) / rd)
            ang = pos[:, None] * inv[None]
            cos = np.concatenate([np.cos(ang), np.cos(ang)], -1)[:, None, :]
            sin = np.concatenate([np.sin(ang), np.sin(ang)], -1)[:, None, :]

            def rope(t):
                r, ps = t[..., :rd], t[..., rd:]
                rh = np.concatenate([-r[..., rd // 2:], r[..., :rd // 2]], -1)
                return np.concatenate([r * cos + rh * sin, ps], -1)

            q, k = rope(q), rope(k)
            o = np.zeros((L, H, D))
            mask = np.tril(np.ones((L, L), dtype=bool))
            for hh in range(H):
                kh = hh // (H // KV)
                s = (q[:, hh] @ k[:, kh].T) / np.sqrt(D)
                s = np.where(mask, s, -np.inf)
                s = np.exp(s - s.max(-1, keepdims=True))
                s /= s.sum(-1, keepdims=True)
                o[:, hh] = s @ v[:, kh]
            a = o.reshape(L, H * D) @ T[p + "self_attn.o_proj.weight"].T
            alpha, beta = rc["layernorm_full_attention_alpha"], rc["layernorm_full_attention_beta"]
        x = resid * alpha + a * beta
        h = _rms(x, T[p + "post_attention_layernorm.weight"], eps)
        resid = h
        q_ = p + "block_sparse_moe."
        w1 = np.stack([T[q_ + f"experts.{e}.w1.weight"] for e in range(E)])
        w2 = np.stack([T[q_ + f"experts.{e}.w2.weight"] for e in range(E)])
        w3 = np.stack([T[q_ + f"experts.{e}.w3.weight"] for e in range(E)])
        m = np_moe(h, T[q_ + "gate.weight"], w1, w2, w3, K)
        x = resid * rc["layernorm_mlp_alpha"] + m * rc["layernorm_mlp_beta"]
    x = _rms(x, T["model.norm.weight"], eps)
    return x @ T["lm_head.weight"].T


def remote_tensors_np(model, rotary_dim=None):
    return {k: v.numpy() for k, v in hf_to_remote_state_dict(model).items()}


def check_moe_numpy(model, layer_idx, seed=1234):
    cfg = model.config
    rs = hf_to_remote_state_dict(model)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 37, cfg.hidden_size, generator=g)
    with torch.no_grad():
        y_hf = model.model.layers[layer_idx].mlp(x)[0].numpy()
    p = f"model.layers.{layer_idx}.block_sparse_moe."
    E = cfg.num_local_experts
    w1 = np.stack([rs[p + f"experts.{e}.w1.weight"].numpy() for e in range(E)]).astype(np.float64)
    w2 = np.stack([rs[p + f"experts.{e}.w2.weight"].numpy() for e in range(E)]).astype(np.float64)
    w3 = np.stack([rs[p + f"experts.{e}.w3.weight"].numpy() for e in range(E)]).astype(np.float64)
    y_np = np_moe(x[0].numpy().astype(np.float64), rs[p + "gate.weight"].numpy().astype(np.float64),
                  w1, w2, w3, cfg.num_experts_per_tok)
    d = max_abs(y_np, y_hf)
    # Swapping w1 and w3 must make a big difference (proves the split is tested).
    y_sw = np_moe(x[0].numpy().astype(np.float64), rs[p + "gate.weight"].numpy().astype(np.float64),
                  w3, w2, w1, cfg.num_experts_per_tok)
    d_sw = max_abs(y_sw, y_hf)
    print(f"  numpy MoE (remote-code w1/w2/w3) vs HF layer {layer_idx}: max|diff| = {d:.3e} "
          f"(w1<->w3 swapped: {d_sw:.3e}, |y| max {np.abs(y_hf).max():.3f})")
    assert d < 1e-5 and d_sw > 1e-2
    return d


# --------------------------------------------------------------------------------------
# HF cache experiment (chunked prefill), report only
# --------------------------------------------------------------------------------------


@torch.no_grad()
def chunked_prefill_experiment(model, prompt, ref_logits, greedy, greedy_logits):
    """Feed the prompt through HF's own MiniMaxCache in various ways and compare with the
    one-shot, cache-free reference.  Only reported, never fails."""
    res = {}

    def step(cache, ids, start, explicit):
        kw = dict(input_ids=torch.tensor([list(ids)]), cache=cache, use_cache=True)
        if explicit:
            kw["position_ids"] = torch.arange(start, start + len(ids))[None]
        out = model(**kw)
        return out.cache, out.logits[0].numpy()

    def decode_diffs(cache, explicit):
        diffs, n = [], len(prompt)
        for i in range(1, N_GREEDY):
            cache, lg = step(cache, [greedy[i - 1]], n, explicit)
            diffs.append(max_abs(lg[-1], greedy_logits[i]))
            n += 1
        return max(diffs)

    chunks = [(0, 16), (16, 23), (23, 40)]
    for explicit in (True, False):
        tag = "explicit_position_ids" if explicit else "implicit_position_ids"
        r = {}
        # (a) multi-token chunked prefill
        try:
            cache, outs = mm.MiniMaxCache(), []
            for s, e in chunks:
                cache, lg = step(cache, prompt[s:e], s, explicit)
                outs.append(max_abs(lg, ref_logits[s:e]))
            r["chunked_prefill_16_7_17"] = {"chunk_max_abs_diff": outs}
        except Exception as ex:
            r["chunked_prefill_16_7_17"] = {"error": f"{type(ex).__name__}: {ex}"}
        # (b) one-shot prefill through the cache, then single-token decode
        try:
            cache, lg = step(mm.MiniMaxCache(), prompt, 0, explicit)
            r["oneshot_prefill_max_abs_diff"] = max_abs(lg, ref_logits)
            r["cache_get_seq_length_after_prefill"] = int(cache.get_seq_length())
            r["then_single_token_decode_max_abs_diff"] = decode_diffs(cache, explicit)
        except Exception as ex:
            r["oneshot_prefill_then_decode"] = {"error": f"{type(ex).__name__}: {ex}"}
        # (c) token-by-token prefill (every step uses the recurrent decode path)
        try:
            cache, rows = mm.MiniMaxCache(), []
            for t in range(len(prompt)):
                cache, lg = step(cache, [prompt[t]], t, explicit)
                rows.append(lg[-1])
            r["token_by_token_prefill_max_abs_diff"] = max_abs(np.stack(rows), ref_logits)
        except Exception as ex:
            r["token_by_token_prefill"] = {"error": f"{type(ex).__name__}: {ex}"}
        res[tag] = r
    try:
        g = model.generate(torch.tensor([prompt]), max_new_tokens=N_GREEDY, do_sample=False)
        res["hf_generate_greedy_equals_reference"] = g[0, len(prompt):].tolist() == list(greedy)
    except Exception as ex:
        res["hf_generate"] = {"error": f"{type(ex).__name__}: {ex}"}
    return res


# --------------------------------------------------------------------------------------
# Fused expert layout (transformers 5 internal names) for the sharded bf16 fixture
# --------------------------------------------------------------------------------------


def read_sharded(d: Path):
    """All tensors of a sharded checkpoint, checked against its model.safetensors.index.json."""
    index = json.load(open(d / "model.safetensors.index.json"))
    tensors, where = {}, {}
    for fn in sorted(d.glob("*.safetensors")):
        with safe_open(str(fn), "pt") as f:
            for k in f.keys():
                assert k not in tensors, k
                tensors[k] = f.get_tensor(k)
                where[k] = fn.name
    assert where == index["weight_map"], "index weight_map does not match the shards"
    return tensors, index


def fuse_expert_layout_(d: Path, model, max_shard_bytes=200_000):
    """Rewrite the sharded checkpoint that save_pretrained wrote in d so the MoE uses the fused
    transformers 5 layout (the names of model.state_dict()), per layer i:

      block_sparse_moe.gate.weight                 -> mlp.gate.weight              [E, C]
      block_sparse_moe.experts.{e}.w1/w3.weight    -> mlp.experts.gate_up_proj     [E, 2F, C]
                                                      rows [0, F) = w1 (gate), rows [F, 2F) = w3 (up)
      block_sparse_moe.experts.{e}.w2.weight       -> mlp.experts.down_proj        [E, C, F]

    Every other tensor (including the bf16 lightning decay buffers HF saved) is kept as written.
    The bytes are unchanged: the fused tensors are stacks of the saved bf16 tensors, and they must
    equal the model's own fused parameters bit for bit. The result is re-sharded deterministically
    (sorted names, greedy packing) with a fresh model.safetensors.index.json."""
    cfg = model.config
    E, F_, C = cfg.num_local_experts, cfg.intermediate_size, cfg.hidden_size
    old, old_index = read_sharded(d)
    msd = model.state_dict()
    new, used = {}, set()
    for k, v in old.items():
        if ".block_sparse_moe.experts." in k:
            continue
        nk = k.replace(".block_sparse_moe.gate.weight", ".mlp.gate.weight")
        assert ".block_sparse_moe." not in nk, k
        new[nk] = v
        used.add(k)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}.block_sparse_moe.experts."
        w1 = [old[p + f"{e}.w1.weight"] for e in range(E)]
        w3 = [old[p + f"{e}.w3.weight"] for e in range(E)]
        w2 = [old[p + f"{e}.w2.weight"] for e in range(E)]
        used.update(p + f"{e}.{w}.weight" for e in range(E) for w in ("w1", "w2", "w3"))
        gu = torch.stack([torch.cat([a, b], dim=0) for a, b in zip(w1, w3)]).contiguous()
        dn = torch.stack(w2).contiguous()
        assert gu.shape == (E, 2 * F_, C) and dn.shape == (E, C, F_), (gu.shape, dn.shape)
        new[f"model.layers.{i}.mlp.experts.gate_up_proj"] = gu
        new[f"model.layers.{i}.mlp.experts.down_proj"] = dn
    assert used == set(old), set(old) - used
    # The file names are exactly the model's internal state_dict names, with identical bf16 bytes.
    assert set(new) == set(msd), (set(new) ^ set(msd))
    for k, v in new.items():
        assert v.dtype == torch.bfloat16 and msd[k].dtype == torch.bfloat16, k
        assert torch.equal(v, msd[k]), k
    total = sum(v.numel() * v.element_size() for v in new.values())
    assert total == old_index["metadata"]["total_size"], (total, old_index["metadata"])
    # Greedy re-sharding in sorted-name order.
    shards, cur, cur_bytes = [], [], 0
    for k in sorted(new):
        nb = new[k].numel() * new[k].element_size()
        if cur and cur_bytes + nb > max_shard_bytes:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(k)
        cur_bytes += nb
    shards.append(cur)
    assert len(shards) >= 2, len(shards)
    for fn in d.glob("*.safetensors"):
        fn.unlink()
    weight_map = {}
    for j, keys in enumerate(shards):
        fn = f"model-{j + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: new[k] for k in keys}, str(d / fn), metadata={"format": "pt"})
        weight_map.update({k: fn for k in keys})
    index = {"metadata": dict(old_index["metadata"]), "weight_map": dict(sorted(weight_map.items()))}
    with open(d / "model.safetensors.index.json", "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    back, _ = read_sharded(d)
    assert set(back) == set(new) and all(torch.equal(back[k], new[k]) for k in new)
    return sorted(weight_map)


def load_fused_manually(d: Path):
    """Independent of HF's loader: read the fused shards and load_state_dict(strict=True) into a
    fresh HF model (the file names are the model's own names, so no renaming is needed)."""
    cfg = MiniMaxConfig.from_pretrained(str(d), local_files_only=True)
    cfg._attn_implementation = "eager"
    cfg._experts_implementation = "eager"
    torch.manual_seed(999)
    model = MiniMaxForCausalLM(cfg)
    model.set_attn_implementation("eager")
    model.set_experts_implementation("eager")
    tensors, _ = read_sharded(d)
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return model.float().eval()


# --------------------------------------------------------------------------------------
# Fixture builders
# --------------------------------------------------------------------------------------


def fixture_7to1(tok, tok_samples):
    print("== minimax-7to1")
    model = build_model(LAYERS_7TO1, seed=7001)
    ref = choose_prompt_and_reference(model, seed=100)
    print_hist("minimax-7to1", ref["router_hist"])
    d = fresh_dir("minimax-7to1")
    model.save_pretrained(str(d), safe_serialization=True)
    write_tokenizer(tok, d)

    # numpy MoE check for one lightning and one softmax layer
    check_moe_numpy(model, 0)
    check_moe_numpy(model, 7)

    # independent float64 numpy forward on the remote-code tensors
    rc = remote_config(model)
    np_logits = np_forward(remote_tensors_np(model), rc, ref["prompt"])
    np_diff = max_abs(np_logits, ref["logits"])
    print(f"  numpy float64 re-implementation vs HF logits: max|diff| = {np_diff:.3e}")
    assert np_diff < TOLERANCE

    chunk = chunked_prefill_experiment(model, ref["prompt"], ref["logits"], ref["greedy"], ref["greedy_logits"])
    print("  HF MiniMaxCache experiments:", json.dumps(chunk, indent=2).replace("\n", "\n  "))

    write_reference(
        d, ref,
        "8-layer random MiniMax-01 (layers 0-6 lightning/linear, layer 7 softmax/full), HF transformers 5 "
        "format, float32. Logits from HF MiniMaxForCausalLM, eager attention, explicit position_ids.",
        extra={
            "weights_dtype": "float32",
            "layer_types": LAYERS_7TO1,
            "numpy_float64_max_abs_diff": np_diff,
            "hf_chunked_prefill_observation": chunk,
            "tokenizer_samples": tok_samples,
        },
    )
    return model, ref, chunk


def fixture_remote(model, ref, tok):
    print("== minimax-remote-code")
    d = fresh_dir("minimax-remote-code")
    sd = hf_to_remote_state_dict(model)
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    with open(d / "config.json", "w") as f:
        json.dump(remote_config(model), f, indent=2)
        f.write("\n")
    shutil.copy(FIX / "minimax-7to1" / "tokenizer.json", d / "tokenizer.json")
    shutil.copy(FIX / "minimax-7to1" / "tokenizer_config.json", d / "tokenizer_config.json")
    write_reference(
        d, ref,
        "Same weights and reference as minimax-7to1, written in the ORIGINAL MiniMax-Text-01 remote-code "
        "format (attn_type_list, layernorm_*_alpha/beta, postnorm, rotary_dim, block_sparse_moe.experts.{e}.w1/w2/w3, "
        "fused lightning qkv_proj). self_attn.slope_rate tensors hold garbage (123.0) on purpose: the runtime must "
        "recompute the decay slopes and ignore them.",
        extra={"weights_dtype": "float32", "attn_type_list": remote_config(model)["attn_type_list"],
               "garbage_slope_rate_value": GARBAGE_SLOPE},
    )


def fixture_bf16(tok):
    print("== minimax-sharded-bf16")
    model = build_model(LAYERS_BF16, seed=4242)
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.bfloat16().float()
    ref = choose_prompt_and_reference(model, seed=200)
    print_hist("minimax-sharded-bf16", ref["router_hist"])
    check_moe_numpy(model, 1)
    rc = remote_config(model)
    np_logits = np_forward(remote_tensors_np(model), rc, ref["prompt"])
    np_diff = max_abs(np_logits, ref["logits"])
    print(f"  numpy float64 re-implementation vs HF logits: max|diff| = {np_diff:.3e}")
    assert np_diff < TOLERANCE
    d = fresh_dir("minimax-sharded-bf16")
    m16 = copy.deepcopy(model).to(torch.bfloat16)
    m16.save_pretrained(str(d), safe_serialization=True, max_shard_size="200KB")
    fuse_expert_layout_(d, m16, max_shard_bytes=200_000)
    write_tokenizer(tok, d)
    shards = sorted(p.name for p in d.glob("*.safetensors"))
    assert len(shards) >= 2 and (d / "model.safetensors.index.json").exists(), shards
    write_reference(
        d, ref,
        "4-layer random MiniMax-01 [linear, full, linear, linear], weights rounded to bfloat16 and saved as bf16 "
        f"safetensors in {len(shards)} shards (model.safetensors.index.json). MoE tensors use the FUSED transformers 5 "
        "layout: model.layers.{i}.mlp.gate.weight [E, C], model.layers.{i}.mlp.experts.gate_up_proj [E, 2F, C] "
        "(rows 0..F = w1/gate, rows F..2F = w3/up) and model.layers.{i}.mlp.experts.down_proj [E, C, F] (w2); no "
        "block_sparse_moe.* names. Reference = float32 forward of the "
        "bf16-rounded weights (upcast bf16 -> f32, compute in f32). The saved lightning decay buffers are bf16-rounded "
        "too; the reference used exact f32 decays, so the runtime must recompute them.",
        extra={"weights_dtype": "bfloat16", "compute_dtype": "float32", "layer_types": LAYERS_BF16,
               "expert_layout": "fused", "shards": shards, "numpy_float64_max_abs_diff": np_diff},
    )
    return model, ref


def fixture_partial_rope(tok):
    print("== minimax-partial-rope")
    rotary_dim = 8
    head_dim = BASE["head_dim"]
    rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": rotary_dim / head_dim}
    model = build_model(LAYERS_PROPE, seed=8080, rope_parameters=rope)
    ctx = lambda: partial_rope(model, rotary_dim)  # noqa: E731
    before = _PARTIAL_ROPE_CALLS[0]
    ref = choose_prompt_and_reference(model, seed=300, ctx=ctx)
    assert _PARTIAL_ROPE_CALLS[0] > before, "partial RoPE patch was not exercised"
    print_hist("minimax-partial-rope", ref["router_hist"])
    # Without the patch (full rotary, what unpatched transformers computes) the logits must differ.
    unpatched = forward_logits(model, ref["prompt"])
    d_unpatched = max_abs(unpatched, ref["logits"])
    print(f"  unpatched HF (full rotary) vs partial-RoPE reference: max|diff| = {d_unpatched:.3e}")
    assert d_unpatched > 1e-2
    rc = remote_config(model)
    np_logits = np_forward(remote_tensors_np(model), rc, ref["prompt"], rotary_dim=rotary_dim)
    np_diff = max_abs(np_logits, ref["logits"])
    print(f"  numpy float64 partial-RoPE re-implementation vs patched HF: max|diff| = {np_diff:.3e}")
    assert np_diff < TOLERANCE
    d = fresh_dir("minimax-partial-rope")
    model.save_pretrained(str(d), safe_serialization=True)
    write_tokenizer(tok, d)
    cfg = json.load(open(d / "config.json"))
    cfg["partial_rotary_factor"] = rotary_dim / head_dim
    assert cfg["rope_parameters"].get("partial_rotary_factor") == rotary_dim / head_dim, cfg["rope_parameters"]
    with open(d / "config.json", "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    write_reference(
        d, ref,
        "2-layer random MiniMax-01 [linear, full] with PARTIAL RoPE: rotary_dim 8 of head_dim 16 "
        "(partial_rotary_factor 0.5, in rope_parameters and top-level config.json). transformers 5 ignores partial "
        "RoPE, so the reference is HF + a documented monkeypatch: inv_freq = 1/theta^(arange(0,8,2)/8) and NeoX "
        "rotate-half applied to dims [0,8) of q and k only, dims [8,16) passed through unchanged (original MiniMax).",
        extra={"weights_dtype": "float32", "layer_types": LAYERS_PROPE, "rotary_dim": rotary_dim,
               "partial_rotary_factor": rotary_dim / head_dim,
               "unpatched_hf_max_abs_diff": d_unpatched, "numpy_float64_max_abs_diff": np_diff},
    )
    return model, ref, rotary_dim


# --------------------------------------------------------------------------------------
# Verification by reloading what was written
# --------------------------------------------------------------------------------------


def recompute_decay_buffers_(model):
    for layer in model.model.layers:
        a = layer.self_attn
        if isinstance(a, mm.MiniMaxLightningAttention):
            s = a.get_slope_rate()
            qd, kd, dd = a.decay_factors(s)
            a.slope_rate.copy_(s)
            a.query_decay.copy_(qd)
            a.key_decay.copy_(kd)
            a.diagonal_decay.copy_(dd)


def verify(rotary_dim_prope):
    print("== verification (reload from disk)")
    results = {}
    for name in ("minimax-7to1", "minimax-sharded-bf16", "minimax-partial-rope"):
        d = FIX / name
        ref = json.load(open(d / "reference.json"))
        logits = np.load(d / "logits.npy")
        gl = np.load(d / "greedy_logits.npy")
        m = load_hf(d)
        ctx = partial_rope(m, rotary_dim_prope) if name == "minimax-partial-rope" else contextlib.nullcontext()
        with ctx:
            raw = max_abs(forward_logits(m, ref["prompt"]), logits)
            with torch.no_grad():
                recompute_decay_buffers_(m)
            diff = max_abs(forward_logits(m, ref["prompt"]), logits)
            seq = ref["prompt"] + ref["greedy"][:-1]
            full = forward_logits(m, seq)
            gdiff = max_abs(full[len(ref["prompt"]) - 1:], gl)
            assert [int(x) for x in np.argmax(gl, -1)] == ref["greedy"]
        print(f"  {name}: from_pretrained as-is {raw:.3e}; with recomputed f32 decay buffers {diff:.3e}; "
              f"greedy_logits (one pass over prompt+greedy) {gdiff:.3e}")
        assert diff <= 1e-6 and gdiff <= 1e-5, (name, diff, gdiff)
        results[name] = (raw, diff)
    d = FIX / "minimax-remote-code"
    ref = json.load(open(d / "reference.json"))
    m = remote_to_hf_model(d)
    diff = max_abs(forward_logits(m, ref["prompt"]), np.load(d / "logits.npy"))
    print(f"  minimax-remote-code: inverse-mapped into HF model: max|diff| = {diff:.3e}")
    assert diff <= 1e-6
    assert np.array_equal(np.load(d / "logits.npy"), np.load(FIX / "minimax-7to1" / "logits.npy"))
    # Fused-layout fixture, loaded without HF's loader (strict load_state_dict of the file names).
    d_bf16 = FIX / "minimax-sharded-bf16"
    ref_bf16 = json.load(open(d_bf16 / "reference.json"))
    m = load_fused_manually(d_bf16)
    with torch.no_grad():
        recompute_decay_buffers_(m)
    diff_fused = max_abs(forward_logits(m, ref_bf16["prompt"]), np.load(d_bf16 / "logits.npy"))
    print(f"  minimax-sharded-bf16: fused tensors loaded with strict load_state_dict, recomputed decays: "
          f"max|diff| = {diff_fused:.3e}")
    assert diff_fused <= 1e-6
    # tokenizer loads through transformers and gives the same ids
    from transformers import AutoTokenizer
    t = AutoTokenizer.from_pretrained(str(FIX / "minimax-7to1"), local_files_only=True)
    for s in json.load(open(FIX / "minimax-7to1" / "reference.json"))["tokenizer_samples"]:
        assert t(s["text"], add_special_tokens=True)["input_ids"] == s["ids"], s
    assert t.bos_token_id == 1 and t.eos_token_id == 2 and t.pad_token_id == 0
    print("  tokenizer reloads via AutoTokenizer with identical ids")
    return results


def report_tensor_names():
    print("== tensors written by transformers for minimax-7to1")
    names = safetensors_names(FIX / "minimax-7to1")
    for k, (shape, dt, _fn) in names.items():
        if k.startswith("model.layers.") and not (k.startswith("model.layers.0.") or k.startswith("model.layers.7.")):
            continue
        print(f"  {k:60s} {shape} {dt}")
    print(f"  ({len(names)} tensors in total)")
    print("== tensors of minimax-sharded-bf16 (fused expert layout), layers 0 and 1")
    names = safetensors_names(FIX / "minimax-sharded-bf16")
    assert not any(".block_sparse_moe." in k for k in names)
    for k, (shape, dt, fn) in sorted(names.items()):
        if k.startswith("model.layers.") and not (k.startswith("model.layers.0.") or k.startswith("model.layers.1.")):
            continue
        print(f"  {k:60s} {shape} {dt} {fn}")
    print(f"  ({len(names)} tensors in total)")


def main():
    FIX.mkdir(parents=True, exist_ok=True)
    print("versions:", json.dumps(VERSIONS))
    tok, tok_samples = build_tokenizer()
    print("tokenizer samples:", json.dumps(tok_samples, ensure_ascii=False))
    model1, ref1, _chunk = fixture_7to1(tok, tok_samples)
    fixture_remote(model1, ref1, tok)
    fixture_bf16(tok)
    _m4, _r4, rd = fixture_partial_rope(tok)
    report_tensor_names()
    verify(rd)
    total = sum(p.stat().st_size for p in FIX.rglob("*") if p.is_file())
    print(f"total fixture bytes: {total} ({total / 1e6:.2f} MB)")
    print("OK")


if __name__ == "__main__":
    main()
