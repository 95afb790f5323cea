"""The embedding table's layout, written once: tokens | specials | positions (SPEC §1, §3).

Row `i < n_vocab` is BPE token `i`; the next `len(specials)` rows are the task's special tokens
(`_start_`, `_delimiter_`, `_classify_` for the paper's tasks); the last `n_ctx` rows are the learned
positions, position `t` at row `pos_offset + t`. Data, model, weights, generation and a run's saved
config all read these numbers from one `EmbeddingLayout` instead of re-deriving them.
"""
from __future__ import annotations

from dataclasses import dataclass

N_VOCAB = 40478  # the release's BPE vocabulary
PAPER_SPECIALS = ("_start_", "_delimiter_", "_classify_")


@dataclass(frozen=True)
class EmbeddingLayout:
    n_vocab: int = N_VOCAB
    specials: tuple[str, ...] = PAPER_SPECIALS
    n_ctx: int = 512

    def __post_init__(self):
        object.__setattr__(self, "specials", tuple(self.specials))
        if self.n_vocab < 1 or self.n_ctx < 1:
            raise ValueError(f"n_vocab and n_ctx must be >= 1, got n_vocab={self.n_vocab}, n_ctx={self.n_ctx}")
        if len(set(self.specials)) != len(self.specials):
            raise ValueError(f"special tokens must be distinct, got {self.specials}")

    @property
    def n_special(self) -> int:
        return len(self.specials)

    @property
    def pos_offset(self) -> int:
        """Row of position 0."""
        return self.n_vocab + self.n_special

    @property
    def size(self) -> int:
        """Rows of the table (the model's `vocab` argument, the LM head's output width)."""
        return self.pos_offset + self.n_ctx

    def special(self, name: str) -> int:
        """Row of a special token, e.g. `layout.special("_classify_")`."""
        try:
            return self.n_vocab + self.specials.index(name)
        except ValueError:
            raise KeyError(f"no special token {name!r} in this layout; it has {list(self.specials)}") from None

    @property
    def start(self) -> int:
        return self.special("_start_")

    @property
    def delimiter(self) -> int:
        return self.special("_delimiter_")

    @property
    def clf(self) -> int:
        return self.special("_classify_")

    def position(self, t: int) -> int:
        if not 0 <= t < self.n_ctx:
            raise IndexError(f"position {t} outside the context of {self.n_ctx}")
        return self.pos_offset + t

    def with_n_ctx(self, n_ctx: int) -> "EmbeddingLayout":
        return EmbeddingLayout(self.n_vocab, self.specials, n_ctx)

    def to_dict(self) -> dict:
        return {"n_vocab": self.n_vocab, "specials": list(self.specials), "n_ctx": self.n_ctx,
                "pos_offset": self.pos_offset, "size": self.size}

    @classmethod
    def from_dict(cls, d: dict) -> "EmbeddingLayout":
        layout = cls(int(d["n_vocab"]), tuple(d["specials"]), int(d["n_ctx"]))
        for key in ("pos_offset", "size"):  # derived; a mismatch means the file was edited by hand
            if key in d and int(d[key]) != getattr(layout, key):
                raise ValueError(f"embedding layout: {key} {d[key]} does not match n_vocab {layout.n_vocab} + "
                                 f"{layout.n_special} specials (+ n_ctx {layout.n_ctx}) = {getattr(layout, key)}")
        return layout
