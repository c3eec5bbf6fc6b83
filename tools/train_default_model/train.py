#!/usr/bin/env python3
"""Trains tandem's built-in default model on the story corpus (make_corpus.py).

The network is written out here (RMSNorm, rotary embeddings with the config's
theta and Llama 3 frequency scaling, grouped-query attention, SwiGLU), with
the parameter names of Hugging Face's LlamaForCausalLM, so the exported
model.safetensors loads in tandem and in transformers alike. The shape comes
from --template/config.json and the tokenizer from --template/tokenizer.json
(the default model's own); the exported directory holds those files
unchanged plus the trained weights in bf16.

Before exporting it checks, and prints, that greedy and sampled continuations
of "Once upon a time" read well and that transformers' LlamaForCausalLM
loaded from the exported directory gives this module's logits.

  python3 train.py --template common/default_model/trained --out OUT --steps 3000
Needs torch, tokenizers, safetensors and transformers (for the parity check).
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_inv_freq(cfg):
    """Rotary frequencies as Llama 3 defines them (transformers' 'llama3' rope_type)."""
    hd = cfg["head_dim"]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type", rs.get("type")) != "llama3":
        return inv
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_wl, high_wl = old / low, old / high
    wl = 2 * math.pi / inv
    scaled = torch.where(wl > low_wl, inv / factor, inv)
    smooth = (old / wl - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wl < high_wl) & ~(wl > low_wl)
    return torch.where(medium, smoothed, scaled)


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, hd = cfg["hidden_size"], cfg["head_dim"]
        self.nh, self.nkv, self.hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], hd
        self.q_proj = nn.Linear(h, self.nh * hd, bias=False)
        self.k_proj = nn.Linear(h, self.nkv * hd, bias=False)
        self.v_proj = nn.Linear(h, self.nkv * hd, bias=False)
        self.o_proj = nn.Linear(self.nh * hd, h, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # GQA: key/value head i serves query heads [i*g, (i+1)*g), as repeat_kv does.
        g = self.nh // self.nkv
        k = k.repeat_interleave(g, dim=1)
        v = v.repeat_interleave(g, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.nh * self.hd))


