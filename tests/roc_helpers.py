"""The release's ROCStories array code, for tests that hold the task layer to it: the n_ctx rule and
the array-form transform of the seed (training uses tasks.multiple_choice through tasks.DatasetTask)."""
from __future__ import annotations

import numpy as np

from gpt1_fast.layout import PAPER_SPECIALS, EmbeddingLayout
from gpt1_fast.tasks.common import Encoded, make_batch
from gpt1_fast.tasks.multiple_choice import transform


def context_length(splits, n_ctx: int) -> tuple[int, int]:
    """(max_len, n_ctx) of the original: max_len = n_ctx // 2 - 2; n_ctx = min(longest
    story[:max_len] + longer ending[:max_len] + 3 over every split, n_ctx). splits: (x1, x2, x3, ...)."""
    max_len = n_ctx // 2 - 2
    longest = max(len(x1[:max_len]) + max(len(x2[:max_len]), len(x3[:max_len]))
                  for split in splits for x1, x2, x3 in zip(*split[:3]))
    return max_len, min(longest + 3, n_ctx)


def transform_roc(X1, X2, X3, n_ctx: int, max_len: int, start: int, delimiter: int, clf_token: int,
                  pos_offset: int):
    """Two sequences per story, `[start] story [delimiter] ending [clf]`, zero-padded to n_ctx:
    X [N, 2, n_ctx, 2] int64 (token ids, position ids pos_offset + t), M [N, 2, n_ctx] float32.
    The seed's array form of tasks.multiple_choice's transform (which training uses)."""
    layout = EmbeddingLayout(start, PAPER_SPECIALS, 2 * max_len + 4)  # n_ctx // 2 - 2 == max_len
    if (layout.delimiter, layout.clf, layout.pos_offset) != (delimiter, clf_token, pos_offset):
        raise ValueError(f"special ids {start}, {delimiter}, {clf_token} and position offset {pos_offset} are not "
                         "the layout tokens | _start_ _delimiter_ _classify_ | positions")
    seqs = transform({"context": X1, "choices": list(zip(X2, X3))}, layout, keep_context_end=False)
    enc = Encoded.from_sequences(seqs, None, range(len(seqs)), n_ctx)
    X, M, _ = make_batch(enc, np.arange(len(seqs)), layout.with_n_ctx(n_ctx), "cpu", padding="global")
    return X.numpy(), M.numpy()
