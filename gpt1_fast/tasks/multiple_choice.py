"""Multiple choice (Story Cloze / ROCStories, RACE): `start context delim answer_k extract` for every
choice k -> one score each (MultipleChoiceHead), softmax cross-entropy over the choices."""
from __future__ import annotations

FIELDS = ("context", "choices")


def choice_sequences(context: list[int], answers: list[list[int]], layout, keep_context_end: bool = True):
    """[start] context [delim] answer[:n_ctx // 2 - 2] [clf] for each answer.

    keep_context_end (RACE, whose context is article + question): the context keeps its last tokens,
    as many as fit beside the answer, so the question survives a long article. False (ROCStories,
    as the original): the context is cut to its first n_ctx // 2 - 2 tokens."""
    m = layout.n_ctx // 2 - 2
    seqs = []
    for ans in answers:
        a = ans[:m]
        room = layout.n_ctx - 3 - len(a)
        c = (context[-room:] if room > 0 else []) if keep_context_end else context[:m]
        seqs.append([layout.start] + c + [layout.delimiter] + a + [layout.clf])
    return seqs


def transform(fields: dict[str, list], layout, keep_context_end: bool = True) -> list[list[list[int]]]:
    return [choice_sequences(c, answers, layout, keep_context_end)
            for c, answers in zip(fields["context"], fields["choices"])]


def head_type(spec):
    return "multiple_choice"
