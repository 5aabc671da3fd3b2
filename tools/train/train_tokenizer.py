#!/usr/bin/env python3
"""Train the byte-level BPE tokenizer (vocab 4096) on the stories + prose (training split only).

Writes <out-dir>/tokenizer.json and tokenizer_config.json. `<|endoftext|>` is id 0 and serves as
BOS, EOS, PAD and document separator. The post-processor prepends `<|endoftext|>` when
special tokens are requested (HF `tokenizer(text)`, Rust `encode(text, true)`), so a prompt
looks exactly like the start of a training document. No chat template: this is a base model.

    python3 tools/train/train_tokenizer.py --stories /root/train/data/stories.jsonl \
        --prose /root/train/data/prose.txt.xz --out-dir /root/train/tok
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import EOT, EOT_ID, is_val, read_prose, read_stories, write_json  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": EOT,
    "eos_token": EOT,
    "pad_token": EOT,
    "unk_token": None,
    "add_bos_token": True,
    "add_eos_token": False,
    "clean_up_tokenization_spaces": False,
    "model_max_length": 2048,
    "padding_side": "left",
}


def build_tokenizer(texts, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{EOT} $A", pair=f"{EOT} $A {EOT} $B:1",
                                      special_tokens=[(EOT, EOT_ID)]),
    ])
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stories", nargs="+", required=True, help="stories.jsonl[.xz] file(s)")
    ap.add_argument("--prose", required=True, help="prose.txt.xz")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--val-permille", type=int, default=15, help="held-out share (same in prepare_data.py)")
    args = ap.parse_args()

    t0 = time.time()
    texts = [t for t in read_stories(args.stories) if not is_val(t, args.val_permille)]
    n_st = len(texts)
    texts += [t for t in read_prose(args.prose) if not is_val(t, args.val_permille)]
    chars = sum(len(t) for t in texts)
    print(f"[tok] training BPE on {n_st} stories + {len(texts) - n_st} prose docs ({chars / 1e6:.1f} M chars)",
          flush=True)
    tok = build_tokenizer(texts, args.vocab_size)
    vocab = tok.get_vocab()
    assert tok.get_vocab_size() == args.vocab_size, tok.get_vocab_size()
    assert vocab[EOT] == EOT_ID
    assert sorted(vocab.values()) == list(range(args.vocab_size))

    os.makedirs(args.out_dir, exist_ok=True)
    tok.save(os.path.join(args.out_dir, "tokenizer.json"))
    write_json(os.path.join(args.out_dir, "tokenizer_config.json"), TOKENIZER_CONFIG)

    # sanity: round trip and compression
    samples = ["Once upon a time, there was a little girl named Lily.", "\"Hello!\" said Tom. 1 + 2 = 3.",
               "café — naïve 🙂", texts[0][:300]]
    for s in samples:
        enc = tok.encode(s)
        assert enc.ids[0] == EOT_ID and tok.decode(enc.ids) == s, (s, tok.decode(enc.ids))
    n_tok = sum(len(e.ids) - 1 for e in tok.encode_batch(texts[:2000]))
    n_chr = sum(len(t) for t in texts[:2000])
    print(f"[tok] vocab {tok.get_vocab_size()}, {n_chr / n_tok:.2f} chars/token on a sample; "
          f"'Once upon a time' -> {tok.encode('Once upon a time').tokens}", flush=True)
    print(f"[tok] wrote {args.out_dir}/tokenizer.json, tokenizer_config.json in {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
