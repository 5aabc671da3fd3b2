#!/usr/bin/env bash
# One step of the training recipe on the offline GPU host. Run from the repo root:
#
#   bash tools/train/run_step.sh STEP [MINUTES]
#
# STEP: install | join-gguf | generate [7] | tokenizer | train [8.5] | export | status
# (export = export + evaluate). See tools/train/README.md for what to carry with each call.
#
# Every step first "stages" whatever carried inputs exist under .train/ into $TRAIN_ROOT
# (persistent scratch while the machine is held), so inputs may arrive in any call. Results that
# must survive the machine go to $OUT (at most 8 files of < 16 MB: larger ones are split into
# 15 MiB parts).
#
# Environment: TRAIN_ROOT (default /root/train), OUT (default $TRAIN_ROOT/out), PYTHON,
# GEN_ARGS / TOK_ARGS / TRAIN_ARGS / EXPORT_ARGS / EVAL_ARGS (extra arguments),
# TRAIN_PLAN_MINUTES (default 7.5), NO_PORTABLE=1 (train: do not copy the portable snapshot to $OUT).
set -euo pipefail

STEP=${1:-}
ARG2=${2:-}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
T=$REPO/tools/train
TRAIN_ROOT=${TRAIN_ROOT:-/root/train}
OUT=${OUT:-$TRAIN_ROOT/out}
PY=${PYTHON:-python3}
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
PART=15M   # $OUT file limit is 16 MB

export PYTHONPATH="$TRAIN_ROOT/site${PYTHONPATH:+:$PYTHONPATH}"
export PIP_ROOT_USER_ACTION=ignore PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=true TQDM_DISABLE=1
mkdir -p "$TRAIN_ROOT"/{gguf,data,tok,ckpt,export,resume,logs} "$OUT"
cd "$REPO"

say() { echo "[run_step $(date +%H:%M:%S)] $*"; }

# copy $1 to $OUT, splitting it into 15 MiB parts (NAME.part-0, -1, ...) when larger
to_out() {
  local src=$1 name=${2:-$(basename "$1")}
  local size; size=$(stat -c %s "$src")
  if [ "$size" -le $((15 * 1024 * 1024)) ]; then
    cp "$src" "$OUT/$name"
  else
    split -b "$PART" -d -a 1 "$src" "$OUT/$name.part-"
  fi
  say "  -> \$OUT/$name ($size bytes)"
}

xz_compress() {  # xz_compress SRC DST
  if command -v xz >/dev/null; then xz -T0 -6 -c "$1" > "$2"
  else "$PY" -c "import lzma,shutil,sys; shutil.copyfileobj(open(sys.argv[1],'rb'), lzma.open(sys.argv[2],'wb',preset=6))" "$1" "$2"; fi
}

xz_decompress() {  # xz_decompress SRC DST
  if command -v xz >/dev/null; then xz -dc "$1" > "$2"
  else "$PY" -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1],'rb'), open(sys.argv[2],'wb'))" "$1" "$2"; fi
}

# join NAME.part-* (carried, possibly over several calls) once NAME.sha256 matches
join_parts() {  # join_parts DIR NAME
  local dir=$1 name=$2
  [ -f "$dir/$name" ] && return 0
  ls "$dir/$name.part-"* >/dev/null 2>&1 || return 1
  [ -f "$dir/$name.sha256" ] || return 1
  cat $(ls "$dir/$name.part-"* | sort -V) > "$dir/$name.tmp"
  if (cd "$dir" && sed "s#  .*#  $name.tmp#" "$name.sha256" | sha256sum -c --quiet -); then
    mv "$dir/$name.tmp" "$dir/$name" && rm -f "$dir/$name.part-"*
    say "joined $dir/$name"
  else
    rm -f "$dir/$name.tmp"; say "$name: parts present so far do not match $name.sha256 yet"; return 1
  fi
}

