"""Entry point: python -m benchmarks {layernorm_gelu,attention,adam,train_step,encode,pretrain,generate,finetune_padding,memory,lm_head,all} [--quick] [--data FILE ...]."""
import argparse
import importlib

BENCHES = {
    "layernorm_gelu": "benchmarks.bench_layernorm_gelu",
    "attention": "benchmarks.bench_attention",
    "adam": "benchmarks.bench_adam",
    "train_step": "benchmarks.bench_train_step",
    "encode": "benchmarks.bench_encode",
    "pretrain": "benchmarks.bench_pretrain",
    "generate": "benchmarks.bench_generate",
    "finetune_padding": "benchmarks.bench_finetune_padding",
    "memory": "benchmarks.bench_memory",
    "lm_head": "benchmarks.bench_lm_head",
}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("name", choices=[*BENCHES, "all"], help="which benchmark to run ('all' runs every one)")
    ap.add_argument("--quick", action="store_true", help="small sizes: finishes on a 2-core CPU in seconds")
    ap.add_argument("--data", nargs="+", metavar="FILE",
                    help="encode only: real texts (Story Cloze CSVs, or files of one text per line)")
    args = ap.parse_args(argv)
    if args.data and args.name != "encode":
        ap.error("--data is for the encode benchmark")
    names = list(BENCHES) if args.name == "all" else [args.name]
    for name in names:
        extra = {"data": args.data} if args.data else {}
        importlib.import_module(BENCHES[name]).main(quick=args.quick, **extra)


if __name__ == "__main__":
    main()
