"""Deterministic synthetic Story Cloze items in the exact layout of the spring-2016 CSVs (ROCStories).

For tests and `make demo` on a machine with no data. Each story introduces a protagonist and an
object, then brings good or bad news about it; the right ending reacts in kind, the wrong one the
other way. Both endings come from the same pool, so an ending alone carries no signal: a model must
relate the ending to the story (a small model learns it within a few hundred updates). 15 % of the
stories have no turn and a coin-flip answer, so the best possible accuracy is about 92.5 %.

    python -m gpt1_fast.synthetic --out data/ [--n 1871] [--n_test N] [--seed 0]

Writes the val and test CSVs under the real files' names into --out (the test file with labels, as
the released one); CSVs already there are refused unless --overwrite.
"""
from __future__ import annotations

import csv
import io
import random
import uuid
from pathlib import Path

from .errors import UsageError
from .fileio import atomic_write_text
from .tasks.rocstories import HEADER, TEST_FILE, VAL_FILE

PROG = "python -m gpt1_fast.synthetic"

NAMES = ["Anna", "Ben", "Carla", "David", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack", "Kate", "Leo",
         "Maria", "Nick", "Olivia", "Paul", "Rosa", "Sam", "Tina", "Victor", "Wendy", "Zack", "Lucy", "Tom",
         "Nora", "Eric", "Julia", "Mark", "Sara", "Owen"]
SHE = {"Anna", "Carla", "Emma", "Grace", "Iris", "Kate", "Maria", "Olivia", "Rosa", "Tina", "Wendy", "Lucy",
       "Nora", "Julia", "Sara"}
OBJECTS = ["bike", "guitar", "camera", "puppy", "laptop", "kite", "cake", "boat", "piano", "jacket", "lamp",
           "garden", "car", "book", "watch", "tent", "sofa", "drum", "phone", "painting"]
PLACES = ["the store", "the park", "the beach", "the mall", "school", "the market", "the library", "town"]
TIMES = ["One morning", "Last week", "On Saturday", "Yesterday", "One day", "Last summer", "After work"]
S1 = ["{time}, {name} wanted a new {obj}.", "{name} had always dreamed of owning a {obj}.",
      "{time}, {name} saw a {obj} in a window.", "{name} needed a {obj} for a trip."]
S2 = ["{pro} went to {place} to look for one.", "{pro} saved money for many weeks.",
      "{pro} asked a friend for advice.", "{pro} drove to {place} early."]
S3 = ["There were many to choose from.", "A clerk showed {obj_pro} a few options.",
      "It took a long time to decide.", "{pro} finally bought one."]
# The turn of the story: good or bad news about the object. The right ending follows it.
S4 = {True: ["The {obj} worked perfectly.", "Everyone admired the {obj}.", "The {obj} was a great deal.",
             "The {obj} turned out even better than expected."],
      False: ["The {obj} broke the next day.", "The {obj} was stolen that night.", "The {obj} was a total waste.",
              "The {obj} turned out to be a fake."]}
# A story without a turn: either ending fits, so about 1 in 14 items can't be got right
# (the accuracy ceiling is about 1 - 0.15 / 2 = 92.5 %).
S4_NEUTRAL = ["Nothing else happened that day.", "Then {pro2} went home.", "The {obj} was put on a shelf."]
NEUTRAL_RATE = 0.15
ENDINGS = {True: ["{name} was very happy with it.", "{name} smiled all week.", "{name} told all {pos} friends about it.",
                  "{name} felt lucky."],
           False: ["{name} was very upset about it.", "{name} cried all week.", "{name} asked for {pos} money back.",
                   "{name} felt cheated."]}


def story_rows(n: int, seed: int = 0, with_labels: bool = True):
    """`n` CSV rows (lists of 8 strings) in HEADER order, deterministic in (n, seed).

    The fourth sentence brings good or bad news; the right ending reacts accordingly, the wrong one
    the opposite way (same protagonist in both: only the story tells them apart). In NEUTRAL_RATE of
    the stories the fourth sentence is neutral and the "right" ending is a coin flip."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name = rng.choice(NAMES)
        she = name in SHE
        good = rng.random() < 0.5
        neutral = rng.random() < NEUTRAL_RATE
        fill = dict(name=name, obj=rng.choice(OBJECTS), time=rng.choice(TIMES), place=rng.choice(PLACES),
                    pro="She" if she else "He", pro2="she" if she else "he", obj_pro="her" if she else "him",
                    pos="her" if she else "his")
        turn = S4_NEUTRAL if neutral else S4[good]
        sents = [rng.choice(t).format(**fill) for t in (S1, S2, S3, turn)]
        right = rng.choice(ENDINGS[good]).format(**fill)
        wrong = rng.choice(ENDINGS[not good]).format(**fill)
        label = rng.randint(1, 2)
        e1, e2 = (right, wrong) if label == 1 else (wrong, right)
        story_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        rows.append([story_id, *sents, e1, e2, str(label) if with_labels else ""])
    return rows


def write_csv(path, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_rocstories(out_dir, n: int = 1871, n_test: int | None = None, seed: int = 0) -> Path:
    """Write the val and test CSVs (n and n_test stories, default 1871 each) into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / VAL_FILE, story_rows(n, seed))
    write_csv(out / TEST_FILE, story_rows(n if n_test is None else n_test, seed + 1))
    return out


def build_parser():
    from . import options

    return options.build_parser(options.SYNTHETIC, PROG, __doc__)


def main(argv=None) -> Path:
    from . import options

    a = options.parse(options.SYNTHETIC, build_parser(), argv)
    existing = [Path(a.out) / f for f in (VAL_FILE, TEST_FILE) if (Path(a.out) / f).exists()]
    if existing and not a.overwrite:
        raise UsageError(f"argument --out: {a.out} already holds Story Cloze files ({existing[0].name}); pass "
                         "--overwrite to replace them, or choose another folder")
    out = write_rocstories(a.out, a.n, a.n_test, a.seed)
    print(out)
    return out


def cli(argv=None) -> None:
    """Command-line entry: a bad flag is one `error:` line (exit code 2)."""
    from .cli import run_cli

    run_cli(main, argv, PROG)


if __name__ == "__main__":
    cli()
