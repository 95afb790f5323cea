"""Fine-tuning end to end (gpt1_fast.train) on SST-2-like short sentences: batches padded to their own
longest sequence (--padding batch) against every batch padded to the dataset's longest (--padding
global). Tiny model from scratch; reports training tokens per second (real tokens, evaluations
included) and how many of the computed positions were padding.

The data: GLUE SST-2's TSV layout, sentence lengths drawn to resemble its training phrases (most
short, a long tail: 1 to 52 words, median about 7), the label given by one adjective.
"""
from __future__ import annotations

import random
import tempfile
from pathlib import Path


from .common import default_device, row, write_results

POS, NEG = ("good", "great", "fine", "lovely"), ("bad", "awful", "dull", "poor")
WORDS = ("the movie is a story of film with an actor and music in every scene but plot cast some very "
         "more than its own director makes this one at all").split()


def write_sst2_like(folder: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", n), ("dev", max(64, n // 8)), ("test", max(64, n // 8))):
        lines = ["index\tsentence" if split == "test" else "sentence\tlabel"]
        for i in range(rows):
            k = min(52, max(1, int(rng.lognormvariate(1.9, 0.8))))
            label = rng.random() < 0.5
            words = [rng.choice(WORDS) for _ in range(k)]
            words.insert(rng.randrange(k + 1), rng.choice(POS if label else NEG))
            text = " ".join(words)
            lines.append(f"{i}\t{text}" if split == "test" else f"{text}\t{int(label)}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def main(quick: bool = False):
    from gpt1_fast import train
    from gpt1_fast.text import learn_bpe

    device = default_device()
    n, n_embd, n_layer = (1024, 64, 2) if quick else (8192, 128, 2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_sst2_like(tmp / "SST-2", n)
        texts = [line.split("\t")[0] for line in (data / "train.tsv").read_text().splitlines()[1:]]
        learn_bpe(texts, 200, tmp / "enc.json", tmp / "merges.bpe")
        base = ["--dataset", "sst-2", "--data_dir", str(data), "--from_scratch", "--encoder_path", str(tmp / "enc.json"),
                "--bpe_path", str(tmp / "merges.bpe"), "--cache_dir", str(tmp / "cache"), "--log_dir", str(tmp / "log"),
                "--n_layer", str(n_layer), "--n_embd", str(n_embd), "--n_head", "4", "--n_batch", "32", "--n_iter", "1",
                "--device", str(device), "--backend", "torch" if device.type == "cpu" else "auto"]
        results = {}
        for padding in ("global", "batch", "global", "batch"):  # interleaved; the second run of each is kept
            results[padding] = train.main(base + ["--padding", padding])
        g = results["global"]
        for padding in ("batch", "global"):
            res = results[padding]
            real, padded = res["tokens"]["real"], res["tokens"]["padded"]
            ms = res["train_seconds"] * 1e3
            rows.append(row("sst2-like", [n, res["n_ctx"]], "fp32" if device.type == "cpu" else "bf16",
                            f"padding={padding}", ms, baseline="padding=global", baseline_ms=g["train_seconds"] * 1e3,
                            tokens_per_s=round(real / res["train_seconds"], 1),
                            padding_fraction=round(1 - real / padded, 3), n_updates=res["n_updates"],
                            model=f"{n_layer} layer(s), n_embd {n_embd}, batch 32, 1 epoch, evaluations included"))
    write_results("finetune_padding", rows, {}, device,
                  notes="tokens_per_s counts real (non-padding) training tokens per second of the whole fit.")
