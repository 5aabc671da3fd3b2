#!/usr/bin/env python3
"""Generate TinyStories-style children's stories with SmolLM2-135M-Instruct (GGUF).

Runs on the GPU host (also works on CPU for a smoke test). Every prompt asks for a short story
that uses a random noun, verb and adjective from the built-in word lists, plus one or two random
story features (dialogue, a moral, a twist, ...), following the TinyStories recipe
(Eldan & Li, 2023). Sampling is batched with left padding.

Resumable: stories are appended to --out (JSONL, one story per line, flushed after every batch)
and every run appends a line with its statistics to <out>.runs.jsonl. The run index (number of
lines in that file) is mixed into the seed, so a re-run continues with new prompts.

    python3 tools/train/generate_stories.py --gguf /root/train/gguf/SmolLM2-135M-Instruct.Q4_1.gguf \
        --out /root/train/data/stories.jsonl --minutes 7
"""

import argparse
import json
import os
import random
import re
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

T0 = time.time()

# ----------------------------------------------------------------------------------------------
# Word lists: common, concrete words a young child knows.
# ----------------------------------------------------------------------------------------------
NOUNS = """
apple baby bag ball balloon banana bath bear bed bee bell bench bike bird birthday blanket boat
book boot bottle bowl box boy bread bridge brother brush bubble bucket bug bunny bus butterfly
button cake candle candy cap car card carrot castle cat chair cheese chicken circle clock cloud
coat cookie corn cow crab crayon crown cup cupcake dance desk dinosaur dog doll dolphin door dragon
dream dress drum duck egg elephant farm feather fence field fire fish flag flower forest fox friend
frog garden gate ghost gift giraffe girl glass glove goat grandma grandpa grass hat heart hen hill
hole home horse house ice jar jelly juice key kite kitten ladder lake lamp leaf lemon letter lion
lunch map milk mirror mitten monkey moon mountain mouse mud music nest net night nose ocean owl
paint pan park party pear pen pencil penguin piano picnic pig pillow pizza plane plant plate pond
pony pool present puppy puzzle queen rabbit rain rainbow river road robot rock rocket roof rope
rose sand sandwich school sea seed sheep shell ship shoe shop sister sky sled snail snake snow
sock sofa song soup spoon star stick stone storm street sun swing table tail teddy tent tiger toy
tractor train tree truck turtle umbrella van wagon wall water whale wheel window wind wing wolf
worm yard zebra basket bubble carpet chalk hammer helmet jacket kettle lantern marble mask
necklace orange paper parrot pebble pie pocket pumpkin ribbon ring scarf shovel slide soap spider
squirrel stamp sticker sweater towel tower tub tunnel whistle acorn cave island meadow puddle
treasure village wizard fairy giant king prince princess knight pirate bakery library garden
""".split()

VERBS = """
jump run walk hop skip climb swim fly dance sing play laugh smile cry hug kiss share help find look
see watch listen hear smell taste touch hold carry throw catch kick push pull open close build fix
make draw paint color write read count bake cook eat drink sleep wake dream hide seek chase follow
lead wave clap knock ring shout whisper call ask answer tell say thank visit travel explore learn
teach try wish hope love like want need give take bring send keep lose win miss grow plant pick
water wash clean sweep shine sparkle float sink splash roll bounce spin slide swing fall rise sit
stand wait rest race ride drive sail pack wrap tie dig fill pour mix stir cut fold stick glue
build lift drop fetch feed pet brush comb dress borrow return check hunt protect rescue save
believe remember forget notice wonder worry care trust agree argue fight forgive promise surprise
celebrate decorate invite arrive leave stay join welcome greet cheer tickle giggle yawn stretch
""".split()