class Mlp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, i = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.mlp = Mlp(cfg)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([Layer(cfg) for _ in range(cfg["num_hidden_layers"])])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class LlamaLM(nn.Module):
    """Parameter names are LlamaForCausalLM's: model.*, lm_head.weight."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Decoder(cfg)
        self.tied = bool(cfg.get("tie_word_embeddings", False))
        if not self.tied:
            self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)
        std = 0.02
        for name, p in self.named_parameters():
            if p.dim() == 2:
                # Residual-branch outputs start smaller, as in GPT-2.
                s = std / math.sqrt(2 * cfg["num_hidden_layers"]) if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                nn.init.normal_(p, 0.0, s)

    def forward(self, ids):
        t = ids.shape[1]
        pos = torch.arange(t, device=ids.device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        x = self.model.embed_tokens(ids)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        x = self.model.norm(x)
        w = self.model.embed_tokens.weight if self.tied else self.lm_head.weight
        return F.linear(x, w)


def load_corpus(args, tok, bos, eos):
    corpus = os.path.join(args.work, "corpus.txt")
    subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "make_corpus.py"),
                    "--out", corpus, "--stories", str(args.stories), "--seed", str(args.seed)], check=True)
    stories = [s for s in open(corpus, encoding="utf-8").read().split("\n\n") if s.strip()]
    for s in stories[:50]:  # the tokenizer must round-trip the corpus exactly
        assert tok.decode(tok.encode(s, add_special_tokens=False).ids, skip_special_tokens=False) == s, s
    enc = tok.encode_batch(stories, add_special_tokens=False)
    ids = []
    for e in enc:
        ids.append(bos)
        ids.extend(e.ids)
        ids.append(eos)
    n_chars = sum(len(s) for s in stories)
    print(f"corpus: {len(stories)} stories, {n_chars} chars, {len(ids)} tokens "
          f"({n_chars / len(ids):.2f} chars/token)", flush=True)
    return torch.tensor(ids, dtype=torch.int32)


@torch.no_grad()
def generate(model, tok, bos, eos, prompt, n, temperature=0.0, top_p=1.0, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    ids = [bos] + tok.encode(prompt, add_special_tokens=False).ids
    start = len(ids)
    for _ in range(n):
        logits = model(torch.tensor([ids], device="cuda")).float()[0, -1]
        if temperature == 0.0:
            nxt = int(logits.argmax())
        else:
            p = torch.softmax(logits / temperature, -1)
            sp, si = p.sort(descending=True)
            keep = sp.cumsum(-1) - sp < top_p
            sp = sp * keep
            nxt = int(si[torch.multinomial(sp / sp.sum(), 1, generator=gen)])
        if nxt == eos:
            break
        ids.append(nxt)
    return prompt + tok.decode(ids[start:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--template", required=True, help="dir with config.json, tokenizer.json, tokenizer_config.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/train_default_model")
    ap.add_argument("--stories", type=int, default=200000)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True

    from tokenizers import Tokenizer
    cfg = json.load(open(os.path.join(args.template, "config.json")))
    tok = Tokenizer.from_file(os.path.join(args.template, "tokenizer.json"))
    bos, eos = cfg["bos_token_id"], cfg["eos_token_id"]
    assert tok.get_vocab_size() == cfg["vocab_size"], (tok.get_vocab_size(), cfg["vocab_size"])

    data = load_corpus(args, tok, bos, eos)
    n_val = len(data) // 100
    train, val = data[:-n_val].cuda(), data[-n_val:].cuda()

    model = LlamaLM(cfg).cuda()
    print(f"parameters: {sum(p.numel() for p in model.parameters())}", flush=True)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), fused=True)
    gen = torch.Generator(device="cuda").manual_seed(args.seed)

    def batch(src):
        starts = torch.randint(0, len(src) - args.seq - 1, (args.batch,), device="cuda", generator=gen)
        idx = starts[:, None] + torch.arange(args.seq + 1, device="cuda")[None]
        chunk = src[idx].long()
        return chunk[:, :-1], chunk[:, 1:]

    def loss_on(src):
        x, y = batch(src)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))

    # Linear warmup, then cosine decay to a tenth of the peak.
    warmup, total, t0 = 100, args.steps, time.time()
    print(f"{total} steps of {args.batch}x{args.seq} tokens ({total * args.batch * args.seq / 1e6:.0f}M tokens)", flush=True)
    for step in range(total):
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / total)))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = loss_on(train)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 500 == 0:
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} t {time.time() - t0:.0f}s", flush=True)
    step = total

    model.eval()
    with torch.no_grad():
        vl = sum(loss_on(val).item() for _ in range(20)) / 20
        tl = sum(loss_on(train).item() for _ in range(20)) / 20
    print(f"final: train loss {tl:.4f}, held-out loss {vl:.4f} after {step} steps, {time.time() - t0:.0f}s", flush=True)

    # Export: bf16 weights under LlamaForCausalLM's names, the template's other files as they are.
    from safetensors.torch import save_file
    sd = {k: v.detach().to(torch.bfloat16).contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(args.template, f), os.path.join(args.out, f))

    # Check the exported weights: this module with the bf16 weights (in f32)
    # against transformers' LlamaForCausalLM loaded from the exported dir.
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    model.float()
    torch.backends.cuda.matmul.allow_tf32 = False  # the parity check compares true f32 products
    for prompt, kw in [("Once upon a time", {}), ("Once upon a time", {"temperature": 0.8, "top_p": 0.95, "seed": 1}),
                       ("Once upon a time", {"temperature": 0.8, "top_p": 0.95, "seed": 2}), ("One day", {})]:
        print(f"sample {kw or 'greedy'}: {generate(model, tok, bos, eos, prompt, 160, **kw)!r}", flush=True)
    from transformers import LlamaForCausalLM
    hf = LlamaForCausalLM.from_pretrained(args.out, dtype=torch.float32, attn_implementation="eager").cuda().eval()
    ids = torch.tensor([[bos] + tok.encode(generate(model, tok, bos, eos, "Once upon a time", 100),
                                           add_special_tokens=False).ids], device="cuda")
    with torch.no_grad():
        ours = model(ids).float()
        theirs = hf(ids).logits.float()
    diff = (ours - theirs).abs().max().item()
    same_top1 = (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item()
    print(f"parity vs transformers LlamaForCausalLM: {ids.shape[1]} tokens, max |logit diff| {diff:.2e}, "
          f"top-1 agreement {same_top1:.4f}", flush=True)
    assert diff < 1e-2 and same_top1 == 1.0, "exported model does not match transformers"
    json.dump({"train_loss": tl, "heldout_loss": vl, "steps": step, "seed": args.seed, "stories": args.stories,
               "batch": args.batch, "seq": args.seq, "lr": args.lr, "parity_max_abs_diff": diff},
              open(os.path.join(args.out, "train_result.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
