#!/usr/bin/env python3
"""Train the MiniMax-01-style demo model (transformers `MiniMaxForCausalLM`) from scratch.

* Architecture: tools/train/common.py `MODEL_CONFIG` (8 layers = 7 lightning + 1 softmax,
  hidden 256, 8 experts top-2, tied embeddings, vocab 4096; 11.43 M parameters).
* Data: packed uint16 streams from prepare_data.py; every training sample is a window of
  seq_len + 1 tokens; each "epoch" visits every stories window once (random offset and order per
  epoch) plus --prose-frac of the samples drawn from the prose stream.
* AdamW (fused on CUDA), linear warm-up + cosine decay to --min-lr-ratio, bf16 autocast, grad
  clipping, router load-balancing aux loss (`output_router_logits`, coef in the config).
* Time budget per run (--minutes, counted from process start) and a global schedule length
  (--total-steps, or --plan-minutes to derive it from the measured speed in the first run; it is
  stored in the checkpoint so resumed runs keep the same schedule).
* Checkpoints (model + optimizer + schedule + data position + RNG) every --ckpt-every-min
  minutes, at the end of a run and on SIGTERM, to --ckpt-dir; a run resumes automatically from
  the newest one. --portable-out writes the fp32 weights + position (no optimizer) as a small
  file that can be carried to another machine and continued with --init-portable.

    python3 tools/train/train.py --data-dir /root/train/data --ckpt-dir /root/train/ckpt \
        --minutes 8 --plan-minutes 15
"""

import argparse
import glob
import json
import math
import os
import random
import signal
import sys
import time

T0 = time.time()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("USE_HUB_KERNELS", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import EOT_ID, LIGHTNING_BUFFERS, make_config, write_json  # noqa: E402

STOP = {"flag": False}


def _on_signal(signum, frame):
    STOP["flag"] = True
    print(f"[train] signal {signum}: checkpointing and stopping after this step", flush=True)


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
class PackedData:
    def __init__(self, data_dir, seq_len, prose_frac, seed):
        self.seq = seq_len
        self.seed = seed
        self.streams = {}
        for name in ("train_stories", "train_prose", "val_stories", "val_prose"):
            p = os.path.join(data_dir, name + ".bin")
            self.streams[name] = np.memmap(p, dtype=np.uint16, mode="r") if os.path.exists(p) and os.path.getsize(p) else None
        self.n_s = self._n_windows(self.streams["train_stories"])
        self.n_p = self._n_windows(self.streams["train_prose"])
        if self.n_s == 0 and self.n_p == 0:
            raise SystemExit("no training data: train_stories.bin / train_prose.bin are empty or missing")
        if self.n_s == 0:
            self.k_p = self.n_p
        elif self.n_p == 0 or prose_frac <= 0:
            self.k_p = 0
        else:
            self.k_p = int(round(self.n_s * prose_frac / (1.0 - prose_frac)))
        self.epoch_len = self.n_s + self.k_p
        self._plan = (None, None, None)

    def _n_windows(self, arr):
        # leave room for a random offset in [0, seq) and the +1 target token
        if arr is None or arr.size < 2 * self.seq + 2:
            return 0
        return (arr.size - 1 - self.seq) // self.seq

    def plan(self, epoch):
        if self._plan[0] == epoch:
            return self._plan[1], self._plan[2]
        rng = np.random.default_rng([self.seed, epoch])
        off_s, off_p = int(rng.integers(0, self.seq)), int(rng.integers(0, self.seq))
        src = np.concatenate([np.zeros(self.n_s, np.int8), np.ones(self.k_p, np.int8)])
        s_starts = off_s + np.arange(self.n_s, dtype=np.int64) * self.seq
        if self.k_p:
            p_idx = rng.choice(self.n_p, size=self.k_p, replace=self.k_p > self.n_p)
            p_starts = off_p + p_idx.astype(np.int64) * self.seq
        else:
            p_starts = np.zeros(0, np.int64)
        starts = np.concatenate([s_starts, p_starts])
        perm = rng.permutation(self.epoch_len)
        self._plan = (epoch, src[perm], starts[perm])
        return self._plan[1], self._plan[2]

    def batch(self, sample_index, batch_size):
        """Windows for global samples [sample_index, sample_index + batch_size): (B, seq+1) int64."""
        out = np.empty((batch_size, self.seq + 1), dtype=np.int64)
        for i in range(batch_size):
            epoch, j = divmod(sample_index + i, self.epoch_len)
            src, starts = self.plan(epoch)
            arr = self.streams["train_prose" if src[j] else "train_stories"]
            s = int(starts[j])
            out[i] = arr[s:s + self.seq + 1]
        return torch.from_numpy(out)

    def val_windows(self, name, max_windows):
        arr = self.streams.get(name)
        if arr is None or arr.size < self.seq + 1:
            return None
        n = min((arr.size - 1) // self.seq, max_windows)
        idx = np.arange(n, dtype=np.int64)[:, None] * self.seq + np.arange(self.seq + 1)[None, :]
        return torch.from_numpy(arr[idx].astype(np.int64))


# ----------------------------------------------------------------------------------------------
# Model / optimiser helpers
# ----------------------------------------------------------------------------------------------
def build_model(args, device):
    from transformers import MiniMaxForCausalLM
    overrides = json.loads(args.config_overrides) if args.config_overrides else {}
    cfg = make_config(overrides)
    torch.manual_seed(args.seed)
    model = MiniMaxForCausalLM(cfg)
    try:
        model.set_attn_implementation(args.attn_impl)
    except Exception:
        model.config._attn_implementation = args.attn_impl
    # check that the tie is real (the same Parameter), else export / counting would be wrong
    assert model.lm_head.weight is model.model.embed_tokens.weight, "tie_word_embeddings did not tie"
    return model.to(device), cfg


def set_experts_impl(model, impl):
    try:
        model.set_experts_implementation(impl)
    except Exception:
        model.config._experts_implementation = impl
    return model.config._experts_implementation


def make_optimizer(model, args, device):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kw = dict(lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8)
    if device.type == "cuda":
        kw["fused"] = True
    return torch.optim.AdamW(groups, **kw)


def lr_at(step, sched, args):
    """LR multiplier: linear warm-up, cosine to min ratio at total, plus an optional re-warm-up
    after a --init-portable restart (fresh optimizer moments)."""
    total, warm = sched["total_steps"], sched["warmup"]
    if step < warm:
        m = (step + 1) / warm
    elif not total:
        m = 1.0
    else:
        prog = min(1.0, (step - warm) / max(1, total - warm))
        m = args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog))
    rw = sched.get("rewarm_from")
    if rw is not None and step - rw < args.rewarm_steps:
        m *= (step - rw + 1) / args.rewarm_steps
    return m