ADJECTIVES = """
big small little tiny huge tall short long happy sad angry scared brave kind nice mean funny silly
shy proud tired sleepy hungry thirsty cold hot warm cool soft hard smooth rough wet dry clean dirty
new old young fast slow loud quiet bright dark shiny sparkly colorful red blue green yellow pink
purple orange white black brown gray round square heavy light full empty sweet sour yummy tasty
fresh fluffy fuzzy furry sticky bumpy curious clever smart gentle careful careless lazy busy calm
wild friendly lonely excited grumpy cheerful jolly polite rude honest helpful strong weak pretty
beautiful ugly cute magic special strange lucky fancy plain crunchy juicy spicy stinky noisy
peaceful rainy sunny snowy windy foggy cozy safe dangerous wonderful terrible important famous
""".split()

NAMES = """
Lily Tom Ben Mia Sam Anna Max Lucy Tim Sara Jack Emma Leo Zoe Jake Ella Mike Amy Bob Sue Kim Dan
Rosa Ali Nina Omar Ivy Finn Ruby Hugo Maya Theo Luna Noah Ava Eli Chloe Sid Pip Spot Daisy Buddy
""".split()

FEATURES = [
    "The story should contain at least one dialogue.",
    "The story should have a happy ending.",
    "The story should teach a simple moral lesson.",
    "Something unexpected should happen in the story (a plot twist).",
    "The story should have a sad or bad ending.",
    "The story should use foreshadowing.",
    "The story should have a conflict that the characters solve.",
    "The story should be about friendship.",
    "The story should be about sharing.",
    "The story should be about being brave.",
    "The story should happen at night.",
    "The story should be funny.",
]

STYLES = [
    "Write a short story (3-5 paragraphs) which only uses very simple words that a 3 year old child "
    "would likely understand.",
    "Write a short and simple story for young children, using only easy words a small child knows.",
    "Write a short bedtime story for a little child. Use very simple words and short sentences.",
]

NOUNS, VERBS, ADJECTIVES = (list(dict.fromkeys(w)) for w in (NOUNS, VERBS, ADJECTIVES))

STOPWORDS = set("""
the a an and to was he she it of in on is his her they with for that at but said you i had we
were then there so not one day very be have all up they them when what this my said out
""".split())


def build_prompt(rng: random.Random):
    noun, verb, adj = rng.choice(NOUNS), rng.choice(VERBS), rng.choice(ADJECTIVES)
    feats = rng.sample(FEATURES, rng.choice([1, 1, 2]))
    parts = [rng.choice(STYLES),
             f'The story should use the verb "{verb}", the noun "{noun}" and the adjective "{adj}".']
    name = None
    if rng.random() < 0.5:
        name = rng.choice(NAMES)
        parts.append(f"The main character is called {name}.")
    parts += feats
    parts.append("Remember to only use simple words! Write only the story, with no title.")
    meta = {"noun": noun, "verb": verb, "adj": adj, "features": feats, "name": name}
    return " ".join(parts), meta


# ----------------------------------------------------------------------------------------------
# Cleaning and filtering
# ----------------------------------------------------------------------------------------------
_PREAMBLE = re.compile(r"^(sure|certainly|of course|here'?s|here is|okay|ok)\b.*$", re.I)
_TITLE = re.compile(r"^(#+\s*.*|\*\*[^*]+\*\*|title\s*:.*|story\s*:?\s*|\"[^\"]{1,60}\")$", re.I)
_BAD = re.compile(r"(as an ai|i'm sorry|i am sorry|i cannot|<\|im_|<\|endoftext|https?://|\bchatgpt\b|smollm)", re.I)


def _junk_first_line(line: str, n_lines: int) -> bool:
    if not line or _TITLE.match(line):
        return True
    if _PREAMBLE.match(line) and len(line.split()) < 16 and line.endswith((":", "!", ".")):
        return True
    # a short title line without final punctuation, followed by the story
    return n_lines > 1 and len(line.split()) <= 8 and not line.endswith((".", "!", "?", '"', ",", ";"))


