"""Every command of README.md, run as the README gives it, in order, in one fresh working folder.

The commands are read from the README's ```bash and ```python blocks, so an edit of the README is
tested as it is written. Each `python -m gpt1_fast.<cmd>` line runs as `python -m` runs it (runpy,
this interpreter) with the README's own arguments and a few appended to keep it small (argparse:
the last occurrence of a flag wins; `SMALL` below), on tiny stand-ins in the documented layout:
model/ is a release-format folder of a 1-layer model with a BPE vocabulary learned here under the
release's file names; books/, corpus/, papers/, more.jsonl, corpus.txt, reviews.txt, glue/SST-2/ are
small files; data/ is written by the README's own `synthetic` line. What cannot run here is skipped
with its reason: installs (make, pip), several processes (torchrun), benchmarks, and code that needs
the release's GPT-1 weights.
"""
from __future__ import annotations

import ast
import io
import re
import runpy
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("spacy")
pytest.importorskip("ftfy")
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules after import:RuntimeWarning")  # runpy

ROOT = Path(__file__).resolve().parents[1]
SHAPE = ["--n_layer", "1", "--n_embd", "48", "--n_head", "12"]  # the stand-in model/ (the release's 12 heads)
SMALL = {  # appended to each command of the module (a README value is overridden, its other flags kept)
    "train": ["--n_iter", "1", "--n_batch", "8", "--n_valid", "16", "--device", "cpu", "--cache_dir", "cache"],
    "pretrain": ["--n_batch", "2", "--n_ctx", "16", "--workers", "1", "--eval_every", "2", "--save_every", "2",
                 "--warmup_steps", "1", "--device", "cpu"],
    "generate": ["--max_new_tokens", "3", "--device", "cpu"],
    "predict": ["--device", "cpu"],
    "zeroshot": ["--limit", "4", "--device", "cpu"],
    "synthetic": ["--n", "100", "--n_test", "40"],
    "demo": ["--n_stories", "60", "--n_merges", "40", "--n_iter", "1", "--n_valid", "12"],
    "vocab": ["--quiet"],
}
SKIP = {  # first word(s) -> why the command does not run here
    "make": "make creates .venv and installs from the network; what `make demo` runs, `python -m gpt1_fast.demo`, "
            "is a README command of its own",
    "pip": "installs packages from an index (the extras it names are checked against setup.py)",
    "torchrun": "starts several processes (DDP is tested in tests/test_train_cli.py)",
    "python -m benchmarks": "benchmarks measure; they are not tests",
}
RELEASE_WEIGHTS = "needs the release's GPT-1 weights (model/, 768 wide, 40,478 tokens), not downloadable here"


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced code block of README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)


def readme_commands() -> list[tuple[str, object]]:
    """(id, command): a bash line as a list of words, or a python block as its text."""
    out = []
    for lang, body in readme_blocks():
        if lang == "bash":
            for line in body.splitlines():
                words = shlex.split(line, comments=True)
                if words:
                    out.append((" ".join(words)[:90], words))
        elif lang == "python":
            out.append((body.splitlines()[1][:90], body))
    return out


COMMANDS = readme_commands()


def skip_reason(cmd) -> str | None:
    if isinstance(cmd, str):
        return RELEASE_WEIGHTS if "load_openai_pretrained_model(model, path=\"model/\")" in cmd else None
    line = " ".join(cmd)
    return next((why for start, why in SKIP.items() if line.startswith(start)), None)