def forward_loss(model, x, coef, device, amp_dtype):
    inp, tgt = x[:, :-1], x[:, 1:]
    with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype != torch.float32):
        out = model(input_ids=inp, use_cache=False, output_router_logits=True)
    ce = F.cross_entropy(out.logits.float().reshape(-1, out.logits.shape[-1]), tgt.reshape(-1))
    aux = out.aux_loss.float() if out.aux_loss is not None else torch.zeros((), device=ce.device)
    return ce, aux


@torch.no_grad()
def evaluate(model, data, args, device, amp_dtype):
    model.eval()
    res = {}
    for name in ("val_stories", "val_prose"):
        w = data.val_windows(name, args.eval_batches * args.eval_batch)
        if w is None:
            continue
        tot, n = 0.0, 0
        for i in range(0, w.shape[0], args.eval_batch):
            xb = w[i:i + args.eval_batch].to(device, non_blocking=True)
            ce, _ = forward_loss(model, xb, 0.0, device, amp_dtype)
            tot += ce.item() * xb.shape[0]
            n += xb.shape[0]
        res[name] = tot / n
    model.train()
    return res


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def list_ckpts(d):
    return sorted(glob.glob(os.path.join(d, "ckpt_*.pt")))


def save_ckpt(path_dir, model, opt, state, args, keep):
    os.makedirs(path_dir, exist_ok=True)
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    obj = {"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state, "rng": rng,
           "args": vars(args), "model_config": model.config.to_dict()}
    path = os.path.join(path_dir, f"ckpt_{state['step']:07d}.pt")
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)
    for old in list_ckpts(path_dir)[:-keep]:
        os.remove(old)
    return path