def clean_story(text: str, finished: bool):
    text = text.replace("\r", "").strip()
    lines = [ln.strip() for ln in text.split("\n")]
    # drop leading preamble / title lines
    while lines and _junk_first_line(lines[0], len(lines)):
        lines.pop(0)
    text = "\n".join(lines)
    text = text.replace("**", "").replace("__", "")
    text = re.sub(r"\n{3,}", "\n\n", text)
    text = re.sub(r"[ \t]+", " ", text).strip()
    if not finished:  # cut an unfinished story at its last complete sentence
        m = max(text.rfind(". "), text.rfind("! "), text.rfind("? "), text.rfind(".\n"),
                text.rfind('." '), text.rfind('."\n'), text.rfind("!\""), text.rfind("?\""))
        if text.endswith((".", "!", "?", '."', '!"', '?"')):
            pass
        elif m > 0:
            cut = m + 1
            if text[cut:cut + 1] == '"':
                cut += 1
            text = text[:cut].strip()
        else:
            return ""  # not a single complete sentence
    # drop a trailing "The end" style tail or sign-off beyond the story
    text = re.sub(r"\n+(I hope|Hope you|Let me know|Feel free)[^\n]*$", "", text, flags=re.I).strip()
    return text


def reject_reason(text: str, min_words: int):
    words = text.split()
    if len(words) < min_words:
        return "short"
    if _BAD.search(text):
        return "assistant_talk"
    non_ascii = sum(1 for c in text if ord(c) > 127 and c not in "\u2019\u2018\u201c\u201d\u2014\u2013\u2026")
    if non_ascii > 0.005 * len(text):
        return "non_ascii"
    lw = [re.sub(r"[^a-z']", "", w.lower()) for w in words]
    if sum(w in STOPWORDS for w in lw) < 0.2 * len(lw):
        return "non_english"
    if len(lw) >= 30:
        grams = [tuple(lw[i:i + 3]) for i in range(len(lw) - 2)]
        if len(set(grams)) < 0.75 * len(grams):
            return "repetition"
    sents = [s.strip().lower() for s in re.split(r"[.!?\n]+", text) if len(s.split()) >= 4]
    if sents and max(sents.count(s) for s in set(sents)) >= 3:
        return "repetition"
    return None