stage() {
  # GGUF parts
  for f in .train/gguf/$GGUF_NAME.part-* .train/gguf/$GGUF_NAME.sha256; do
    [ -f "$f" ] || continue
    [ -f "$TRAIN_ROOT/gguf/$GGUF_NAME" ] && break
    cmp -s "$f" "$TRAIN_ROOT/gguf/$(basename "$f")" || { cp "$f" "$TRAIN_ROOT/gguf/"; say "staged $f"; }
  done
  # prose
  if [ -f .train/prose.txt.xz ] && ! cmp -s .train/prose.txt.xz "$TRAIN_ROOT/data/prose.txt.xz"; then
    cp .train/prose.txt.xz "$TRAIN_ROOT/data/prose.txt.xz"; say "staged prose.txt.xz"
  fi
  # stories from an earlier machine (the generate step's $OUT files, put under .train/)
  if [ ! -s "$TRAIN_ROOT/data/stories.jsonl" ]; then
    if ls .train/stories.jsonl.xz.part-* >/dev/null 2>&1; then
      cat $(ls .train/stories.jsonl.xz.part-* | sort -V) > "$TRAIN_ROOT/data/stories.jsonl.xz"
    elif [ -f .train/stories.jsonl.xz ]; then
      cp .train/stories.jsonl.xz "$TRAIN_ROOT/data/stories.jsonl.xz"
    fi
    if [ -f "$TRAIN_ROOT/data/stories.jsonl.xz" ]; then
      xz_decompress "$TRAIN_ROOT/data/stories.jsonl.xz" "$TRAIN_ROOT/data/stories.jsonl"
      rm -f "$TRAIN_ROOT/data/stories.jsonl.xz"
      say "staged stories.jsonl ($(wc -l < "$TRAIN_ROOT/data/stories.jsonl") stories)"
    fi
    if [ -f .train/stories.jsonl.runs.jsonl ]; then cp .train/stories.jsonl.runs.jsonl "$TRAIN_ROOT/data/"; fi
  fi
  # tokenizer from an earlier machine
  for f in tokenizer.json tokenizer_config.json; do
    if [ -f ".train/tok/$f" ] && [ ! -f "$TRAIN_ROOT/tok/$f" ]; then cp ".train/tok/$f" "$TRAIN_ROOT/tok/"; say "staged tok/$f"; fi
  done
  # portable training snapshot from an earlier machine
  for f in .train/resume/portable.safetensors.part-* .train/resume/portable.safetensors.sha256; do
    [ -f "$f" ] || continue
    [ -f "$TRAIN_ROOT/resume/portable.safetensors" ] && break
    cp "$f" "$TRAIN_ROOT/resume/"
  done
  join_parts "$TRAIN_ROOT/resume" portable.safetensors >/dev/null 2>&1 || true
}

case "$STEP" in
install)
  stage
  say "installing wheels into $TRAIN_ROOT/site"
  install_whl() {  # pip if present, else plain extraction (a wheel is a zip of site-packages files)
    if "$PY" -m pip --version >/dev/null 2>&1; then
      "$PY" -m pip install --quiet --no-index --no-deps --upgrade --target "$TRAIN_ROOT/site" "$1"
    else
      "$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$1" "$TRAIN_ROOT/site"
    fi
  }
  install_whl .whl/gguf-*.whl
  if ! "$PY" -c "import yaml" 2>/dev/null; then
    say "PyYAML missing on this host: installing the carried wheel"
    install_whl .whl/pyyaml-*.whl
  fi
  "$PY" - <<'EOF'
import importlib, platform, shutil
import torch, transformers
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| transformers", transformers.__version__)
from importlib.metadata import version
for m, dist in (("tokenizers", "tokenizers"), ("safetensors", "safetensors"), ("numpy", "numpy"),
                ("gguf", "gguf"), ("yaml", "pyyaml"), ("tqdm", "tqdm")):
    try:
        importlib.import_module(m); print(f"  {m} {version(dist)}")
    except Exception as e:
        print(f"  {m} MISSING: {e}")
