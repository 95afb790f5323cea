"""Nothing lost, every mistake one clear line: damaged cache files, --help of every entry point."""
from __future__ import annotations

import importlib
import pkgutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import gpt1_fast
from gpt1_fast import data, synthetic


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
