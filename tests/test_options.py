"""The option schema (gpt1_fast.options): every option has one range check, the same in every entry
point that takes it (the train, pretrain and generate command lines, the estimators' keywords); a bad
value is one line naming the flag (exit code 2) or a ValueError naming the keyword, before anything is
written; the fingerprint reads the options marked as changing the math."""
from __future__ import annotations

import math

import pytest

from gpt1_fast import cli, options
from gpt1_fast.errors import UsageError

ENTRIES = (options.TRAIN, options.PRETRAIN, options.GENERATE, options.PREDICT, options.ZEROSHOT, options.VOCAB,
           options.PLOT, options.SYNTHETIC, options.ESTIMATOR)
MODULES = {e.name: f"gpt1_fast.{e.name}" for e in ENTRIES if e.name != "estimator"}
REQUIRED = {"pretrain": ["--data", "corpus.txt", "--out", "out_dir"],  # parsing only: never read
            "zeroshot": ["--dataset", "sst-2", "--data_dir", "glue/SST-2"],
            "vocab": ["--data", "corpus.txt", "--out", "vocab_dir"], "plot": ["log.jsonl"], "synthetic": ["--out", "data"]}


def bad_values(opt: cli.Option) -> list[str]:
    """Texts the option's kind must refuse."""
    k = opt.kind
    if isinstance(k, cli.Flag):
        return []
    if isinstance(k, cli.Int):
        return [str(k.lo - 1), "1.5", "x"] + ([str(k.hi + 1)] if k.hi is not None else [])
    if isinstance(k, cli.Float):
        out = ["nan", "inf", "x"]
        if math.isfinite(k.lo):
            out.append(repr(k.lo) if k.lo_open else repr(k.lo - 1))
        if math.isfinite(k.hi):
            out.append(repr(k.hi) if k.hi_open else repr(k.hi + 1))
        return out
    if isinstance(k, cli.Choice):
        return ["nonsense"]
    return [""] + (["../elsewhere"] if k is cli.RunName else [])


def parse_error(entry, argv, capsys) -> str:
    import importlib

    p = importlib.import_module(MODULES[entry.name]).build_parser()
    with pytest.raises(SystemExit) as e:
        options.parse(entry, p, REQUIRED.get(entry.name, []) + argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    return err


CASES = [(e.name, name, text) for e in ENTRIES for name in e.names for text in bad_values(e.option(name))]


def test_every_declared_option_is_taken_by_an_entry_point():
    taken = {n for e in ENTRIES for n in e.names}
    assert set(options.OPTIONS) == taken, set(options.OPTIONS) ^ taken


@pytest.mark.parametrize("entry_name, name, text", CASES, ids=[f"{e}:{n}={t!r}" for e, n, t in CASES])
def test_one_range_check_everywhere(entry_name, name, text, capsys):
    entry = next(e for e in ENTRIES if e.name == entry_name)
    opt = entry.option(name)
    want = f"expected {opt.kind.want}, got {text!r}"
    for entry in [entry]:
        if entry.name == "estimator":
            value = text if isinstance(opt.kind, (cli.Choice, cli.Text)) else _python_value(text)
            with pytest.raises(UsageError) as e:
                options.check(entry, {name: value})
            assert str(e.value).startswith(f"{name}: expected {opt.kind.want}, got "), e.value
        else:
            err = parse_error(entry, [f"--{name}", text], capsys)
            flags = "/".join([f"--{name}", *opt.aliases])  # argparse names a flag with its aliases
            assert f"argument {flags}: {want}" in err, (entry.name, err)


def _python_value(text):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_width_must_split_over_the_heads_everywhere(entry, capsys):
    values = {"n_embd": 64, "n_head": 5}
    if "n_head" not in entry.names:
        return
    if entry.name == "estimator":
        with pytest.raises(UsageError, match="^n_head: 5 does not divide n_embd 64"):
            options.check(entry, values)
    else:
        err = parse_error(entry, ["--n_embd", "64", "--n_head", "5"], capsys)
        assert "argument --n_head: 5 does not divide --n_embd 64" in err


def test_estimator_keywords_are_checked_as_values():
    ok = options.check(options.ESTIMATOR, {"lr": 1, "n_batch": 8, "device": "cpu"})
    assert ok.lr == 1.0 and isinstance(ok.lr, float) and ok.n_batch == 8
    for values, want in [({"n_batch": True}, "n_batch: expected an integer >= 1, got True"),
                         ({"attn_pdrop": 1.5}, "attn_pdrop: expected a number in [0, 1), got 1.5"),
                         ({"lr": None}, "lr: expected a number >= 0, got None"),
                         ({"compile": "yes"}, "compile: expected True, False or None"),
                         ({"nope": 1}, "unknown keyword 'nope'")]:
        with pytest.raises(UsageError) as e:
            options.check(options.ESTIMATOR, values)
        assert str(e.value).startswith(want), e.value
    assert options.check(options.ESTIMATOR, {"n_batch_eval": None}).n_batch_eval is None  # its default


def test_entry_defaults_are_declared_options_and_math_marks_feed_the_fingerprint():
    for entry in ENTRIES:
        assert set(entry.defaults) <= set(entry.names), entry.name
        assert len(set(entry.names)) == len(entry.names), entry.name  # each option once per entry point
    assert options.PRETRAIN.default("lr") == 2.5e-4 and options.TRAIN.default("lr") == 6.25e-5
    args = options.check(options.ESTIMATOR, {})
    fp = options.fingerprint(options.ESTIMATOR, args)
    assert {"lr", "n_batch", "seed", "lm_coef", "max_grad_norm"} <= set(fp)
    assert not {"device", "verbose", "n_batch_eval", "compile"} & set(fp)  # how, not what, is computed


def test_every_flag_of_every_command_has_help():
    import importlib

    for module in MODULES.values():
        p = importlib.import_module(module).build_parser()
        for action in p._actions:
            assert action.help and "SPEC" not in action.help and "§" not in action.help, (module, action.dest)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if "data" in e.names and e.name != "estimator"],
                         ids=lambda e: e.name)
def test_a_list_flag_given_twice_keeps_both(entry):
    """`--data A --data B` is `--data A B` (argparse alone would keep B and drop A without a word)."""
    import importlib

    p = importlib.import_module(MODULES[entry.name]).build_parser()
    required = REQUIRED.get(entry.name, [])  # pretrain, vocab: `--data corpus.txt --out DIR` already
    first = required[required.index("--data") + 1:][:1] if "--data" in required else []
    args = p.parse_args(required + ["--data", "a.txt", "--data", "b.txt", "c.txt"])
    assert args.data == first + ["a.txt", "b.txt", "c.txt"]
    if not required:
        assert p.parse_args([]).data is None


def test_predict_refuses_two_data_files_given_as_two_flags(tmp_path, capsys):
    from gpt1_fast import predict

    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("some text\n")
    with pytest.raises(SystemExit) as e:
        predict.cli(["--model_dir", str(tmp_path), "--data", str(tmp_path / "a.txt"), "--data", str(tmp_path / "b.txt")])
    assert e.value.code == 2 and "argument --data: one file or folder, got 2" in capsys.readouterr().err