from transformers import MiniMaxForCausalLM  # noqa: F401
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint  # noqa: F401
print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
      "| grouped_mm:", hasattr(torch.nn.functional, "grouped_mm") or hasattr(torch, "_grouped_mm"))
print("disk free under /root:", shutil.disk_usage("/root").free // 2**30, "GiB")
EOF
  join_parts "$TRAIN_ROOT/gguf" "$GGUF_NAME" || say "GGUF not complete yet: run 'join-gguf' carrying the other part"
  ;;

join-gguf)
  stage
  if join_parts "$TRAIN_ROOT/gguf" "$GGUF_NAME"; then
    ls -la "$TRAIN_ROOT/gguf"
  elif ls "$TRAIN_ROOT/gguf/$GGUF_NAME.part-"* >/dev/null 2>&1; then
    say "GGUF incomplete, waiting for more parts; staged so far:"; ls -la "$TRAIN_ROOT/gguf"
  else
    say "no GGUF parts staged: carry .train/gguf/$GGUF_NAME.part-* and .sha256"; exit 1
  fi
  ;;

generate)
  stage
  [ -f "$TRAIN_ROOT/gguf/$GGUF_NAME" ] || { say "no joined GGUF: run install + join-gguf first"; exit 1; }
  MIN=${ARG2:-7}
  "$PY" "$T/generate_stories.py" --gguf "$TRAIN_ROOT/gguf/$GGUF_NAME" --out "$TRAIN_ROOT/data/stories.jsonl" \
    --minutes "$MIN" ${GEN_ARGS:-} 2>&1 | sed -u '/Converting and de-quantizing/d' | tee -a "$TRAIN_ROOT/logs/generate.log"
  say "compressing stories for \$OUT"
  xz_compress "$TRAIN_ROOT/data/stories.jsonl" "$TRAIN_ROOT/data/stories.jsonl.xz.out"
  to_out "$TRAIN_ROOT/data/stories.jsonl.xz.out" stories.jsonl.xz
  rm -f "$TRAIN_ROOT/data/stories.jsonl.xz.out"
  to_out "$TRAIN_ROOT/data/stories.jsonl.runs.jsonl"
  to_out "$TRAIN_ROOT/logs/generate.log"
  ;;

tokenizer)
  stage
  [ -s "$TRAIN_ROOT/data/stories.jsonl" ] || { say "no stories: run generate first (or carry .train/stories.jsonl.xz)"; exit 1; }
  [ -f "$TRAIN_ROOT/data/prose.txt.xz" ] || { say "no prose.txt.xz: carry .train/prose.txt.xz"; exit 1; }
  if [ -f "$TRAIN_ROOT/tok/tokenizer.json" ] && [ -z "${FORCE:-}" ]; then
    say "tokenizer exists ($TRAIN_ROOT/tok), keeping it (FORCE=1 retrains)"
  else
    "$PY" "$T/train_tokenizer.py" --stories "$TRAIN_ROOT/data/stories.jsonl" --prose "$TRAIN_ROOT/data/prose.txt.xz" \
      --out-dir "$TRAIN_ROOT/tok" ${TOK_ARGS:-}
  fi
  "$PY" "$T/prepare_data.py" --tokenizer "$TRAIN_ROOT/tok/tokenizer.json" --stories "$TRAIN_ROOT/data/stories.jsonl" \
    --prose "$TRAIN_ROOT/data/prose.txt.xz" --out-dir "$TRAIN_ROOT/data"
  to_out "$TRAIN_ROOT/tok/tokenizer.json"
  to_out "$TRAIN_ROOT/tok/tokenizer_config.json"
  to_out "$TRAIN_ROOT/data/meta.json" data_meta.json
  ;;

