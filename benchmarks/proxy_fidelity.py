"""Benchmark of the search's proxy: does brief distillation rank students like full distillation?

Distills N students of one space both ways on Fashion-MNIST: brief (the search's trial budget,
teacher outputs cached, scored on validation) and full (`hwkd distill`'s loop: the teacher on every
augmented batch, warm-up + cosine, scored on test). Prints the per-student table, the Spearman and
Kendall correlation between the two accuracies, and the compute ratio (brief / full, in training
images and in seconds).

    python benchmarks/proxy_fidelity.py [--students 12] [--epochs 10] [--brief-steps 200,600] [--train-device auto]

Goal: Spearman at least 0.85 with brief distillation costing at most 5% of full.
Training-heavy: run it where a GPU is available (it uses one when present).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from hwkd.data import load_dataset
from hwkd.distillation.brief import brief_distill, brief_indices, brief_subset
from hwkd.distillation.config import BriefConfig, FullConfig
from hwkd.distillation.full import full_distill
from hwkd.errors import ArchitectureError
from hwkd.searcher import DEFAULT_SPACE
from hwkd.spaces import load_space
from hwkd.stats import kendall, spearman
from hwkd.teachers import default_teacher
from hwkd.training import pick_device


def students(space_name: str, count: int, seed: int) -> list[str]:
    space = load_space(space_name)
    rng = random.Random(seed)
    chosen: dict[str, None] = {}
    while len(chosen) < count:
        try:
            chosen.setdefault(space.parse(space.sample(rng)), None)
        except ArchitectureError:  # a cell that cannot learn (NB201's degenerate cells)
            continue
    return list(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--space", default=DEFAULT_SPACE, help=f"default {DEFAULT_SPACE}, the search's")
    parser.add_argument("--students", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--brief-steps", default=str(BriefConfig.steps),
                        help="brief budgets to compare, comma separated (the first is the search's)")
    parser.add_argument("--train-device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = pick_device(args.train_device)
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    dataset = load_dataset(args.data, args.data_dir)
    print(f"{dataset.name}: {len(dataset.train)} train / {len(dataset.val)} val / {len(dataset.test)} test; "
          f"training on {where}; torch {torch.__version__}", flush=True)
    teacher = default_teacher(dataset, device, progress=lambda line: print(line, flush=True))
    test_pred = teacher.logits(dataset.normalize(dataset.test.images)).argmax(1)
    print(f"teacher test accuracy {100 * float((test_pred == dataset.test.labels).float().mean()):.2f}%")
    budgets = [int(v) for v in str(args.brief_steps).split(",")]
    start = time.perf_counter()
    logits = teacher.logits(dataset.normalize(dataset.train.images))  # every budget's images
    shared = brief_indices(len(dataset.train), BriefConfig(steps=budgets[0], seed=args.seed))
    # a search computes the teacher's outputs on its brief images only
    logits_s = (time.perf_counter() - start) * (1 if shared is None else len(shared) / len(dataset.train))

    space = load_space(args.space)
    full_config = FullConfig(epochs=args.epochs, seed=args.seed)
    rows = []
    brief_head = " ".join(f"{f'brief {b}':>10}" for b in budgets)
    print(f"\n{'#':>2} {brief_head} {'full test':>9} {'brief s':>8} {'full s':>8}  arch")
    with tempfile.TemporaryDirectory() as tmp:
        for i, arch in enumerate(students(args.space, args.students, args.seed)):
            briefs = []
            for steps in budgets:
                config = BriefConfig(steps=steps, seed=args.seed)
                index = brief_indices(len(dataset.train), config)  # the images a search trains on
                torch.manual_seed(args.seed)
                briefs.append(brief_distill(space.build(arch, dataset.num_classes, dataset.input_shape),
                                            brief_subset(dataset, config), logits if index is None else logits[index],
                                            config, device))
            torch.manual_seed(args.seed)
            full = full_distill(space.build(arch, dataset.num_classes, dataset.input_shape), teacher.forward,
                                teacher.module, dataset, full_config, Path(tmp) / f"s{i}.pt", device, {"arch": arch},
                                progress=False)
            rows.append((arch, [b.val_accuracy for b in briefs], full.test_accuracy, briefs[0].seconds, full.seconds))
            accs = " ".join(f"{100 * b.val_accuracy:>9.2f}%" for b in briefs)
            print(f"{i:>2} {accs} {100 * full.test_accuracy:>8.2f}% {briefs[0].seconds:>8.1f} {full.seconds:>8.1f}  "
                  f"{arch}", flush=True)
    full_acc = [r[2] for r in rows]
    full_images = args.epochs * (len(dataset.train) // full_config.batch_size) * full_config.batch_size
    full_s = sum(r[4] for r in rows)
    print(f"\nstudents: {len(rows)} of {args.space}; full: {args.epochs} epochs x {len(dataset.train)} images; "
          f"full test accuracy from {100 * min(full_acc):.2f}% to {100 * max(full_acc):.2f}%")
    for k, steps in enumerate(budgets):
        brief_acc = [r[1][k] for r in rows]
        brief_images = steps * BriefConfig.batch_size
        print(f"\nbrief: {steps} steps x {BriefConfig.batch_size} images")
        print(f"{'Spearman (brief val vs full test)':<44} {spearman(brief_acc, full_acc):>7.3f}   goal >= 0.85")
        print(f"{'Kendall tau-b':<44} {kendall(brief_acc, full_acc):>7.3f}")
        print(f"{'compute ratio, training images (brief/full)':<44} {brief_images / full_images:>7.2%}   goal <= 5%")
    brief_s = sum(r[3] for r in rows) + logits_s
    print(f"{'compute ratio, seconds (brief ' + str(budgets[0]) + ' incl. teacher outputs / full)':<44} "
          f"{brief_s / full_s:>7.2%}")


if __name__ == "__main__":
    main()
