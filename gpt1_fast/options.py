"""Every option of every entry point, declared once: kind (type and accepted range), default, help,
and whether it changes the math (then a resume checkpoint must match it).

The command lines (`train`, `pretrain`, `generate`, `predict`, `zeroshot`, `vocab`, `plot`,
`synthetic`) and the estimators' keywords are generated from this table: an `Entry` lists the options an entry point takes, grouped
for --help, with its own defaults where they differ (pretraining's learning rate is the paper's
2.5e-4, fine-tuning's 6.25e-5: one declaration, two defaults). `build_parser(entry)` makes the
argparse parser; `check(entry, values)` makes the same checks on estimator keywords (a ValueError
naming the keyword); `validate` adds the checks between options and the environment, before an
entry point reads or writes anything.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field

from .cli import Choice, Flag, Float, Int, Option, OutFile, OutFolder, Parser, RunName, Text, Toggle, add_option, \
    check_backend, check_device
from .errors import UsageError


def _tasks():
    from .tasks import task_names

    return task_names()


def _schedules():
    from .opt import SCHEDULES

    return sorted(SCHEDULES)


PROB = Float(0.0, 1.0, hi_open=True)  # dropout rates, Adam betas
PATH = Text("a path")
O = Option
OPTIONS: dict[str, Option] = {o.name: o for o in [
    # ---------------------------------------------------------------- task, data and run folder
    O("dataset", Choice(_tasks), "rocstories", "the task, by the paper's name; the files each expects are listed "
      "below", math=True),
    O("data_dir", PATH, "data/", "folder holding the dataset's files", math=True),
    O("desc", RunName, None, "run name: every file of the run goes to <runs_dir>/<desc>/ (default: the dataset's "
      "name)"),
    O("runs_dir", OutFolder, "runs/", "where run folders live: <desc>/ holds log.jsonl, config.json, model/ (the best "
      "model), checkpoints/ and the predictions"),
    O("overwrite", Flag(), False, "reuse a run folder whose files exist: they are deleted once every input has been "
      "checked (without it such a run is refused before anything is written)"),
    O("log_dir", OutFolder, None, "the seed's layout: the log at <log_dir>/<desc>.jsonl instead of the run folder"),
    O("save_dir", OutFolder, None, "the seed's layout: config.json and the model in <save_dir>/<desc>/ instead of the "
      "run folder"),
    O("submission_dir", OutFolder, None, "the seed's layout: the test predictions in this folder instead of "
      "<run>/submission/ (shared by runs: an existing file there needs --overwrite)"),
    O("cache_dir", OutFolder, None, "cache of encoded datasets, keyed by the bytes of the data and vocabulary files "
      "(default $XDG_CACHE_HOME/gpt1_fast or ~/.cache/gpt1_fast; 'none' disables it)"),
    O("submit", Flag(), False, "write the predictions of the best model for the test split(s) (the files a "
      "benchmark's server takes) and the validation split(s)"),
    O("analysis", Flag(), False, "print the best validation score(s) and the score of every labelled test split "
      "(needs --submit)"),
    O("n_valid", Int(1), 374, "ROCStories: stories held out of the val file for validation; every task: the first "
      "n_valid training examples are scored at each evaluation", math=True),
    O("padding", Choice(("batch", "pow2", "global")), "batch", "batch: each batch padded to its own longest "
      "sequence, rounded up to a multiple of 8; pow2: rounded up to a power of two (few static shapes for "
      "--compile); global: every batch to the fitted n_ctx, as the release. Exact whichever", math=True),
    O("stsb_objective", Choice(("soft_labels", "regression")), "soft_labels", "STS-B only: soft_labels trains "
      "6 classes 0..5 against the score's two-class encoding and predicts the expected class, as the TF release; "
      "regression: one output, squared error", math=True),
    O("diagnostic", PATH, None, "MNLI only: GLUE's diagnostic.tsv; the model's predictions on it are the "
      "submission's AX.tsv (with --submit)"),
    # ----------------------------------------------------------------------------- the model
    O("n_ctx", Int(6), None, "context length cap, in tokens (default: 512, or the model's positions if fewer; "
      "fine-tuning fits it to the data, a warning says how many tokens a smaller cap cuts)", math=True),
    O("n_embd", Int(1), None, "width, a multiple of --n_head (default: the model's; 768, GPT-1's, from scratch)",
      math=True),
    O("n_head", Int(1), None, "attention heads, dividing --n_embd (default: the model's; 12 from scratch)",
      math=True),
    O("n_layer", Int(1), None, "blocks (default: the model's; 12 from scratch)", math=True),
    O("embd_pdrop", PROB, 0.1, "embedding dropout, in [0, 1)", math=True),
    O("attn_pdrop", PROB, 0.1, "attention-weight dropout, in [0, 1)", math=True),
    O("resid_pdrop", PROB, 0.1, "residual dropout, in [0, 1)", math=True),
    O("clf_pdrop", PROB, 0.1, "classifier-input dropout, in [0, 1)", math=True),
    O("afn", Choice(("gelu", "relu", "swish")), None, "MLP activation (default: the model's; gelu from scratch)",
      math=True),
    O("model_dir", PATH, "model/", "the model: the release's model/ folder (params_shapes.json, params_0..9.npy, "
      "encoder_bpe_40000.json, vocab_40000.bpe), a transformers openai-gpt folder, a model folder this project "
      "wrote (pretrain's --out, a run folder or its model/), or a run's checkpoints/step_<N>.pt; it gives the "
      "shapes and the vocabulary", math=True),
    O("from_scratch", Flag(), False, "random initialisation instead of the model folder's weights", math=True),
    O("encoder_path", PATH, None, "BPE vocabulary json (default: the model folder's)"),
    O("bpe_path", PATH, None, "BPE merges file (default: the model folder's)"),
    O("n_transfer", Int(-1), 12, "pretrained blocks to load (-1: none)", math=True),
    O("init_from", PATH, None, "start from this model folder's weights (and vocabulary) instead of a random "
      "N(0, 0.02) initialisation", math=True),
    O("merges", Int(1), None, "learn a BPE vocabulary with this many merges from the training corpus (the paper: "
      "40000) instead of using the model folder's", math=True),
    # -------------------------------------------------------------------------- optimisation
    O("seed", Int(0, 2 ** 32 - 1), 42, "random seed", math=True),
    O("n_iter", Int(1), 3, "epochs", math=True),
    O("n_batch", Int(1), 64, "examples per update, over all processes (the TF release used 4 GPUs x 8 = 32, the "
      "PyTorch port 8)", math=True),
    O("micro_batch", Int(1), None, "sequences per forward pass per process; gradients are accumulated up to the "
      "batch (default: the whole per-process batch)"),
    O("epochs", Float(0.0, lo_open=True), 100.0, "passes over the training tokens"),
    O("max_steps", Int(1), None, "updates in all (overrides --epochs; may be raised when resuming, to train on)"),
    O("lr", Float(0.0), 6.25e-5, "peak learning rate (0: the weights stay)", math=True),
    O("lr_warmup", Float(0.0, 1.0, hi_open=True), 0.002, "warm-up, as a fraction of all updates", math=True),
    O("warmup_steps", Int(0), 2000, "linear warm-up from 0 over this many updates, then cosine to 0", math=True),
    O("lr_schedule", Choice(_schedules), "warmup_linear", "learning-rate schedule", math=True),
    O("l2", Float(0.0), 0.01, "decoupled weight decay on weights with more than one dimension", math=True),
    O("vector_l2", Flag(), False, "apply the weight decay to biases and gains too", math=True),
    O("opt", Choice(("adam",)), "adam", "optimizer: OpenAI's Adam with the weight-decay fix"),
    O("lm_coef", Float(0.0), 0.5, "weight of the auxiliary language-model loss, every task", math=True),
    O("b1", PROB, 0.9, "Adam beta1, in [0, 1)", math=True),
    O("b2", PROB, 0.999, "Adam beta2, in [0, 1)", math=True),
    O("e", Float(0.0, lo_open=True), 1e-8, "Adam epsilon", math=True),
    O("max_grad_norm", Float(0.0), 1.0, "clip all gradients together by their global L2 norm (0: no clipping)",
      math=True),
    # ---------------------------------------------------------------------------- hardware, speed
    O("device", Text("cpu, cuda or cuda:N"), None, "cpu, cuda or cuda:N (default: cuda when available)"),
    O("backend", Choice(("torch", "triton", "cpu", "auto")), "auto", "op implementation: torch (the reference "
      "math, op for op), triton (the fused GPU kernels), cpu (the same math through PyTorch's fused CPU "
      "LayerNorm, GELU and attention kernels, and an LM-head loss that multiplies only the non-padding rows; "
      "compiled, dropout masks Inductor vectorises; bf16 generation as a lean step on weights packed once), "
      "auto (triton on CUDA, cpu on a CPU)"),
    O("dtype", Choice(("auto", "fp32", "bf16")), "auto", "compute precision: bf16 autocast or fp32 (parameters "
      "and optimizer state stay fp32). auto: training in bf16 on CUDA, fp32 on a CPU (exact); evaluation, "
      "prediction and generation in bf16 on CUDA and on a CPU with native bf16 (AVX-512-BF16, AMX or Arm "
      "BF16), else fp32; fp32: the reference path everywhere"),
    O("compile", Toggle(), None, "torch.compile the training step's forward and loss (default: on for CUDA) and "
      "the evaluation/prediction forward (default: on a CPU when the evaluation repays the compilation, about "
      "85k tokens at GPT-1 size; padded to power-of-two widths, compiled once per process); --no-compile: eager"),
    O("activation_checkpointing", Flag(), False, "recompute each block's forward in backward instead of keeping "
      "its activations: much less memory for about a third more compute"),
    O("cuda_graphs", Flag(), False, "capture the whole training step (forward, backward, optimizer) in a CUDA "
      "graph per batch shape and replay it: no Python or launch cost per step (CUDA, one process; fine-tuning "
      "with --padding pow2 or global)"),
    O("n_batch_eval", Int(1), None, "examples per evaluation batch (default: twice the per-process batch)"),
    O("verbose", Flag(), True, "progress bars on a terminal"),
    # --------------------------------------------------------------- checkpoints, resume, logs
    O("save_every", Int(0), 0, "checkpoint (model, optimizer, loop state, RNG states) every N updates into "
      "<run>/checkpoints/ (0: none)"),
    O("keep", Int(1), 2, "newest checkpoints kept"),
    O("resume", Text("a checkpoint file"), None, "continue from the latest checkpoint in <run>/checkpoints/ (or "
      "from CKPT): the same final parameters as an uninterrupted run", nargs="?", const="latest", metavar="CKPT"),
    O("eval_every", Int(1), 1000, "validate every N updates and at the end"),
    O("eval_windows", Int(0), 256, "fixed validation windows, spread evenly over the val split (0: all)"),
    O("log_every", Int(1), 10, "log the training loss (the mean of the updates since) every N updates"),
    # ------------------------------------------------------------------------- pretraining data
    O("data", PATH, None, "text files, folders of them, or JSONL files with a 'text' field (a document each "
      "file or line; a single text file: its paragraphs, split at blank lines, or without a blank line its last "
      "--val_fraction of tokens is the validation text)", nargs="+", metavar="PATH"),
    O("out", OutFolder, None, "output folder: the model folder, log.jsonl, loss.png, checkpoints/", metavar="DIR"),
    O("tokens_dir", OutFolder, None, "where the encoded token files go (default <out>/data)"),
    O("val_fraction", Float(0.0, 1.0, lo_open=True, hi_open=True), 0.01, "share of documents held out for "
      "validation", math=True),
    O("workers", Int(1), None, "encoding processes (default: one per CPU core)"),
    O("quiet", Flag(), False, "no progress bars"),
    # ------------------------------------------------------------------------- synthetic data
    O("n", Int(1), 1871, "stories in the val file (the real one has 1871)"),
    O("n_test", Int(1), None, "stories in the test file (default: --n)"),
    # ------------------------------------------------------------------------------- generation
    O("prompt", Text("a non-empty prompt"), None, "beginning words (repeatable: prompts are generated together)",
      append=True),
    O("prompt_file", PATH, None, "a UTF-8 text file with one prompt per line (blank lines skipped)"),
    O("num_samples", Int(1), 1, "samples per prompt"),
    O("max_new_tokens", Int(0), 20, "new tokens per sample (--gen_len: the port's name)", aliases=("--gen_len",)),
    O("top_k", Int(0), 10, "sample from the k most likely tokens (0: all)", aliases=("--topk",)),
    O("top_p", Float(0.0, 1.0, lo_open=True), 1.0, "nucleus sampling: the most likely tokens up to this mass "
      "(1: off)"),
    O("temperature", Float(0.0, lo_open=True), 1.0, "divide the logits by this before sampling"),
    O("greedy", Flag(), False, "always take the most likely token (no sampling)"),
    O("stop", Text("a non-empty stop string"), None, "stop a sample when it produces this text (repeatable; "
      "matched on its BPE tokens, not included)", append=True),
    O("sliding", Flag(), False, "at n_ctx, continue on the last n_ctx/2 tokens re-encoded from position 0 (not "
      "what the model was trained for); default: stop there"),
    # ------------------------------------------------------------------- evaluation of a model
    O("split", Text("a split name"), None, "the dataset's split (default: its validation split)"),
    O("limit", Int(1), None, "score the first N examples only"),
    O("predictions", OutFile, None, "where the predictions go (index<TAB>prediction, the dataset's label names; "
      "default: standard output)"),
    O("checkpoints", PATH, None, "a pretraining run's folder: score every one of its checkpoints "
      "(checkpoints/step_<N>.pt), one JSON line each", metavar="RUN"),
    O("scores", OutFile, None, "a JSONL file of the scores, one line per model or checkpoint (default with "
      "--checkpoints: RUN/zeroshot.jsonl)"),
    O("plot", OutFile, None, "draw Figure 2 (right) from the scores: each dataset's score over updates, from chance "
      "(0) to --best (1)", metavar="PNG"),
    O("best", Text("DATASET=SCORE"), None, "the score that is 1 on a dataset's curve, e.g. sst-2=91.3 "
      "(repeatable; --plot needs one per dataset drawn)", append=True, metavar="DATASET=SCORE"),
]}


# ------------------------------------------------------------------------------------ entry points
@dataclass(frozen=True)
class Entry:
    """An entry point: its options by --help group, the defaults that differ from the table's, the
    options it requires, the options whose accepted values it narrows (same meaning, fewer values:
    zero-shot evaluation takes four of the datasets; `plot --out` is a file, not a folder), and the
    help texts that say what an option holds for this entry point (`--out`: pretraining's folder, the
    vocabulary's, the synthetic data's)."""
    name: str
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    defaults: dict = field(default_factory=dict)
    required: tuple[str, ...] = ()
    kinds: dict = field(default_factory=dict)
    helps: dict = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for _, names in self.groups for n in names)

    def default(self, name: str):
        return self.defaults.get(name, OPTIONS[name].default)

    def option(self, name: str) -> Option:
        opt = OPTIONS[name]
        return dataclasses.replace(opt, kind=self.kinds.get(name, opt.kind), help=self.helps.get(name, opt.help))

    def math_names(self) -> tuple[str, ...]:
        """The options whose values a resume checkpoint must match."""
        return tuple(n for n in self.names if OPTIONS[n].math)


MODEL = ("n_ctx", "n_embd", "n_head", "n_layer", "embd_pdrop", "attn_pdrop", "resid_pdrop", "afn")
ADAM = ("l2", "vector_l2", "b1", "b2", "e", "max_grad_norm")
HARDWARE = ("device", "backend", "dtype", "compile", "activation_checkpointing")
FINETUNE_MODEL = MODEL + ("clf_pdrop", "model_dir", "from_scratch", "encoder_path", "bpe_path", "n_transfer")
FINETUNE_OPTIM = ("seed", "n_iter", "n_batch", "lr", "lr_warmup", "lr_schedule", "lm_coef") + ADAM

TRAIN = Entry("train", (
    ("task and run folder", ("dataset", "data_dir", "desc", "runs_dir", "overwrite", "log_dir", "save_dir",
                             "submission_dir", "cache_dir", "submit", "analysis", "n_valid", "padding",
                             "stsb_objective", "diagnostic")),
    ("model", FINETUNE_MODEL),
    ("optimisation (defaults: the paper's fine-tuning recipe)", FINETUNE_OPTIM + ("opt",)),
    ("hardware and speed", HARDWARE + ("cuda_graphs", "n_batch_eval")),
    ("logs and checkpoints", ("log_every", "save_every", "keep", "resume")),
))
PRETRAIN = Entry("pretrain", (
    ("data", ("data", "out", "tokens_dir", "val_fraction", "workers")),
    ("vocabulary and initial weights", ("model_dir", "encoder_path", "bpe_path", "merges", "init_from")),
    ("model (defaults: GPT-1)", MODEL),
    ("optimisation (defaults: the paper's pretraining recipe)", ("seed", "n_batch", "micro_batch", "epochs",
                                                                  "max_steps", "lr", "warmup_steps") + ADAM),
    ("evaluation, logs, checkpoints", ("eval_every", "eval_windows", "log_every", "save_every", "keep", "resume")),
    ("hardware and speed", HARDWARE + ("cuda_graphs",)),
), defaults=dict(lr=2.5e-4, seed=0, save_every=1000), required=("data", "out"))
GENERATE = Entry("generate", (
    ("prompts and sampling", ("prompt", "prompt_file", "num_samples", "max_new_tokens", "top_k", "top_p",
                              "temperature", "greedy", "stop", "sliding", "seed")),
    ("model", ("model_dir", "from_scratch", "encoder_path", "bpe_path", "n_ctx", "n_embd",
               "n_head", "n_layer", "afn")),
    ("hardware", ("device", "backend", "dtype")),
), defaults=dict(seed=0))
PREDICT = Entry("predict", (
    ("model", ("model_dir",)),
    ("data: a file, or a dataset's split", ("data", "dataset", "data_dir", "split", "limit")),
    ("output", ("predictions",)),
    ("hardware and speed", ("device", "backend", "dtype", "compile", "n_batch_eval")),
), defaults=dict(dataset=None, data_dir=None))
ZEROSHOT = Entry("zeroshot", (
    ("model", ("model_dir", "checkpoints")),
    ("data", ("dataset", "data_dir", "split", "limit")),
    ("output", ("scores", "plot", "best")),
    ("hardware", ("device", "backend", "n_batch_eval")),
), defaults=dict(model_dir=None, dataset=None), required=("dataset", "data_dir"),
    kinds=dict(dataset=Choice(("sst-2", "cola", "race", "dprd"))))
VOCAB = Entry("vocab", (
    ("inputs and output", ("data", "merges", "out", "overwrite", "quiet")),
), defaults=dict(merges=40000), required=("data", "out"), helps=dict(
    data="text files (one document each), folders (every *.txt and *.jsonl under them, sorted) or JSONL files "
         "(one document per line, a JSON object with a \"text\" field)",
    merges="BPE merges to learn (the paper: 40000); fewer are written when the texts run out of pairs. The "
           "vocabulary has about 2 x characters + N + 2 entries and must stay below 65,536 ids for pretraining's "
           "uint16 token files",
    out="folder for encoder_bpe_40000.json and vocab_40000.bpe (created if missing; use it as --model_dir)",
    overwrite="replace a vocabulary already in --out (refused otherwise: encoded data and models made with it "
              "would no longer match)"))
PLOT = Entry("plot", (("output", ("out",)),), kinds=dict(out=OutFile),
             helps=dict(out="the PNG to write (default: the log's path with .png)"))
SYNTHETIC = Entry("synthetic", (("output", ("out", "n", "n_test", "seed", "overwrite")),),
                  defaults=dict(seed=0), required=("out",), helps=dict(
    out="folder for the two Story Cloze CSVs (created if missing)",
    seed="generator seed (the files are a function of it and of --n, --n_test)",
    overwrite="replace the CSVs already in --out (refused otherwise)"))
ESTIMATOR = Entry("estimator", (
    ("model", FINETUNE_MODEL),
    ("optimisation", FINETUNE_OPTIM + ("n_valid", "padding")),
    ("hardware and speed", HARDWARE + ("n_batch_eval", "verbose")),
))


# ---------------------------------------------------------------------------------------- parsing
def build_parser(entry: Entry, prog: str, description: str = "", epilog: str = "") -> Parser:
    p = Parser(prog=prog, description=description, epilog=epilog,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    for title, names in entry.groups:
        g = p.add_argument_group(title)
        for n in names:
            add_option(g, entry.option(n), entry.default(n), required=n in entry.required)
    return p


def cli_name(n: str) -> str:
    return f"--{n}"


def keyword_name(n: str) -> str:
    return n


def check(entry: Entry, values: dict) -> argparse.Namespace:
    """Estimator keywords -> a Namespace of checked values; a bad one is a UsageError (a ValueError)
    naming the keyword: `attn_pdrop: expected a number in [0, 1), got 1.5`."""
    unknown = sorted(set(values) - set(entry.names))
    if unknown:
        raise UsageError(f"unknown keyword {unknown[0]!r}; expected one of {', '.join(entry.names)}")
    out = {}
    for n in entry.names:
        v = values.get(n, entry.default(n))
        try:
            out[n] = entry.option(n).convert(v, entry.default(n))
        except ValueError as e:
            raise UsageError(f"{n}: {e}") from None
    args = argparse.Namespace(**out)
    validate(entry, args, keyword_name)
    return args


def validate(entry: Entry, args, name=cli_name):
    """The checks between options and with the environment (no file is read): raises UsageError
    naming the option(s). Returns the device the run will use."""
    have = set(entry.names)
    if {"n_embd", "n_head"} <= have and None not in (args.n_embd, args.n_head) and args.n_embd % args.n_head:
        raise UsageError(f"{name('n_head')}: {args.n_head} does not divide {name('n_embd')} {args.n_embd} (the width "
                         "is split evenly over the heads)")
    if "analysis" in have and args.analysis and not args.submit:
        raise UsageError(f"{name('analysis')}: it reads the predictions on the test split: pass {name('submit')} too")
    if {"merges", "init_from"} <= have and args.merges is not None and (args.init_from or args.encoder_path):
        raise UsageError(f"{name('merges')}: it learns a new vocabulary, which cannot be combined with "
                         f"{name('init_from')} or {name('encoder_path')} (their weights and ids belong to another "
                         "vocabulary)")
    if "diagnostic" in have and args.diagnostic is not None and args.dataset != "mnli":
        raise UsageError(f"{name('diagnostic')}: GLUE's diagnostic set is scored by the MNLI model (--dataset mnli), "
                         f"not by {args.dataset}")
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's processes share each batch
    if "n_batch" in have and args.n_batch % world:
        raise UsageError(f"{name('n_batch')}: {args.n_batch} must be divisible by the {world} processes")
    if "micro_batch" in have and args.micro_batch is not None and (args.n_batch // world) % args.micro_batch:
        raise UsageError(f"{name('micro_batch')}: {args.micro_batch} must divide the per-process batch "
                         f"{args.n_batch // world}")
    device = check_device(args.device, name) if "device" in have else None
    if "backend" in have:
        check_backend(args.backend, device, name)
    if "cuda_graphs" in have and args.cuda_graphs:
        from .graphs import unsupported_reason

        why = unsupported_reason(device, getattr(args, "padding", "global"), world)
        if why:
            raise UsageError(f"{name('cuda_graphs')}: {why}")
    return device


def parse(entry: Entry, parser: Parser, argv=None) -> argparse.Namespace:
    """Parse a command line and validate it: every mistake is one `error:` line, exit code 2."""
    args = parser.parse_args(argv)
    try:
        validate(entry, args)
    except UsageError as e:
        parser.error(f"argument {e}")
    return args


def fingerprint(entry: Entry, args) -> dict:
    """The values of the options that change the math: what a resume checkpoint must match."""
    return {n: getattr(args, n) for n in entry.math_names()}
