"""RACE: one article window for all the choices of a question, the levels kept through the task layer
(RACE-m, RACE-h and RACE from one model's predictions)."""
import numpy as np

from fixtures_tasks import WordEncoder, write_fixture
from gpt1_fast.layout import EmbeddingLayout
from gpt1_fast.tasks import get_task, multiple_choice
from gpt1_fast.tasks.readers import read_split

S, D, C = 100, 101, 102  # EmbeddingLayout(100): _start_, _delimiter_, _classify_
LAYOUT = EmbeddingLayout(100, n_ctx=16)


def test_every_choice_sees_the_same_window_cut_from_the_articles_start():
    article, question = list(range(1, 21)), [50, 51, 52]
    answers = [[60], [61, 62, 63, 64], [65, 66]]
    got = multiple_choice.transform({"context": [article], "question": [question], "choices": [answers]}, LAYOUT)[0]
    # room 16 - 3 = 13: question 3 + longest answer 4 -> the article's last 6 tokens, for every answer
    window = list(range(15, 21))
    assert got == [[S] + window + question + [D] + a + [C] for a in answers]
    assert all(len(s) <= 16 for s in got) and len(got[1]) == 16  # the longest answer fills n_ctx exactly
    # a short article is whole; the question and the answers always whole while they fit
    got = multiple_choice.transform({"context": [[1, 2]], "question": [question], "choices": [answers]}, LAYOUT)[0]
    assert got[0] == [S, 1, 2, 50, 51, 52, D, 60, C]


def test_question_and_answer_beyond_n_ctx_are_cut_by_the_stated_rule():
    ctx, q, answers = multiple_choice.shared_window(list(range(10)), list(range(20, 30)), [[1] * 8, [2]], room=12)
    assert answers == [[1] * 6, [2]] and q == list(range(24, 30)) and ctx == []  # answers room // 2, question its end
    assert multiple_choice.shared_window([1, 2, 3], [], [[9]], room=3) == ([2, 3], [], [[9]])


def test_rocstories_keeps_the_start_of_an_over_long_story():
    story = list(range(1, 30))
    got = multiple_choice.transform({"context": [story], "choices": [[[60, 61], [62]]]}, LAYOUT, keep_context_end=False)
    m = 16 // 2 - 2
    assert got[0] == [[S] + story[:m] + [D, 60, 61, C], [S] + story[:m] + [D, 62, C]]


def test_levels_are_groups_whose_counts_sum_to_the_whole_and_whose_accuracies_recombine(tmp_path):
    folder = write_fixture("race", tmp_path / "RACE", n_rows=24, seed=1, n_eval=14)
    task = get_task("race")
    data = task.load(folder, WordEncoder(), (), n_ctx=64)
    for split in ("dev", "test"):
        groups = data.groups[split]
        assert sorted(groups) == ["RACE-h", "RACE-m"]
        s = read_split("race", folder, split)
        n = len(data.splits[split])
        assert len(groups["RACE-m"]) + len(groups["RACE-h"]) == n
        assert sorted(np.concatenate(list(groups.values())).tolist()) == list(range(n))
        ids = data.splits[split].ids
        assert all(ids[i].startswith("middle") for i in groups["RACE-m"])  # the fixture's ids name the level
        assert all(ids[i].startswith("high") for i in groups["RACE-h"])
        assert [ids[i] for i in groups["RACE-m"]] == read_split("race-m", folder, split).ids
        y = s.labels
        preds = np.random.default_rng(0).integers(0, 4, n)
        by = task.group_metrics(y, preds, groups)
        whole = task.group_metrics(y, preds, {"RACE": np.arange(n)})["RACE"]["accuracy"]
        recombined = sum(by[g]["accuracy"] * len(groups[g]) for g in groups) / n
        assert abs(recombined - whole) < 1e-9 and by["RACE-m"]["accuracy"] != by["RACE-h"]["accuracy"]
    assert get_task("race-m").load(folder, WordEncoder(), (), n_ctx=64).groups == {}  # one level: the whole
