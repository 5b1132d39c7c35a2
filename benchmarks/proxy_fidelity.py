"""Benchmark of the search's proxy: does brief distillation rank students like full distillation?

Distills N students of one space both ways on Fashion-MNIST: brief (the search's trial budget,
teacher outputs cached, scored on validation) and full (`hwkd distill`'s loop: the teacher on every
augmented batch, warm-up + cosine, scored on test). Prints the per-student table, the Spearman and
Kendall correlation between the two accuracies, and the compute ratio (brief / full, in training
images and in seconds).

    python benchmarks/proxy_fidelity.py [--students 12] [--epochs 10] [--train-device auto]

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
from hwkd.distill.brief import brief_distill, pick_device
from hwkd.distill.config import BriefConfig, FullConfig
from hwkd.distill.full import full_distill
from hwkd.errors import ArchitectureError
from hwkd.spaces import load_space
from hwkd.stats import kendall, spearman
from hwkd.teacher import default_teacher


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
    parser.add_argument("--space", default="nb201-small")
    parser.add_argument("--students", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--brief-steps", type=int, default=BriefConfig.steps)
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
    start = time.perf_counter()
    logits = teacher.logits(dataset.normalize(dataset.train.images))
    logits_s = time.perf_counter() - start

    space = load_space(args.space)
    brief_config = BriefConfig(steps=args.brief_steps, seed=args.seed)
    full_config = FullConfig(epochs=args.epochs, seed=args.seed)
    rows = []
    print(f"\n{'#':>2} {'brief val':>9} {'full test':>9} {'brief s':>8} {'full s':>8}  arch")
    with tempfile.TemporaryDirectory() as tmp:
        for i, arch in enumerate(students(args.space, args.students, args.seed)):
            torch.manual_seed(args.seed)
            brief = brief_distill(space.build(arch, dataset.num_classes, dataset.input_shape), dataset, logits,
                                  brief_config, device)
            torch.manual_seed(args.seed)
            full = full_distill(space.build(arch, dataset.num_classes, dataset.input_shape), teacher.forward,
                                teacher.module, dataset, full_config, Path(tmp) / f"s{i}.pt", device, {"arch": arch},
                                progress=False)
            rows.append((arch, brief.val_accuracy, full.test_accuracy, brief.seconds, full.seconds))
            print(f"{i:>2} {100 * brief.val_accuracy:>8.2f}% {100 * full.test_accuracy:>8.2f}% "
                  f"{brief.seconds:>8.1f} {full.seconds:>8.1f}  {arch}", flush=True)
    brief_acc = [r[1] for r in rows]
    full_acc = [r[2] for r in rows]
    brief_images = brief_config.steps * brief_config.batch_size
    full_images = args.epochs * (len(dataset.train) // full_config.batch_size) * full_config.batch_size
    brief_s = sum(r[3] for r in rows) + logits_s
    full_s = sum(r[4] for r in rows)
    print(f"\nstudents: {len(rows)} of {args.space}; brief: {brief_config.steps} steps x {brief_config.batch_size}; "
          f"full: {args.epochs} epochs x {len(dataset.train)} images")
    print(f"{'Spearman (brief val vs full test)':<44} {spearman(brief_acc, full_acc):>7.3f}   goal >= 0.85")
    print(f"{'Kendall tau-b':<44} {kendall(brief_acc, full_acc):>7.3f}")
    print(f"{'compute ratio, training images (brief/full)':<44} {brief_images / full_images:>7.2%}   goal <= 5%")
    print(f"{'compute ratio, seconds (brief incl. teacher outputs / full)':<44} {brief_s / full_s:>7.2%}")


if __name__ == "__main__":
    main()
