"""Nothing lost, every mistake one clear line: damaged cache files, --help of every entry point."""
from __future__ import annotations

import importlib
import pkgutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import gpt1_fast
from gpt1_fast import cli, data, synthetic


# ------------------------------------------------------------------------------ encoding cache
class CountingEncoder:
    """Stand-in encoder: one id per whitespace word; counts calls."""

    def __init__(self):
        self.calls, self.table = 0, {}

    def encode(self, texts, verbose=False):
        self.calls += 1
        return [[self.table.setdefault(w, len(self.table) + 1) for w in t.split()] for t in texts]


def _flip(offset):
    def damage(p: Path):
        b = bytearray(p.read_bytes())
        b[offset % len(b)] ^= 0xFF
        p.write_bytes(bytes(b))
    return damage


def _first_data_byte(p: Path) -> int:
    with zipfile.ZipFile(p) as z:
        info = z.infolist()[0]
    return info.header_offset + 30 + len(info.filename) + len(info.extra) + 64  # inside the .npy payload


def _wrong_lengths(p: Path):
    with np.load(p) as z:
        arrays = dict(z)
    arrays["l0"] = arrays["l0"][::-1].copy() + 1  # same count of stories, lengths no longer sum to the ids
    np.savez(p, **arrays)


DAMAGES = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(b"not a zip file at all" * 10),
    "crc": lambda p: _flip(_first_data_byte(p))(p),
    "missing_array": lambda p: np.savez(p, f0=np.zeros(3, np.int32)),
    "wrong_lengths": _wrong_lengths,
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_cache_is_named_deleted_and_rebuilt(tmp_path, capsys, damage):
    synthetic.write_rocstories(tmp_path / "d", n=30, n_test=8)
    csv_path, vocab, cache = tmp_path / "d" / data.VAL_FILE, tmp_path / "vocab.json", tmp_path / "cache"
    vocab.write_text("{}")
    enc = CountingEncoder()
    first = data.encode_csv(csv_path, enc, (vocab,), cache_dir=cache, verbose=False)
    cache_file, = cache.glob("*.npz")
    assert enc.calls == 3 and capsys.readouterr().err == ""

    DAMAGES[damage](cache_file)
    again = data.encode_csv(csv_path, enc, (vocab,), cache_dir=cache, verbose=False)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: damaged encoding cache file") and str(cache_file) in err[0], err
    assert enc.calls == 6  # encoded again
    assert again[:3] == first[:3] and np.array_equal(again[3], first[3])

    third = data.encode_csv(csv_path, enc, (vocab,), cache_dir=cache, verbose=False)  # the rebuilt file loads
    assert enc.calls == 6 and capsys.readouterr().err == "" and third[:3] == first[:3]
    assert sorted(p.name for p in cache.iterdir()) == [cache_file.name]  # no temporaries left


def test_any_flipped_byte_never_gives_wrong_ids(tmp_path, capsys):
    """Wherever the damage lands, the result is the true encoding: read back intact, or rebuilt."""
    synthetic.write_rocstories(tmp_path / "d", n=12, n_test=4)
    csv_path, vocab, cache = tmp_path / "d" / data.VAL_FILE, tmp_path / "vocab.json", tmp_path / "cache"
    vocab.write_text("{}")
    truth = data.encode_csv(csv_path, CountingEncoder(), (vocab,), cache_dir=cache, verbose=False)
    cache_file, = cache.glob("*.npz")
    size = cache_file.stat().st_size
    for offset in np.random.RandomState(0).randint(0, size, 40):
        good = cache_file.read_bytes()
        _flip(int(offset))(cache_file)
        got = data.encode_csv(csv_path, CountingEncoder(), (vocab,), cache_dir=cache, verbose=False)
        assert got[:3] == truth[:3], offset
        if capsys.readouterr().err == "":  # undetected: the flip hit bytes that do not carry ids
            cache_file.write_bytes(good)


