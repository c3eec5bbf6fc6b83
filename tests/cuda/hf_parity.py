#!/usr/bin/env python3
"""Parity of tandem's CUDA and CPU engines with Hugging Face transformers,
on the device. Random Llama-3-shaped (llama3 rope scaling, GQA) and
Qwen2-shaped (q/k/v bias, tied embeddings) checkpoints are written by
transformers (save_pretrained, safetensors, bf16); tandem-logits computes
teacher-forced logits of a batch of mixed-length prompts (up to 4k tokens)
through one forward pass, and through the decode path (half prefilled, then
one token per step), with a GEMM algorithm table tuned for the model
(tandem-gemm-tune). The reference runs transformers' SDPA attention (the
FlashAttention numerics tandem's CUDA kernels follow). Pass: relative error
(max |diff| / max |ref|) under 2e-2 and top-1 agreement on at least 99% of
positions (a tie for the maximum on either side counts as agreement:
both sides' logits are bf16), for CUDA vs transformers and CUDA vs CPU. Then greedy decoding
with on-GPU sampling: CUDA-graph replay must give exactly the tokens of
kernel-by-kernel launches.

Beside the pass figures, the reference's own spread, compared the same
way (not pass criteria): the same checkpoint through transformers' eager
attention (bf16 probabilities, fp32 softmax) against its SDPA run
("hf_eager_vs_hf_sdpa"), and each of them, and tandem's CUDA and CPU runs,
against an fp32 forward of the same (bf16-valued) weights ("*_vs_fp32").
With random weights the next-token distributions are nearly flat, so two
correct bf16 forwards that differ only in accumulation order already
disagree on near-tied positions; the spread says how many. It grows with
the weights' scale: at transformers' default init (0.02) the reference
agrees with itself to about the pass bounds; at 0.05 its eager and SDPA
runs agree on only 98.3-98.9% of positions past 500 tokens, and with an
rel_err up to 2.3e-2, so a 99% bound there cannot tell a correct engine
from a wrong one (PARITY_INIT_RANGE=0.05 reruns it; docs/benchmarks.md).

  python3 tests/cuda/hf_parity.py BIN_DIR OUT_JSON
  python3 tests/cuda/hf_parity.py --spread_only OUT_JSON   # the spread alone (no tandem)
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

SPREAD_ONLY = sys.argv[1] == "--spread_only"
BIN, OUT = (None if SPREAD_ONLY else sys.argv[1]), sys.argv[2]
LENGTHS = [7, 64, 513, 1500, 4000]
# The std of the random weights: transformers' own default (0.02, what
# from_config writes). PARITY_INIT_RANGE overrides it; the device run also
# reports 0.05, where the reference no longer agrees with itself to the
# pass bounds (see the module docstring).
INIT_RANGE = float(os.environ.get("PARITY_INIT_RANGE", "0.02"))
common = dict(vocab_size=8192, hidden_size=512, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8,
              num_key_value_heads=2, max_position_embeddings=8192, rms_norm_eps=1e-5, initializer_range=INIT_RANGE)
CONFIGS = {
    "llama3": LlamaConfig(**common, rope_theta=500000.0, tie_word_embeddings=False,
                          rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0, "original_max_position_embeddings": 1024}),
    "qwen2": Qwen2Config(**common, rope_theta=1000000.0, tie_word_embeddings=True),
}


def compare(test, ref):
    """Both sides' logits are bf16 values (a bf16 lm_head), so a row's
    maximum is often shared by several tokens; argmax then picks the lowest
    id among them. Top-1 agrees when either side's chosen token holds the
    other side's maximum (a tie there); `top1_strict` is plain argmax
    equality, reported beside it."""
    rel = float(np.abs(test - ref).max() / np.abs(ref).max())
    t_arg, r_arg = test.argmax(-1), ref.argmax(-1)
    rows = np.arange(len(ref))
    strict = t_arg == r_arg
    tied = (ref[rows, t_arg] == ref.max(-1)) | (test[rows, r_arg] == test.max(-1))
    ref_ties = float(((ref == ref.max(-1, keepdims=True)).sum(-1) > 1).mean())
    top1 = float((strict | tied).mean())
    return {"rel_err": rel, "top1": top1, "top1_strict": float(strict.mean()), "ref_rows_with_tied_max": ref_ties,
            "ok": rel < 2e-2 and top1 >= 0.99}


def report_spread(name, n, eager, sdpa, truth):
    """The reference's own spread: its two bf16 attention paths against
    each other, and each against the fp32 forward of the same weights."""
    spread = {"hf_eager_vs_hf_sdpa": compare(eager, sdpa), "hf_sdpa_vs_fp32": compare(sdpa, truth),
              "hf_eager_vs_fp32": compare(eager, truth)}
    for k, v in spread.items():
        print(f"{name:7s} len {n:5d} {k:18s} rel_err {v['rel_err']:.2e} "
              f"top1 {v['top1']:.4f} strict {v['top1_strict']:.4f} (the reference's own spread)", flush=True)
    return spread


def logits_of(model, seqs):
    """Teacher-forced logits of each sequence alone, as float32 arrays."""
    model.eval()
    with torch.no_grad():
        return [model(torch.tensor([s], device="cuda")).logits[0].float().cpu().numpy() for s in seqs]


def reloaded_logits(d, seqs, dtype, attn):
    """logits_of the checkpoint in `d` loaded again in `dtype` with `attn`."""
    model = AutoModelForCausalLM.from_pretrained(d, dtype=dtype, attn_implementation=attn).cuda()
    out = logits_of(model, seqs)
    del model
    torch.cuda.empty_cache()
    return out


def main():
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 forward is plain fp32
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    report, ok = {}, True
    for name, cfg in CONFIGS.items():
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
        with torch.no_grad():
            for m in model.modules():  # Qwen2's biases start at zero; make them matter
                if isinstance(m, torch.nn.Linear) and m.bias is not None:
                    m.bias.normal_(0.0, 0.05)
        model.eval()
        d = tempfile.mkdtemp(prefix=f"parity-{name}-")
        model.save_pretrained(d, safe_serialization=True)
        g = torch.Generator().manual_seed(1)
        seqs = [torch.randint(0, cfg.vocab_size, (n,), generator=g).tolist() for n in LENGTHS]
        with open(os.path.join(d, "tokens.json"), "w") as f:
            json.dump(seqs, f)
        ref = logits_of(model, seqs)
        del model
        eager = reloaded_logits(d, seqs, torch.bfloat16, "eager")
        # The truth the bf16 runs approximate: the same bf16 weights, upcast
        # exactly, through an fp32 forward.
        truth = reloaded_logits(d, seqs, torch.float32, "sdpa")
        if SPREAD_ONLY:
            report[name] = {n: report_spread(name, n, eager[i], ref[i], truth[i]) for i, n in enumerate(LENGTHS)}
            continue
        # The CUDA runs use a GEMM algorithm table tuned for this model, as
        # a deployment would (tandem-gemm-tune; min_gain 0 so that more
        # shapes leave cuBLASLt's heuristic choice).
        algos = os.path.join(d, "gemm_algos.json")
        subprocess.run([os.path.join(BIN, "tandem-gemm-tune"), f"--model={d}", "--rows=8,16,64,256,1024,4096,8192",
                        "--copies=2", "--candidates=8", "--min_gain=0", f"--out={algos}"], check=True,
                       stdout=subprocess.DEVNULL)
        tuned = [f"--gemm_algos={algos}"]
        runs = {}
        for label, args in [("cuda", ["--device=cuda"] + tuned),
                            ("cuda_incremental", ["--device=cuda", "--incremental"] + tuned),
                            ("cpu", ["--device=cpu"])]:
            out = os.path.join(d, f"{label}.bin")
            subprocess.run([os.path.join(BIN, "tandem-logits"), f"--model={d}", f"--tokens={d}/tokens.json",
                            f"--out={out}"] + args, check=True)
            flat = np.fromfile(out, dtype=np.float32).reshape(-1, cfg.vocab_size)
            runs[label] = np.split(flat, np.cumsum(LENGTHS)[:-1])
        res = {}
        for i, n in enumerate(LENGTHS):
            res[n] = {
                "cuda_vs_hf": compare(runs["cuda"][i], ref[i]),
                "cuda_decode_vs_hf": compare(runs["cuda_incremental"][i], ref[i]),
                "cpu_vs_hf": compare(runs["cpu"][i], ref[i]),
                "cuda_vs_cpu": compare(runs["cuda"][i], runs["cpu"][i]),
            }
            for k, v in res[n].items():
                ok = ok and v["ok"]
                print(f"{name:7s} len {n:5d} {k:18s} rel_err {v['rel_err']:.2e} top1 {v['top1']:.4f} "
                      f"{'ok' if v['ok'] else 'FAIL'}", flush=True)
            res[n].update(report_spread(name, n, eager[i], ref[i], truth[i]))
            for label in ("cuda", "cpu"):
                res[n][f"{label}_vs_fp32"] = compare(runs[label][i], truth[i])
                print(f"{name:7s} len {n:5d} {label + '_vs_fp32':18s} rel_err {res[n][label + '_vs_fp32']['rel_err']:.2e} "
                      f"top1 {res[n][label + '_vs_fp32']['top1']:.4f} (against the fp32 forward)", flush=True)
        # Greedy decode, sampled on the GPU: graphs vs eager launches.
        gen = {}
        for label, args in [("graphs", []), ("eager", ["--cuda_graphs=false"])]:
            out = os.path.join(d, f"greedy-{label}.json")
            subprocess.run([os.path.join(BIN, "tandem-logits"), f"--model={d}", f"--tokens={d}/tokens.json",
                            f"--out={out}", "--device=cuda", "--greedy_steps=48"] + tuned + args, check=True)
            gen[label] = json.load(open(out))
        same = gen["graphs"] == gen["eager"]
        ok = ok and same
        print(f"{name:7s} greedy 48 steps x {len(LENGTHS)} seqs: graphs == eager: {same}", flush=True)
        res["greedy_graphs_equal_eager"] = same
        report[name] = res
    report["initializer_range"] = INIT_RANGE
    if not SPREAD_ONLY:
        report["pass"] = ok
    with open(OUT, "w") as f:
        json.dump(report, f, indent=1)
    sys.exit(0 if ok or SPREAD_ONLY else 1)


if __name__ == "__main__":
    main()
