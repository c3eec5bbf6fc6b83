#!/usr/bin/env python3
"""The peer for tandem's GPU benchmarks: the same workload through Hugging
Face transformers' continuous batching (`generate_batch`), in the same
device call as tandem, so the two are compared side by side.

It writes a results.json in tandem-bench's format (one closed-loop run with
all requests submitted at once), so `tandem-bench compare` can plot both.

  python3 bench/peer/hf_continuous_batching.py --num_requests 256 \
      --input_len 512 --output_len 128 --out results-hf/results.json

Weights are random (like tandem's --dummy_weights) unless --model names a
checkpoint directory; the default config is Llama-3-8B-shaped.
"""
import argparse
import json
import os
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig
from transformers.generation import GenerationConfig


def llama3_8b_config(layers):
    return LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
                       num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                       rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)


def percentiles(xs):
    if not xs:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    xs = sorted(xs)

    def at(q):
        pos = q * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
    return {"mean": statistics.fmean(xs), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="", help="checkpoint directory; empty: random Llama-3-8B-shaped weights")
    ap.add_argument("--layers", type=int, default=32, help="layers of the random model")
    ap.add_argument("--num_requests", type=int, default=256)
    ap.add_argument("--input_len", type=int, default=512)
    ap.add_argument("--output_len", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results-hf/results.json")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    t0 = time.time()
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, device_map="cuda",
                                                     attn_implementation="paged|sdpa")
    else:
        config = llama3_8b_config(args.layers)
        config._attn_implementation = "paged|sdpa"
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.eval()
    print(f"model ready in {time.time() - t0:.1f} s", flush=True)

    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(args.seed)
    prompts = [torch.randint(0, vocab * 3 // 4, (args.input_len,), generator=g).tolist()
               for _ in range(args.num_requests)]
    gen = GenerationConfig(max_new_tokens=args.output_len, min_new_tokens=args.output_len, do_sample=False,
                           eos_token_id=None, pad_token_id=0)

    start = time.time()
    with torch.no_grad():
        outputs = model.generate_batch(inputs=prompts, generation_config=gen, record_timestamps=True,
                                       progress_bar=False)
    wall = time.time() - start

    out_tokens = 0
    ttft, tpot, e2e = [], [], []
    for o in outputs.values():
        toks = list(getattr(o, "generated_tokens", []) or [])
        out_tokens += len(toks)
        stamps = getattr(o, "timestamps", None)
        created = getattr(o, "created_time", None)
        if stamps and created is not None and len(stamps) > 0:
            ttft.append(stamps[0] - created)
            e2e.append(stamps[-1] - created)
            if len(stamps) > 1:
                tpot.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))
    run = {
        "rate": 0.0, "concurrency": args.num_requests, "completed": len(outputs), "failed": 0,
        "duration_s": wall, "request_throughput": len(outputs) / wall,
        "input_tokens": args.input_len * len(outputs), "output_tokens": out_tokens,
        "input_tokens_per_s": args.input_len * len(outputs) / wall, "output_tokens_per_s": out_tokens / wall,
        "ttft_s": percentiles(ttft), "tpot_s": percentiles(tpot), "itl_s": percentiles(tpot),
        "e2e_s": percentiles(e2e), "attainment": {"ttft": 0.0, "tpot": 0.0, "all": 0.0}, "goodput_req_s": 0.0,
        "samples": {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e},
    }
    result = {"peer": "transformers generate_batch", "torch": torch.__version__,
              "device": torch.cuda.get_device_name(), "model": args.model or f"random llama3-8b-shaped x{args.layers}",
              "config": {"num_requests": args.num_requests, "input_len": str(args.input_len),
                         "output_len": str(args.output_len), "seed": args.seed},
              "runs": [run]}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{len(outputs)} requests, {out_tokens} output tokens in {wall:.2f} s: "
          f"{out_tokens / wall:.1f} output tok/s ({torch.cuda.get_device_name()})", flush=True)


if __name__ == "__main__":
    main()
