"""Entry point: python -m benchmarks {layernorm_gelu,attention,adam,train_step,encode,pretrain,generate,finetune_padding,memory,lm_head,cpu,cpu_agreement,all,env} [--quick] [--core] [--data FILE ...].

`env` prints the environment every result records (versions, device, clocks, commit) as one JSON line.
"""
import argparse
import importlib
import inspect
import json

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
    "cpu": "benchmarks.bench_cpu",
    "cpu_agreement": "benchmarks.cpu_agreement",
}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("name", choices=[*BENCHES, "all", "env"], help="which benchmark to run ('all' runs every one)")
    ap.add_argument("--quick", action="store_true", help="small sizes: finishes on a 2-core CPU in seconds")
    ap.add_argument("--core", action="store_true",
                    help="only the rows that decide the benchmark's goal (the GPU suite's first call); "
                         "benchmarks without such a subset run whole")
    ap.add_argument("--data", nargs="+", metavar="FILE",
                    help="encode: real texts (Story Cloze CSVs, or files of one text per line); cpu_agreement: "
                         "Story Cloze 2018 CSVs (the first with labels fine-tunes a small model)")
    args = ap.parse_args(argv)
    if args.data and args.name not in ("encode", "cpu_agreement"):
        ap.error("--data is for the encode and cpu_agreement benchmarks")
    if args.name == "env":
        from benchmarks.common import environment

        print(json.dumps(environment()), flush=True)
        return
    names = list(BENCHES) if args.name == "all" else [args.name]
    for name in names:
        bench_main = importlib.import_module(BENCHES[name]).main
        kw = {"core": True} if args.core and "core" in inspect.signature(bench_main).parameters else {}
        if args.data:
            kw["data"] = args.data
        bench_main(quick=args.quick, **kw)


if __name__ == "__main__":
    main()