# --------------------------------------------------------------------------------- the stand-ins
def fake_release(folder: Path, n_vocab: int, n_embd=48, n_layer=1, n_pos=128) -> None:
    """A release-format model/ folder (params_shapes.json + params_0..9.npy) of a tiny model."""
    import json

    shapes = [[n_pos, n_embd], [n_vocab, n_embd]]
    for _ in range(n_layer):
        shapes += [[1, n_embd, 3 * n_embd], [3 * n_embd], [1, n_embd, n_embd], [n_embd], [n_embd], [n_embd],
                   [1, n_embd, 4 * n_embd], [4 * n_embd], [1, 4 * n_embd, n_embd], [n_embd], [n_embd], [n_embd]]
    flat = (np.random.RandomState(0).randn(sum(int(np.prod(s)) for s in shapes)) * 0.02).astype(np.float32)
    (folder / "params_shapes.json").write_text(json.dumps(shapes))
    for i, part in enumerate(np.array_split(flat, 10)):
        np.save(folder / f"params_{i}.npy", part)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import json

    from fixtures_tasks import write_fixture
    from gpt1_fast.synthetic import story_rows
    from gpt1_fast.text import learn_bpe

    w = tmp_path_factory.mktemp("readme")
    stories = [" ".join(r[1:6]) for r in story_rows(200, seed=3)]
    glue = write_fixture("sst-2", w / "glue" / "SST-2", n_rows=48, seed=0, n_eval=16)
    sentences = [line.split("\t")[0] for line in (glue / "train.tsv").read_text().splitlines()[1:]]
    (w / "model").mkdir()
    vocab = learn_bpe(stories + sentences, 300, w / "model" / "encoder_bpe_40000.json", w / "model" / "vocab_40000.bpe")
    fake_release(w / "model", len(vocab))
    for name, texts in (("books", stories[:60]), ("papers", stories[60:90]), ("corpus", stories[90:150])):
        (w / name).mkdir()
        for i in range(0, len(texts), 10):
            (w / name / f"{i:03d}.txt").write_text("\n\n".join(texts[i:i + 10]) + "\n", encoding="utf-8")
    (w / "more.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in stories[150:]), encoding="utf-8")
    (w / "corpus.txt").write_text("\n\n".join(stories), encoding="utf-8")
    (w / "reviews.txt").write_text("\n".join(sentences[:10]) + "\n", encoding="utf-8")
    return w


def small(cmd: list[str]) -> list[str]:
    """The command with SMALL's arguments appended (a from-scratch pretraining also gets SHAPE)."""
    module = cmd[2].removeprefix("gpt1_fast.")
    extra = list(SMALL.get(module, []))
    if module == "pretrain":
        extra += ["--max_steps", "4" if "--resume" in cmd else "2"] + ([] if "--init_from" in cmd else SHAPE)
        extra += ["--merges", "60"] if "--merges" in cmd else []
    if module == "vocab":
        extra += ["--merges", "60"]
    return [*cmd[3:], *extra]


def run_module(module: str, argv: list[str], stdin: str = "") -> None:
    """`python -m module argv` in this process; a non-zero exit fails the test with its output."""
    old_argv, old_stdin = sys.argv, sys.stdin
    sys.argv, sys.stdin = [module, *argv], io.StringIO(stdin)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        assert e.code in (None, 0), f"{module} {' '.join(argv)}: exit {e.code}"
    finally:
        sys.argv, sys.stdin = old_argv, old_stdin


# ----------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("cmd", [c for _, c in COMMANDS], ids=[i for i, _ in COMMANDS])
def test_readme_command(cmd, world, monkeypatch, capsys):
    why = skip_reason(cmd)
    if why:
        pytest.skip(why)
    monkeypatch.chdir(world)
    if isinstance(cmd, str):  # a python block: the names it leaves to the reader, small
        texts = [f"a {'good' if i % 2 else 'bad'} film number {i}" for i in range(64)]
        scope = dict(texts=texts, labels=[i % 2 for i in range(64)], val_texts=texts[:8],
                     val_labels=[i % 2 for i in range(8)])
        exec(compile(cmd, "README.md", "exec"), scope)
        return
    assert cmd[:2] == ["python", "-m"] and cmd[2].startswith("gpt1_fast."), f"not a command this test knows: {cmd}"
    interactive = cmd[2] == "gpt1_fast.generate" and not {"--prompt", "--prompt_file"} & set(cmd)
    run_module(cmd[2], small(cmd), stdin="The dog ran\nq\n" if interactive else "")
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" not in err, err


def test_readme_has_commands_and_every_install_extra_exists():
    """The README's pip lines name extras that setup.py defines; `.[all]` brings every package the
    runs check for (gpt1_fast.deps)."""
    from gpt1_fast.deps import GROUPS

    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    scope: dict = {}
    for node in tree.body:  # EXTRAS = {...}; EXTRAS["all"] = ...: evaluated from the literals
        if isinstance(node, ast.Assign) and "EXTRAS" in ast.unparse(node.targets[0]):
            exec(compile(ast.Module([node], []), "setup.py", "exec"), scope)
    extras = scope["EXTRAS"]
    assert len(COMMANDS) >= 20 and any(c[:3] == ["python", "-m", "gpt1_fast.train"] for _, c in COMMANDS)
    named = {x for _, c in COMMANDS if isinstance(c, list) and c[0] == "pip" for w in c
             for group in re.findall(r"\.\[([\w,]+)\]", w) for x in group.split(",")}
    assert named and named <= set(extras), named - set(extras)
    every = {re.split(r"[<>=]", p)[0].lower() for p in extras["all"]}
    for extra, packages in GROUPS.values():
        assert {p.lower() for p in packages.values()} <= every and set(packages.values()) <= {
            re.split(r"[<>=]", p)[0] for p in extras[extra]}, extra
