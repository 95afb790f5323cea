import os
import pytest

from gpt1_fast.fileio import atomic_write, atomic_write_text, remove_stale_temporaries
from gpt1_fast.layout import EmbeddingLayout


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "a" / "f.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert os.listdir(p.parent) == ["f.txt"]


def test_atomic_write_failure_keeps_old_content_and_removes_temporary(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write(p, lambda f: f.write(b"old"), mode="wb")

    def boom(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(p, boom, mode="wb")
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_remove_stale_temporaries(tmp_path):
    (tmp_path / ".ckpt.pt.abc123.tmp").write_bytes(b"x")
    (tmp_path / "ckpt.pt").write_bytes(b"y")
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".ckpt.pt.abc123.tmp"]
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_layout_rows():
    lay = EmbeddingLayout(40478, ("_start_", "_delimiter_", "_classify_"), 77)
    assert (lay.start, lay.delimiter, lay.clf) == (40478, 40479, 40480)
    assert lay.pos_offset == 40481 and lay.size == 40481 + 77
    assert lay.position(0) == 40481 and lay.position(76) == 40557
    with pytest.raises(IndexError):
        lay.position(77)
    with pytest.raises(KeyError, match="_classify_"):
        EmbeddingLayout(10, ("_start_",), 4).clf
    assert EmbeddingLayout.from_dict(lay.to_dict()) == lay
    with pytest.raises(ValueError, match="pos_offset"):
        EmbeddingLayout.from_dict(dict(lay.to_dict(), pos_offset=5))


def test_atomic_write_gives_plain_file_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "new.txt", "x")
        assert p.stat().st_mode & 0o777 == 0o644  # as open() would, not mkstemp's 0o600
        os.chmod(p, 0o640)
        atomic_write_text(p, "y")
        assert p.stat().st_mode & 0o777 == 0o640  # an existing file keeps its mode
    finally:
        os.umask(old)


def test_interrupts_deferred_holds_ctrl_c_until_the_block_ends(tmp_path):
    """A model folder's files are written under interrupts_deferred: Ctrl-C during the writes lands after
    the last one (the folder is whole), then stops the run as usual."""
    import os
    import signal

    from gpt1_fast.fileio import atomic_write_text, interrupts_deferred

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever the runner was started with
    try:
        done = []
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                atomic_write_text(tmp_path / "a", "1")
                os.kill(os.getpid(), signal.SIGINT)  # arrives here, mid-block
                atomic_write_text(tmp_path / "b", "2")
                done.append(True)
        assert done and (tmp_path / "b").read_text() == "2"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
        # a process that ignores SIGINT (a job started in the background) still ignores it after the block
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done.append(True)
        assert done == [True, True] and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
