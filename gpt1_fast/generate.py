"""Sample text from GPT-1's language model, as the PyTorch port's generate.py (SPEC §7).

    python -m gpt1_fast.generate                                   # interactive; 'q' quits
    python -m gpt1_fast.generate --prompt "The dog ran" --gen_len 20 --topk 10
    python -m gpt1_fast.generate --checkpoint save/rocstories/best_params.pt --prompt "..."

The LM's logits cover the whole embedding table; the position rows are masked (-1e12) before the
softmax, then each step samples from the top-k of the last position's distribution (topk 0: all).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .config import GPTConfig
from .model import LMModel
from .layout import EmbeddingLayout
from .pretrained import checkpoint_present, missing_checkpoint_message, resolve_vocab


@torch.no_grad()
def sample(model: LMModel, ids: list[int], gen_len: int = 20, topk: int = 10, generator=None) -> list[int]:
    """`gen_len` new token ids after the prompt ids (stops early when the context is full)."""
    tr = model.transformer
    if not ids:
        raise ValueError("the prompt encodes to no tokens")
    device = tr.embed.weight.device
    x = torch.tensor(ids[-tr.n_ctx:], device=device)[None]
    out = []
    for _ in range(gen_len):
        if x.size(1) >= tr.n_ctx:
            break
        probs = model(input_ids=x)[:, -1, :].float()
        if topk:
            values, indices = probs.topk(topk)
            nxt = indices.gather(-1, torch.multinomial(values, 1, generator=generator))
        else:
            nxt = torch.multinomial(probs, 1, generator=generator)
        out.append(int(nxt.item()))
        x = torch.cat([x, nxt], dim=1)
    return out


def build_parser():
    p = argparse.ArgumentParser(prog="python -m gpt1_fast.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--prompt", action="append", help="beginning words (repeatable); without it, read prompts interactively")
    a("--gen_len", type=int, default=20, help="tokens to generate (default 20)")
    a("--topk", type=int, default=10, help="sample from the k most likely tokens (default 10; 0: all)")
    a("--seed", type=int, default=0, help="sampling seed (default 0)")
    a("--model_dir", default="model/", help="pretrained checkpoint and vocabulary folder (default model/)")
    a("--checkpoint", default=None,
      help="fine-tuned parameters saved by `gpt1_fast.train --submit` (save/<desc>/best_params.pt; its "
           "config.json beside it gives the shapes and vocabulary)")
    a("--from_scratch", action="store_true", help="random weights (for testing the pipeline)")
    a("--encoder_path", default=None, help="BPE vocabulary json (default <model_dir>/encoder_bpe_40000.json)")
    a("--bpe_path", default=None, help="BPE merges (default <model_dir>/vocab_40000.bpe)")
    a("--n_ctx", type=int, default=512, help="context length (default 512)")
    a("--n_embd", type=int, default=768, help="width, with --from_scratch (default 768)")
    a("--n_head", type=int, default=12, help="heads, with --from_scratch (default 12)")
    a("--n_layer", type=int, default=12, help="blocks, with --from_scratch (default 12)")
    a("--afn", default="gelu", choices=["gelu", "relu", "swish"], help="MLP activation (default gelu)")
    a("--device", default=None, help="cpu or cuda (default cuda when available)")
    a("--backend", default="auto", choices=["torch", "triton", "auto"], help="op implementation (default auto)")
    return p


def load(args):
    """-> (model, text_encoder) ready to sample."""
    from .text import TextEncoder

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        meta_path = ckpt.parent / "config.json"
        if not ckpt.is_file() or not meta_path.is_file():
            raise FileNotFoundError(f"{ckpt} (and config.json beside it) not found: they are written by "
                                    "`python -m gpt1_fast.train --submit` under save/<desc>/")
        meta = json.loads(meta_path.read_text())
        layout = (EmbeddingLayout.from_dict(meta["layout"]) if "layout" in meta else  # runs before the layout key
                  EmbeddingLayout(meta["n_vocab"], tuple(meta.get("specials", ())), meta["n_ctx"]))
        text_encoder = TextEncoder(args.encoder_path or meta["encoder_path"], args.bpe_path or meta["bpe_path"])
        cfg = GPTConfig(**dict(meta["cfg"], backend=args.backend))
        model = LMModel(cfg, layout.size, layout.n_ctx, return_probs=True)
        sd = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.transformer.load_state_dict({k[len("transformer."):]: v for k, v in sd.items()
                                           if k.startswith("transformer.")})
        for name in layout.specials:
            text_encoder.decoder[layout.special(name)] = name
    else:
        md = Path(args.model_dir)
        text_encoder = TextEncoder(*resolve_vocab(md, args.encoder_path, args.bpe_path))
        layout = EmbeddingLayout(len(text_encoder.encoder), (), args.n_ctx)  # no special tokens
        cfg = GPTConfig(n_embd=args.n_embd, n_head=args.n_head, n_layer=args.n_layer, afn=args.afn,
                        backend=args.backend)
        model = LMModel(cfg, layout.size, layout.n_ctx, return_probs=True)
        if not args.from_scratch:
            if not checkpoint_present(md):
                raise FileNotFoundError(missing_checkpoint_message(md))
            from .weights import load_openai_pretrained_model

            load_openai_pretrained_model(model.transformer, n_ctx=layout.n_ctx, n_special=layout.n_special,
                                         n_embd=args.n_embd, path=md)
    return model.to(device).eval(), text_encoder


def main(argv=None):
    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    from .weights import CheckpointError

    try:
        model, text_encoder = load(args)
    except (FileNotFoundError, CheckpointError) as e:
        raise SystemExit(f"error: {e}") from None
    gen = torch.Generator(device=model.transformer.embed.weight.device).manual_seed(args.seed)

    def run(text):
        ids = text_encoder.encode([text])[0]
        if not ids:
            print("(the prompt encodes to no tokens)")
            return ""
        new = sample(model, ids, args.gen_len, args.topk, generator=gen)
        out = text_encoder.decode(new)
        print(out, flush=True)
        return out

    if args.prompt:
        return [run(t) for t in args.prompt]
    outs = []
    while True:
        try:
            text = input("Input some beginning words: ")
        except EOFError:
            break
        if text.strip() == "q":
            break
        outs.append(run(text))
    return outs


if __name__ == "__main__":
    main(sys.argv[1:])