def save_portable(path, model, state):
    from safetensors.torch import save_file
    sd = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()
          if k.rsplit(".", 1)[-1] not in LIGHTNING_BUFFERS and k != "lm_head.weight"}
    meta = {"state": json.dumps(state), "model_config": json.dumps(model.config.to_dict())}
    save_file(sd, path + ".tmp", metadata=meta)
    os.chmod(path + ".tmp", 0o644)
    os.replace(path + ".tmp", path)


def load_portable(path, model):
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    sd = load_file(path)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k.rsplit(".", 1)[-1] not in LIGHTNING_BUFFERS and k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"portable load: missing {missing} unexpected {unexpected}")
    return json.loads(meta["state"])


# ----------------------------------------------------------------------------------------------
def pick_experts_impl(model, data, args, device, amp_dtype):
    """Time one forward+backward per candidate MoE implementation and keep the fastest one whose
    loss agrees with the eager reference."""
    cands = ["grouped_mm", "eager"] if args.experts_impl == "auto" else [args.experts_impl]
    if len(cands) == 1:
        return set_experts_impl(model, cands[0]), {}
    x = data.batch(0, args.batch).to(device)
    res, ref = {}, None
    for impl in reversed(cands):  # eager first (reference)
        try:
            set_experts_impl(model, impl)
            ts = []
            for _ in range(3):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.time()
                ce, aux = forward_loss(model, x, 0.0, device, amp_dtype)
                (ce + 0.01 * aux).backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                ts.append(time.time() - t)
            model.zero_grad(set_to_none=True)
            loss = ce.item()
            ref = loss if ref is None else ref
            ok = abs(loss - ref) < 2e-2 * max(1.0, abs(ref))
            res[impl] = {"s_per_step": min(ts[1:]), "loss": loss, "ok": ok}
        except Exception as e:  # unsupported on this torch / GPU
            res[impl] = {"error": f"{type(e).__name__}: {e}"[:300]}
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    good = [k for k, v in res.items() if v.get("ok")]
    best = min(good, key=lambda k: res[k]["s_per_step"]) if good else "eager"
    return set_experts_impl(model, best), res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--ckpt-dir", required=True)
    ap.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of this run (from start)")
    ap.add_argument("--total-steps", type=int, default=0, help="schedule length; 0 = derive (see --plan-minutes)")
    ap.add_argument("--plan-minutes", type=float, default=7.5,
                    help="with --total-steps 0: pure training minutes the whole schedule should take, "
                         "measured from the speed of the first run")
    ap.add_argument("--max-epochs", type=float, default=12.0,
                    help="with --total-steps 0: cap the schedule at this many passes over the stories")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (default 128 cuda, 4 cpu)")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--rewarm-steps", type=int, default=100, help="LR re-warm-up after --init-portable")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--prose-frac", type=float, default=0.2, help="share of samples drawn from the prose stream")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-batches", type=int, default=8)
    ap.add_argument("--eval-batch", type=int, default=None, help="default = --batch")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--ckpt-every-min", type=float, default=2.0)
    ap.add_argument("--ckpt-every-steps", type=int, default=0, help="extra step-based checkpoints (testing)")
    ap.add_argument("--keep", type=int, default=2, help="checkpoints kept")
    ap.add_argument("--stop-after-steps", type=int, default=0, help="stop this run after N steps (testing)")
    ap.add_argument("--portable-out", default=None, help="write fp32 weights + position here at the end")
    ap.add_argument("--init-portable", default=None, help="start from a portable file if no checkpoint exists")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"],
                    help="autocast dtype (default bfloat16 on cuda, float32 on cpu)")
    ap.add_argument("--attn-impl", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--experts-impl", default="auto", choices=["auto", "grouped_mm", "eager", "batched_mm"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (untested, off by default)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (cpu device only)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--config-overrides", default=None, help="JSON dict merged into the model config (testing)")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp_dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    args.batch = args.batch or (128 if device.type == "cuda" else 4)
    args.eval_batch = args.eval_batch or args.batch
    budget = args.minutes * 60.0
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    os.makedirs(args.ckpt_dir, exist_ok=True)
    log_path = os.path.join(args.ckpt_dir, "train_log.jsonl")

    def log(rec):
        rec["wall"] = round(time.time() - T0, 2)
        with open(log_path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    if os.path.exists(os.path.join(args.ckpt_dir, "DONE")):
        print(f"[train] {args.ckpt_dir}/DONE exists: schedule finished, nothing to do", flush=True)
        return

    data = PackedData(args.data_dir, args.seq_len, args.prose_frac, args.seed)
    model, cfg = build_model(args, device)
    n_params = sum(p.numel() for p in model.parameters())
    n_expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    active = n_params - n_expert + n_expert * cfg.num_experts_per_tok // cfg.num_local_experts
    opt = make_optimizer(model, args, device)

    state = {"step": 0, "samples_seen": 0, "tokens_seen": 0, "total_steps": args.total_steps or 0,
             "warmup": args.warmup, "rewarm_from": None, "runs": 0, "train_seconds": 0.0}
    ckpts = list_ckpts(args.ckpt_dir)
    resumed_from = None
    if ckpts:
        ck = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state.update(ck["state"])
        random.setstate(ck["rng"]["python"])
        np.random.set_state(ck["rng"]["numpy"])
        torch.set_rng_state(ck["rng"]["torch"])
        if "cuda" in ck["rng"] and device.type == "cuda":
            try:
                torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
            except Exception:
                pass
        if args.total_steps and args.total_steps != state["total_steps"]:
            print(f"[train] NOTE: --total-steps {args.total_steps} overrides the checkpoint's {state['total_steps']}")
            state["total_steps"] = args.total_steps
        resumed_from = ckpts[-1]
        del ck
    elif args.init_portable and os.path.exists(args.init_portable):
        st = load_portable(args.init_portable, model)
        state.update({k: st[k] for k in ("step", "samples_seen", "tokens_seen", "total_steps", "warmup",
                                         "runs", "train_seconds") if k in st})
        state["rewarm_from"] = state["step"]
        if args.total_steps:
            state["total_steps"] = args.total_steps
        resumed_from = args.init_portable + " (fresh optimizer, LR re-warm-up)"
    model.train()
    state["runs"] += 1

    if args.experts_impl == "auto" and state.get("experts_impl"):
        # keep the implementation the first run picked, so a resumed run computes the same way
        impl, impl_res = set_experts_impl(model, state["experts_impl"]), {"reused": state["experts_impl"]}
    else:
        impl, impl_res = pick_experts_impl(model, data, args, device, amp_dtype)
    state["experts_impl"] = impl
    fwd_model = torch.compile(model) if args.compile else model  # checkpoints always save `model`

    sig = {k: (int(v.size) if v is not None else 0) for k, v in data.streams.items()}
    if state.get("data_signature") and state["data_signature"] != sig:
        print(f"[train] WARNING: the token streams changed since the checkpoint ({state['data_signature']} -> {sig}); "
              "the data order continues by sample index but is no longer the same sequence", flush=True)
    state["data_signature"] = sig

    info = {"event": "start", "run": state["runs"], "resumed_from": resumed_from, "step": state["step"],
            "total_steps": state["total_steps"], "params": n_params, "active_params": active,
            "experts_impl": impl, "experts_impl_trials": impl_res, "attn_impl": args.attn_impl,
            "device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "amp_dtype": str(amp_dtype), "batch": args.batch, "seq_len": args.seq_len,
            "tokens_per_step": args.batch * args.seq_len, "epoch_samples": data.epoch_len,
            "stories_windows": data.n_s, "prose_windows_per_epoch": data.k_p,
            "torch": torch.__version__, "transformers": __import__("transformers").__version__}
    print("[train] " + json.dumps(info), flush=True)
    log(info)

    coef = cfg.router_aux_loss_coef
    tok_per_step = args.batch * args.seq_len
    last_ckpt_t = time.time()
    eval_s = 0.0
    run_steps = 0
    t_log, tok_log = time.time(), 0
    auto_t0 = None
    ema = None
    done = False
    reason = "time"

    def sched():
        return {"total_steps": state["total_steps"], "warmup": state["warmup"], "rewarm_from": state["rewarm_from"]}

    while True:
        step = state["step"]
        if state["total_steps"] and step >= state["total_steps"]:
            done, reason = True, "schedule complete"
            break
        if STOP["flag"]:
            reason = "signal"
            break
        if args.stop_after_steps and run_steps >= args.stop_after_steps:
            reason = "stop-after-steps"
            break
        reserve = 10.0 + 2.0 * eval_s
        if time.time() - T0 > budget - reserve:
            break

        mult = lr_at(step, sched(), args)
        for g in opt.param_groups:
            g["lr"] = args.lr * mult
        x = data.batch(state["samples_seen"], args.batch).to(device, non_blocking=True)
        ce, aux = forward_loss(fwd_model, x, coef, device, amp_dtype)
        loss = ce + coef * aux
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] += 1
        state["samples_seen"] += args.batch
        state["tokens_seen"] += tok_per_step
        run_steps += 1
        tok_log += tok_per_step

        # derive the schedule length from the measured speed (first run only)
        if not state["total_steps"]:
            if run_steps == 10:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                auto_t0 = time.time()
            elif run_steps == 40:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                rate = 30 / (time.time() - auto_t0)
                by_time = int(rate * args.plan_minutes * 60 * 0.93)
                by_epochs = int(math.ceil(args.max_epochs * data.epoch_len / args.batch))
                state["total_steps"] = max(state["step"] + 1, min(by_time, by_epochs))
                state["warmup"] = min(state["warmup"], max(1, state["total_steps"] // 5))
                msg = {"event": "schedule", "steps_per_s": rate, "by_time": by_time, "by_epochs": by_epochs,
                       "total_steps": state["total_steps"], "warmup": state["warmup"]}
                print("[train] " + json.dumps(msg), flush=True)
                log(msg)

        if state["step"] % args.log_every == 0 or run_steps == 1:
            c, a, gn = ce.item(), aux.item(), gnorm.item()  # syncs
            ema = c if ema is None else 0.9 * ema + 0.1 * c
            dt = time.time() - t_log
            rec = {"step": state["step"], "loss": round(c, 4), "loss_ema": round(ema, 4), "aux": round(a, 4),
                   "lr": args.lr * mult, "grad_norm": round(gn, 3), "tok_per_s": round(tok_log / max(dt, 1e-9)),
                   "epoch": round(state["samples_seen"] / data.epoch_len, 3)}
            print(f"[train] step {rec['step']}/{state['total_steps'] or '?'} loss {c:.4f} aux {a:.3f} "
                  f"lr {rec['lr']:.2e} gnorm {gn:.2f} {rec['tok_per_s']:,} tok/s epoch {rec['epoch']:.2f} "
                  f"t {time.time() - T0:.0f}s", flush=True)
            log(rec)
            t_log, tok_log = time.time(), 0

        if args.eval_every and state["step"] % args.eval_every == 0:
            te = time.time()
            ev = evaluate(fwd_model, data, args, device, amp_dtype)
            eval_s = time.time() - te
            print(f"[train] eval step {state['step']}: " + ", ".join(f"{k} {v:.4f} (ppl {math.exp(v):.2f})"
                                                                  for k, v in ev.items()), flush=True)
            log({"event": "eval", "step": state["step"], **ev})
            t_log = time.time()

        if (time.time() - last_ckpt_t > args.ckpt_every_min * 60
                or (args.ckpt_every_steps and state["step"] % args.ckpt_every_steps == 0)):
            p = save_ckpt(args.ckpt_dir, model, opt, state, args, args.keep)
            last_ckpt_t = time.time()
            print(f"[train] checkpoint {p}", flush=True)
            t_log = time.time()

    # end of run: final eval, checkpoint, optional portable snapshot
    ev = evaluate(model, data, args, device, amp_dtype)
    state["train_seconds"] += time.time() - T0
    p = save_ckpt(args.ckpt_dir, model, opt, state, args, args.keep)
    if args.portable_out:
        save_portable(args.portable_out, model, state)
    if done:
        with open(os.path.join(args.ckpt_dir, "DONE"), "w") as fh:
            fh.write(json.dumps({"step": state["step"], **ev}) + "\n")
    end = {"event": "end", "reason": reason, "step": state["step"], "total_steps": state["total_steps"],
           "run_steps": run_steps, "tokens_seen": state["tokens_seen"], "checkpoint": p, "done": done, **ev}
    print("[train] " + json.dumps(end), flush=True)
    log(end)


if __name__ == "__main__":
    main()