# ------------------------------------------------------------------------------ --help forms
def _entry_modules():
    for m in pkgutil.walk_packages(gpt1_fast.__path__, "gpt1_fast."):
        spec = importlib.util.find_spec(m.name)
        origin = Path(spec.origin) if spec and spec.origin else None
        if origin and origin.suffix == ".py" and 'if __name__ == "__main__"' in origin.read_text(encoding="utf-8"):
            yield m.name


ENTRY_MODULES = sorted(set(_entry_modules()) | {"gpt1_fast.train", "gpt1_fast.generate", "gpt1_fast.demo",
                                                 "gpt1_fast.synthetic"})


@pytest.mark.parametrize("name", ENTRY_MODULES)
def test_help_names_the_python_m_form(name, capsys):
    mod = importlib.import_module(name)
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {name} "), out[:200]


# ------------------------------------------------------------------------------ text files
def test_non_utf8_csv_names_file_line_and_column(tmp_path):
    synthetic.write_rocstories(tmp_path, n=6, n_test=2)
    path = tmp_path / data.VAL_FILE
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3][:5] + b"\xe9" + lines[3][5:]  # Latin-1 e-acute on line 4, column 6
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(data.DataError) as e:
        data.read_rocstories_csv(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:4: expected UTF-8 text, found byte b'\\xe9' at column 6") and "\n" not in msg


def test_missing_csv_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        data.read_rocstories_csv(tmp_path / data.VAL_FILE)
    assert "\n" not in str(e.value) and "python -m gpt1_fast.synthetic" in str(e.value)


# ------------------------------------------------------------------------------ argument types
@pytest.mark.parametrize("typ, good, bad, want", [
    (cli.positive_int, [("1", 1), ("64", 64)], ["0", "-4", "1.5", "x"], "expected an integer >= 1"),
    (cli.int_at_least(-1), [("-1", -1), ("0", 0)], ["-2"], "expected an integer >= -1"),
    (cli.probability, [("0", 0.0), ("0.1", 0.1)], ["1", "1.5", "-0.1", "nan", "x"], "expected a number in [0, 1)"),
    (cli.positive_float, [("6.25e-5", 6.25e-5)], ["0", "-1", "inf"], "expected a number > 0"),
    (cli.nonnegative_float, [("0", 0.0)], ["-0.5"], "expected a number >= 0"),
    (cli.seed_int, [("0", 0), ("4294967295", 2 ** 32 - 1)], ["-1", "4294967296"], "expected an integer in [0, 4294967295]"),
])
def test_argument_types(typ, good, bad, want, capsys):
    p = cli.Parser(prog="python -m gpt1_fast.x")
    p.add_argument("--v", type=typ)
    for text, value in good:
        assert p.parse_args(["--v", text]).v == value
    for text in bad:
        with pytest.raises(SystemExit) as e:
            p.parse_args(["--v", text])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err == f"error: argument --v: {want}, got {text!r} (see python -m gpt1_fast.x --help)\n"


def test_device_and_backend_checks(capsys, monkeypatch):
    import torch

    p = cli.Parser(prog="python -m gpt1_fast.x")
    assert cli.check_device(p, "cpu") == torch.device("cpu")
    for spec, want in [("tpu", "expected cpu, cuda or cuda:N, got 'tpu'"), ("nonsense", "expected cpu, cuda")]:
        with pytest.raises(SystemExit):
            cli.check_device(p, spec)
        assert want in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            cli.check_device(p, "cuda")
        err = capsys.readouterr().err
        assert err.startswith("error: argument --device: 'cuda' is not available (") and "--device cpu" in err
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(SystemExit):
        cli.check_backend(p, "triton", torch.device("cpu"))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TRITON_INTERPRET=1" in err and "--backend torch" in err
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    cli.check_backend(p, "triton", torch.device("cpu"))  # the interpreter runs them
    cli.check_backend(p, "torch", torch.device("cpu"))
