#!/usr/bin/env python3
"""Evaluate an exported MiniMax directory: held-out loss / perplexity + unedited samples.

* Validation: non-overlapping windows of --seq-len + 1 tokens from val_stories.bin and
  val_prose.bin (prepare_data.py); mean next-token cross-entropy, perplexity and bits per
  character (using the chars/token of that split from meta.json).
* Samples: for each prompt, one greedy and --n-sampled sampled continuations (temperature,
  top-p), generated WITHOUT a KV cache (every step re-runs the whole sequence, the same
  semantics as the runtime's oracle tests), stopped at `<|endoftext|>`. Also reports whether
  transformers' own `generate()` (with its MiniMaxCache) reproduces the first greedy sample.
* Writes --out-prefix.json and --out-prefix.md. The texts are not edited in any way.

    python3 tools/train/evaluate.py --model-dir /root/train/export --data-dir /root/train/data \
        --out-prefix /root/train/export/eval
"""

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import EOT_ID, write_json  # noqa: E402

PROMPTS = [
    "Once upon a time",
    "One day, a little girl named Lily",
    "Tom and his dog",
    "The sun was shining and",
    "Once upon a time, there was a big whale who",
    "It was a dark and stormy night",
    "Call me Ishmael.",
    "Mr. Speaker, Mr. President, and distinguished guests,",
]


@torch.no_grad()
def val_loss(model, arr, seq, max_windows, batch, device):
    n = min((arr.size - 1) // seq, max_windows)
    if n == 0:
        return None, 0
    tot, cnt = 0.0, 0
    for i in range(0, n, batch):
        idx = np.arange(i, min(n, i + batch))[:, None] * seq + np.arange(seq + 1)[None, :]
        x = torch.from_numpy(arr[idx].astype(np.int64)).to(device)
        logits = model(input_ids=x[:, :-1], use_cache=False).logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
        tot += loss.item()
        cnt += x[:, 1:].numel()
    return tot / cnt, cnt


@torch.no_grad()
def generate_nocache(model, ids, max_new, device, temperature=0.0, top_p=1.0, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    seq = list(ids)
    new = []
    for _ in range(max_new):
        x = torch.tensor([seq], device=device)
        logits = model(input_ids=x, use_cache=False).logits[0, -1].float().cpu()
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            probs = torch.softmax(logits / temperature, -1)
            if top_p < 1.0:
                sp, si = probs.sort(descending=True)
                keep = sp.cumsum(0) - sp < top_p
                probs = torch.zeros_like(probs).scatter_(0, si[keep], sp[keep])
                probs /= probs.sum()
            nxt = int(torch.multinomial(probs, 1, generator=g))
        new.append(nxt)
        if nxt == EOT_ID:
            break
        seq.append(nxt)
    return new


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out-prefix", required=True, help="writes <prefix>.json and <prefix>.md")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--max-windows", type=int, default=2000, help="per split")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompts", nargs="*", default=PROMPTS)
    ap.add_argument("--n-sampled", type=int, default=2, help="sampled continuations per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    t0 = time.time()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)

    import transformers
    from transformers import AutoTokenizer, MiniMaxForCausalLM
    transformers.logging.set_verbosity_error()  # the missing (recomputed) decay buffers are expected
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = MiniMaxForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, attn_implementation="eager")
    model.set_experts_implementation("eager")
    model.to(device).eval()

    meta = {}
    mp = os.path.join(args.data_dir, "meta.json")
    if os.path.exists(mp):
        with open(mp) as fh:
            meta = json.load(fh)
    result = {"model_dir": os.path.abspath(args.model_dir), "device": str(device), "seq_len": args.seq_len,
              "validation": {}, "samples": []}
    for name in ("val_stories", "val_prose"):
        p = os.path.join(args.data_dir, name + ".bin")
        if not os.path.exists(p) or os.path.getsize(p) == 0:
            continue
        arr = np.memmap(p, dtype=np.uint16, mode="r")
        loss, n = val_loss(model, arr, args.seq_len, args.max_windows, args.batch, device)
        if loss is None:
            continue
        cpt = meta.get("streams", {}).get(name, {}).get("chars_per_token")
        result["validation"][name] = {"loss": loss, "perplexity": math.exp(loss), "tokens": n,
                                      "bits_per_char": (loss / math.log(2) / cpt) if cpt else None}
        print(f"[eval] {name}: loss {loss:.4f}  ppl {math.exp(loss):.2f}  ({n:,} tokens)", flush=True)

    for pi, prompt in enumerate(args.prompts):
        ids = tok(prompt)["input_ids"]  # starts with <|endoftext|> (post-processor)
        runs = [("greedy", 0.0, 0)] + [(f"sampled-{k}", args.temperature, 1000 * pi + k) for k in range(args.n_sampled)]
        for kind, temp, seed in runs:
            new = generate_nocache(model, ids, args.max_new_tokens, device, temp, args.top_p, seed)
            stopped = bool(new) and new[-1] == EOT_ID
            text = tok.decode([t for t in new if t != EOT_ID])
            result["samples"].append({"prompt": prompt, "kind": kind, "temperature": temp,
                                      "top_p": args.top_p if temp > 0 else None, "seed": seed,
                                      "prompt_ids": ids, "new_ids": new, "stopped_at_eos": stopped,
                                      "completion": text})
            print(f"[eval] {kind} | {prompt}{text[:160]!r}...", flush=True)

    # does transformers' cached generate() agree with the cache-free greedy decode?
    first = result["samples"][0]
    with torch.no_grad():
        g = model.generate(torch.tensor([first["prompt_ids"]], device=device), do_sample=False,
                           max_new_tokens=len(first["new_ids"]), eos_token_id=EOT_ID, pad_token_id=EOT_ID)
    hf_new = g[0, len(first["prompt_ids"]):].tolist()
    result["hf_generate_matches_nocache_greedy"] = hf_new == first["new_ids"][:len(hf_new)]
    result["seconds"] = round(time.time() - t0, 1)

    write_json(args.out_prefix + ".json", result)
    lines = ["# Evaluation", "", f"Model: `{args.model_dir}`", "", "## Held-out loss", "",
             "| split | loss (nats/token) | perplexity | bits/char | tokens |", "|---|---|---|---|---|"]
    for k, v in result["validation"].items():
        bpc = f"{v['bits_per_char']:.3f}" if v["bits_per_char"] else "-"
        lines.append(f"| {k} | {v['loss']:.4f} | {v['perplexity']:.2f} | {bpc} | {v['tokens']:,} |")
    lines += ["", f"Samples: cache-free decoding, greedy and temperature {args.temperature} / top-p {args.top_p}, "
              f"at most {args.max_new_tokens} new tokens, stopped at `<|endoftext|>`. Unedited: each block is "
              "the prompt followed by the verbatim continuation.", "",
              f"transformers `generate()` reproduces the first greedy sample: "
              f"{result['hf_generate_matches_nocache_greedy']}", ""]
    for s in result["samples"]:
        end = " `<|endoftext|>`" if s["stopped_at_eos"] else " [max tokens]"
        lines += [f"### {s['kind']}: {s['prompt']}", "", "```text", s["prompt"] + s["completion"], "```",
                  f"({len(s['new_ids'])} tokens{end})", ""]
    with open(args.out_prefix + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"[eval] wrote {args.out_prefix}.json / .md in {result['seconds']}s", flush=True)


if __name__ == "__main__":
    main()
