"""Multiple choice (Story Cloze / ROCStories, RACE): `start context delim answer_k extract` for every
choice k -> one score each (MultipleChoiceHead), softmax cross-entropy over the choices. RACE's
context is its article then its question (fields "context" = the article, "question")."""
from __future__ import annotations

FIELDS = ("context", "question", "choices")  # "question": RACE only


def shared_window(context: list[int], question: list[int], answers: list[list[int]], room: int):
    """-> (context, question, answers) cut so that context + question + each answer fits in `room`
    tokens, one cut for all the answers: the question and the answers stay whole and the context keeps
    its last tokens (RACE: the end of the article, next to the question), as many as fit beside the
    question and the longest answer. Only when the question and the longest answer alone exceed
    `room` (an n_ctx far below RACE's 512) are the answers cut to their first room // 2 tokens and the
    question to its last tokens."""
    longest = max((len(a) for a in answers), default=0)
    if len(question) + longest > room:
        answers = [a[:room // 2] for a in answers]
        longest = max((len(a) for a in answers), default=0)
        question = question[max(0, len(question) - (room - longest)):]
    keep = room - len(question) - longest
    return (context[max(0, len(context) - keep):] if keep > 0 else []), question, answers


def choice_sequences(context: list[int], answers: list[list[int]], layout, keep_context_end: bool = True,
                     question=()):
    """[start] context question [delim] answer [clf] for each answer.

    keep_context_end (RACE, and the MultipleChoice estimator): every answer sees the same window of
    the context, cut from its start (`shared_window`). False (ROCStories, as the original): the
    context and each answer are cut to their first n_ctx // 2 - 2 tokens."""
    s, d, c = layout.start, layout.delimiter, layout.clf
    if not keep_context_end:
        m = layout.n_ctx // 2 - 2
        return [[s] + context[:m] + [d] + a[:m] + [c] for a in answers]
    ctx, q, answers = shared_window(context, list(question), answers, layout.n_ctx - 3)
    return [[s] + ctx + q + [d] + a + [c] for a in answers]


def transform(fields: dict[str, list], layout, keep_context_end: bool = True) -> list[list[list[int]]]:
    questions = fields.get("question") or [()] * len(fields["context"])
    return [choice_sequences(c, answers, layout, keep_context_end, q)
            for c, q, answers in zip(fields["context"], questions, fields["choices"])]


def head_type(spec):
    return "multiple_choice"