# ----------------------------------------------------------------------------------------------
# Model loading (GGUF -> transformers, without accelerate)
# ----------------------------------------------------------------------------------------------
def load_model(gguf_path: str, device: str, dtype: torch.dtype):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    d, f = os.path.dirname(os.path.abspath(gguf_path)), os.path.basename(gguf_path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    cfg = AutoConfig.from_pretrained(d, gguf_file=f)
    # `from_pretrained(..., gguf_file=)` insists on `accelerate`, which the GPU host lacks; build the
    # model from the GGUF config and load the dequantised tensors ourselves (same code path inside).
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    params = load_gguf_checkpoint(gguf_path, return_tensors=True, model_to_load=model)
    missing, unexpected = model.load_state_dict(params["tensors"], strict=False)
    if getattr(cfg, "tie_word_embeddings", False):
        model.tie_weights()
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF load: missing {missing}, unexpected {unexpected}")
    model = model.to(device=device, dtype=dtype).eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok, model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", required=True, help="stories.jsonl (appended)")
    ap.add_argument("--minutes", type=float, default=7.0, help="wall-clock budget including model load")
    ap.add_argument("--batch", type=int, default=None, help="prompts per batch (default 768 cuda, 4 cpu)")
    ap.add_argument("--max-new-tokens", type=int, default=300)
    ap.add_argument("--temperature", type=float, nargs=2, default=[0.8, 1.0], metavar=("LO", "HI"),
                    help="temperature drawn uniformly per batch")
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--repetition-penalty", type=float, default=1.05)
    ap.add_argument("--min-words", type=int, default=None, help="default 60 (or 8 if max-new-tokens < 100)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--max-batches", type=int, default=0, help="stop after N batches (0 = time only)")
    args = ap.parse_args()

    dev = args.device
    if dev == "cpu":
        torch.set_num_threads(int(os.environ.get("GEN_THREADS", "1")))
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if dev.startswith("cuda") else torch.float32)
    batch = args.batch or (768 if dev.startswith("cuda") else 4)
    min_words = args.min_words if args.min_words is not None else (60 if args.max_new_tokens >= 100 else 8)
    budget = args.minutes * 60.0

    runs_path = args.out + ".runs.jsonl"
    run_index = 0
    if os.path.exists(runs_path):
        with open(runs_path) as fh:
            run_index = sum(1 for ln in fh if ln.strip())
    n_existing = 0
    if os.path.exists(args.out):
        with open(args.out) as fh:
            n_existing = sum(1 for ln in fh if ln.strip())
    run_seed = args.seed * 1000 + run_index
    rng = random.Random(run_seed)
    torch.manual_seed(run_seed)
    print(f"[gen] run {run_index} seed {run_seed}; {n_existing} stories already in {args.out}", flush=True)

    tok, model = load_model(args.gguf, dev, dtype)
    eos_ids = sorted({i for i in (tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>"),
                                  tok.eos_token_id) if isinstance(i, int) and i >= 0})
    print(f"[gen] model loaded in {time.time() - T0:.1f}s on {dev} ({dtype}); batch {batch}, "
          f"max_new_tokens {args.max_new_tokens}, eos {eos_ids}", flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    out = open(args.out, "a", encoding="utf-8")
    stats = {"run": run_index, "seed": run_seed, "batches": 0, "generated": 0, "accepted": 0,
             "gen_tokens": 0, "gen_seconds": 0.0, "rejected": {}}
    last_batch_s = None
    while True:
        elapsed = time.time() - T0
        if args.max_batches and stats["batches"] >= args.max_batches:
            break
        if stats["batches"] and elapsed + last_batch_s * 1.1 + 5 > budget:
            break  # (the first batch always runs, whatever the budget)
        prompts, metas = zip(*(build_prompt(rng) for _ in range(batch)))
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(dev)
        temperature = rng.uniform(*args.temperature)
        t = time.time()
        with torch.inference_mode():
            gen = model.generate(**enc, do_sample=True, temperature=temperature, top_p=args.top_p,
                                 repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens,
                                 eos_token_id=eos_ids, pad_token_id=tok.pad_token_id)
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
        last_batch_s = time.time() - t
        new = gen[:, enc["input_ids"].shape[1]:].cpu()
        n_tok = 0
        for row, meta in zip(new, metas):
            ids = row.tolist()
            finished = False
            for j, x in enumerate(ids):
                if x in eos_ids:
                    ids, finished = ids[:j], True
                    break
            n_tok += len(ids) + (1 if finished else 0)
            story = clean_story(tok.decode(ids, skip_special_tokens=True), finished)
            why = reject_reason(story, min_words)
            stats["generated"] += 1
            if why:
                stats["rejected"][why] = stats["rejected"].get(why, 0) + 1
                continue
            rec = {"text": story, "finished": finished, "gen_tokens": len(ids), "temperature": round(temperature, 3),
                   "run": run_index, **meta}
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            stats["accepted"] += 1
        out.flush()
        stats["batches"] += 1
        stats["gen_tokens"] += n_tok
        stats["gen_seconds"] += last_batch_s
        print(f"[gen] batch {stats['batches']}: {last_batch_s:.1f}s, {n_tok / last_batch_s:,.0f} tok/s "
              f"(steps {new.shape[1]}), accepted {stats['accepted']}/{stats['generated']}, "
              f"elapsed {time.time() - T0:.0f}s", flush=True)
    out.close()
    stats["tokens_per_s"] = stats["gen_tokens"] / max(stats["gen_seconds"], 1e-9)
    stats["wall_s"] = time.time() - T0
    with open(runs_path, "a") as fh:
        fh.write(json.dumps(stats) + "\n")
    print(f"[gen] done: {json.dumps(stats)}", flush=True)
    print(f"[gen] {n_existing + stats['accepted']} stories in {args.out}", flush=True)
    if stats["batches"] == 0:
        print("[gen] WARNING: no batch fit into the time budget", file=sys.stderr)


if __name__ == "__main__":
    main()
