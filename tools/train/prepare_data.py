#!/usr/bin/env python3
"""Tokenise stories + prose into packed uint16 token streams for train.py.

Writes to --out-dir: train_stories.bin, val_stories.bin, train_prose.bin, val_prose.bin and
meta.json. Each .bin is one stream `<eot> doc <eot> doc ... <eot>` (uint16 little-endian), i.e.
every document is preceded by `<|endoftext|>` (id 0), as a prompt is at inference time.
The held-out split is by content hash (--val-permille, default 1.5 %), identical to the one the
tokenizer was trained on.

    python3 tools/train/prepare_data.py --tokenizer /root/train/tok/tokenizer.json \
        --stories /root/train/data/stories.jsonl --prose /root/train/data/prose.txt.xz --out-dir /root/train/data
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import EOT_ID, is_val, read_prose, read_stories, sha256_file, write_json  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
from tokenizers import Tokenizer  # noqa: E402


def encode_stream(tok, docs, chunk=4096):
    parts = [np.array([EOT_ID], dtype=np.uint16)]
    n_docs = 0
    for i in range(0, len(docs), chunk):
        for enc in tok.encode_batch(docs[i:i + chunk], add_special_tokens=False):
            ids = np.asarray(enc.ids, dtype=np.uint16)
            parts.append(ids)
            parts.append(np.array([EOT_ID], dtype=np.uint16))
            n_docs += 1
    return np.concatenate(parts), n_docs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--stories", nargs="+", required=True)
    ap.add_argument("--prose", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--val-permille", type=int, default=15)
    args = ap.parse_args()

    t0 = time.time()
    tok = Tokenizer.from_file(args.tokenizer)
    assert tok.get_vocab_size() <= 65535
    os.makedirs(args.out_dir, exist_ok=True)
    meta = {"tokenizer_sha256": sha256_file(args.tokenizer), "val_permille": args.val_permille, "eot_id": EOT_ID,
            "dtype": "uint16", "streams": {}}
    sources = {"stories": list(read_stories(args.stories)), "prose": list(read_prose(args.prose))}
    for name, docs in sources.items():
        split = {"train": [d for d in docs if not is_val(d, args.val_permille)],
                 "val": [d for d in docs if is_val(d, args.val_permille)]}
        for part, ds in split.items():
            arr, n = encode_stream(tok, ds)
            path = os.path.join(args.out_dir, f"{part}_{name}.bin")
            arr.tofile(path + ".tmp")
            os.replace(path + ".tmp", path)
            chars = sum(len(d) for d in ds)
            meta["streams"][f"{part}_{name}"] = {"docs": n, "tokens": int(arr.size), "chars": chars,
                                                "chars_per_token": round(chars / max(arr.size - n - 1, 1), 3)}
            print(f"[data] {part}_{name}: {n} docs, {arr.size:,} tokens, {chars / 1e6:.2f} M chars", flush=True)
    write_json(os.path.join(args.out_dir, "meta.json"), meta)
    print(f"[data] done in {time.time() - t0:.1f}s -> {args.out_dir}", flush=True)


if __name__ == "__main__":
    main()