train)
  stage
  [ -f "$TRAIN_ROOT/data/train_stories.bin" ] || { say "no token streams: run the tokenizer step first"; exit 1; }
  MIN=${ARG2:-8.5}
  rc=0
  "$PY" "$T/train.py" --data-dir "$TRAIN_ROOT/data" --ckpt-dir "$TRAIN_ROOT/ckpt" --minutes "$MIN" \
    --plan-minutes "${TRAIN_PLAN_MINUTES:-7.5}" \
    --portable-out "$TRAIN_ROOT/resume/portable.safetensors" --init-portable "$TRAIN_ROOT/resume/portable.safetensors" \
    ${TRAIN_ARGS:-} 2>&1 | tee -a "$TRAIN_ROOT/logs/train.log" || rc=$?
  to_out "$TRAIN_ROOT/ckpt/train_log.jsonl"
  if [ -z "${NO_PORTABLE:-}" ] && [ -f "$TRAIN_ROOT/resume/portable.safetensors" ]; then
    (cd "$TRAIN_ROOT/resume" && sha256sum portable.safetensors > portable.safetensors.sha256)
    mkdir -p "$OUT/resume"
    split -b "$PART" -d -a 1 "$TRAIN_ROOT/resume/portable.safetensors" "$OUT/resume/portable.safetensors.part-"
    cp "$TRAIN_ROOT/resume/portable.safetensors.sha256" "$OUT/resume/"
    say "  -> \$OUT/resume/portable.safetensors.part-* (fp32 weights + position, no optimizer)"
  fi
  exit $rc
  ;;

export|export+eval)
  stage
  if ls "$TRAIN_ROOT"/ckpt/ckpt_*.pt >/dev/null 2>&1; then SRC=(--ckpt-dir "$TRAIN_ROOT/ckpt")
  elif [ -f "$TRAIN_ROOT/resume/portable.safetensors" ]; then SRC=(--portable "$TRAIN_ROOT/resume/portable.safetensors")
  else say "nothing to export"; exit 1; fi
  rm -rf "$TRAIN_ROOT/export" && mkdir -p "$TRAIN_ROOT/export"
  "$PY" "$T/export.py" "${SRC[@]}" --tokenizer-dir "$TRAIN_ROOT/tok" --out-dir "$TRAIN_ROOT/export" ${EXPORT_ARGS:-}
  "$PY" "$T/evaluate.py" --model-dir "$TRAIN_ROOT/export" --data-dir "$TRAIN_ROOT/data" \
    --out-prefix "$TRAIN_ROOT/export/eval" ${EVAL_ARGS:-}
  cp "$TRAIN_ROOT/ckpt/train_log.jsonl" "$TRAIN_ROOT/export/train_log.jsonl" 2>/dev/null || true
  cp "$TRAIN_ROOT/data/meta.json" "$TRAIN_ROOT/export/data_meta.json" 2>/dev/null || true
  cp "$TRAIN_ROOT/data/stories.jsonl.runs.jsonl" "$TRAIN_ROOT/export/generate_runs.jsonl" 2>/dev/null || true
  (cd "$TRAIN_ROOT" && tar -cf export.tar export)
  to_out "$TRAIN_ROOT/export.tar" minimax-demo.tar
  for f in eval.md eval.json export_report.json; do to_out "$TRAIN_ROOT/export/$f"; done
  ls -la "$TRAIN_ROOT/export"
  ;;

status)
  stage
  du -sh "$TRAIN_ROOT"/* 2>/dev/null || true
  ls -la "$TRAIN_ROOT/gguf" "$TRAIN_ROOT/data" "$TRAIN_ROOT/tok" "$TRAIN_ROOT/ckpt" "$TRAIN_ROOT/resume" 2>/dev/null || true
  [ -f "$TRAIN_ROOT/data/stories.jsonl" ] && say "stories: $(wc -l < "$TRAIN_ROOT/data/stories.jsonl")"
  [ -f "$TRAIN_ROOT/ckpt/train_log.jsonl" ] && tail -n 3 "$TRAIN_ROOT/ckpt/train_log.jsonl"
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null || true
  ;;

*)
  sed -n '2,17p' "$0"; exit 2
  ;;
esac
