"""python -m gpt1_fast.vocab: a small corpus -> the release's two files, loaded by TextEncoder, text
round-trips; bad input is one `error:` line; an existing vocabulary is never replaced silently."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("spacy")
pytest.importorskip("ftfy")

from gpt1_fast.synthetic import story_rows  # noqa: E402
from gpt1_fast.text import TextEncoder, learn_bpe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    """The command in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gpt1_fast.vocab", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)


def run_here(capsys, *args):
    """The same command in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    from gpt1_fast import vocab

    try:
        vocab.cli([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("c")
    rows = story_rows(30, seed=1)
    (d / "books").mkdir()
    for i, r in enumerate(rows[:10]):
        (d / "books" / f"{i:02d}.txt").write_text(" ".join(r[1:6]) + "\n", encoding="utf-8")
    with open(d / "more.jsonl", "w", encoding="utf-8") as f:
        for r in rows[10:]:
            f.write(json.dumps({"text": " ".join(r[1:5]) + " \u201cOK\u201d \u2014 fine\u2026"}) + "\n")
    return d


def test_vocab_command_loads_and_round_trips(tmp_path, small_corpus, capsys):
    out = tmp_path / "vocab"
    r = run("--data", small_corpus / "books", small_corpus / "more.jsonl", "--merges", "150", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["encoder_bpe_40000.json", "vocab_40000.bpe"]
    assert "150 merges" in r.stdout and f"--model_dir {out}" in r.stdout
    lines = (out / "vocab_40000.bpe").read_text(encoding="utf-8").split("\n")
    assert lines[0].startswith("#version") and lines[-1] == "" and len(lines) == 152
    te = TextEncoder(out / "encoder_bpe_40000.json", out / "vocab_40000.bpe")
    text = story_rows(30, seed=1)[3][1]
    ids = te.encode([text])[0]
    assert 0 not in ids and len(ids) < len("".join(te.pretokenize(text)))  # known pieces, merges used
    assert te.decode(ids) == " ".join(te.pretokenize(text))
    # Same as learn_bpe on the same documents, in the documented order (folder sorted, then JSONL).
    docs = [(small_corpus / "books" / f"{i:02d}.txt").read_text(encoding="utf-8") for i in range(10)]
    docs += [json.loads(line)["text"] for line in (small_corpus / "more.jsonl").read_text(encoding="utf-8").splitlines()]
    learn_bpe(docs, 150, tmp_path / "e.json", tmp_path / "m.bpe")
    assert (tmp_path / "e.json").read_bytes() == (out / "encoder_bpe_40000.json").read_bytes()
    assert (tmp_path / "m.bpe").read_bytes() == (out / "vocab_40000.bpe").read_bytes()
    # An existing vocabulary is refused without --overwrite, files untouched.
    before = (out / "vocab_40000.bpe").read_bytes()
    code, _, err = run_here(capsys, "--data", small_corpus / "books", "--merges", "20", "--out", out)
    assert code == 2 and err.startswith("error: argument --out") and "--overwrite" in err
    assert (out / "vocab_40000.bpe").read_bytes() == before
    code, _, _ = run_here(capsys, "--data", small_corpus / "books", "--merges", "20", "--out", out, "--overwrite",
                          "--quiet")
    assert code == 0 and len((out / "vocab_40000.bpe").read_text(encoding="utf-8").split("\n")) == 22


@pytest.mark.parametrize("args,code,message", [
    (["--merges", "0"], 2, "error: argument --merges: expected an integer >= 1, got '0'"),
    (["--merges", "x"], 2, "error: argument --merges: expected an integer >= 1, got 'x'"),
    (["--data", "MISSING.txt"], 1, "MISSING.txt: no such file or folder"),
    (["--data", "BAD"], 1, "bad.jsonl:2: bad JSON"),
    (["--data", "EMPTY"], 1, "empty.txt: no text to learn a vocabulary from"),
    (["--data", "BLANK"], 1, "blank.jsonl: no text to learn a vocabulary from"),
    (["--out", "FILE"], 2, "error: argument --out: expected a folder to write into, got"),
])
def test_bad_input_is_one_error_line(tmp_path, small_corpus, args, code, message, capsys):
    files = {"BAD": tmp_path / "bad.jsonl", "EMPTY": tmp_path / "empty.txt", "BLANK": tmp_path / "blank.jsonl",
             "FILE": tmp_path / "a_file"}
    files["BAD"].write_text('{"text": "fine"}\n{oops\n', encoding="utf-8")
    files["EMPTY"].write_text("", encoding="utf-8")
    files["BLANK"].write_text('{"text": "  "}\n\n{"text": "\\n"}\n', encoding="utf-8")
    files["FILE"].write_text("not a folder", encoding="utf-8")
    full = {"--data": [str(small_corpus / "books")], "--merges": ["10"], "--out": [str(tmp_path / "v")]}
    for i in range(0, len(args), 2):
        full[args[i]] = [str(files.get(args[i + 1], args[i + 1]))]
    got, _, err = run_here(capsys, *[x for k, v in full.items() for x in (k, *v)])
    assert got == code and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert not (tmp_path / "v").exists()


def test_help_names_the_module_form(capsys):
    code, out, _ = run_here(capsys, "--help")
    assert code == 0 and "python -m gpt1_fast.vocab" in out
    for flag in ("--data", "--merges", "--out", "--overwrite", "--quiet", "encoder_bpe_40000.json", "--model_dir"):
        assert flag in out
