"""Benchmark of brief distillation: speed with cached teacher outputs, and what distillation buys.

Prints, in one run on this machine:
1. images per second of hwkd's brief distillation (teacher logits computed once per run on the
   images the brief distillations share, looked up per step) against a plain PyTorch loop that
   runs the teacher on every batch, for three students (small, middle, large) with the same
   steps, batch, loss and optimizer; also the one-time cost of the cached logits spread over a
   default search (goal: at least 2x), with hwkd's default teacher and with a larger one of the
   size users bring (caching saves the teacher's share of each step, so the ratio grows with the
   teacher's cost over the student's);
2. on Fashion-MNIST, the test accuracy of one student after brief distillation with each loss
   (`--loss`: KD, DKD, DIST, LS) against the same student trained from the labels alone with equal
   steps, over several seeds (goals: KD ahead of labels by at least 1 point; the default loss at
   or above KD);
3. with `--full-epochs N`, the same for full distillation (`hwkd distill`'s loop, augmentation,
   the teacher on every batch) of N epochs (goal: `hwkd distill`'s default loss at or above KD).

Parts 2 and 3 train one nb201-small student, `--student small|middle|large` (default middle), with
each of `--losses` (default all: labels,kd,dkd,dist,ls); each run's accuracy goes to stderr as it
ends (a 5-epoch run takes 5-10 min on 2 cores). `--loss-warmup-epochs W` ramps part 3's
distillation term up over its first W epochs (default: `hwkd distill`'s).

    python benchmarks/distill.py [--data fashion-mnist] [--steps 200,600] [--seeds 3] [--full-epochs 0] [--student middle]

The teacher is hwkd's default teacher for the data (trained once and cached, as `hwkd search`
does); `--small-teacher` takes the same network at its small-data recipe instead (on full
Fashion-MNIST minutes on 2 cores, not most of an hour; cached beside proxy_fidelity.py's).
Scores use the test split, which the search itself never looks at.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from hwkd.data import load_dataset
from hwkd.distillation.brief import brief_distill, brief_indices, brief_subset
from hwkd.distillation.config import LOSS_NAMES, BriefConfig, FullConfig
from hwkd.distillation.losses import distill_loss
from hwkd.initial_design import torch_macs
from hwkd.searcher import DEFAULT_TRIALS
from hwkd.spaces import load_space
from hwkd.teachers import DefaultTeacher, default_teacher
from hwkd.teachers.default_net import SMALL_DATA_RECIPE
from hwkd.training import evaluate

COLUMNS = ("labels", *LOSS_NAMES)
STUDENTS = {
    "small": "|skip_connect~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|skip_connect~1|nor_conv_1x1~2|",
    "middle": "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "large": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
}


def plain_loop(student: torch.nn.Module, teacher: Callable[[torch.Tensor], torch.Tensor], dataset,
               config: BriefConfig) -> float:
    """The usual distillation loop: the teacher runs on every batch. Returns images per second."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    student.to(memory_format=torch.channels_last).train()  # as hwkd's loop, so only the teacher differs
    optimizer = torch.optim.SGD(student.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                                weight_decay=config.weight_decay)
    start = time.perf_counter()
    for _ in range(config.steps):
        index = torch.randint(len(dataset.train), (config.batch_size,), generator=generator)
        images = dataset.normalize(dataset.train.images[index]).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            soft = teacher(images)
        loss = distill_loss(config.loss, student(images), soft, dataset.train.labels[index], config.temperature, config.alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return config.steps * config.batch_size / (time.perf_counter() - start)


def speed(dataset, teachers: list[tuple[str, Callable[[torch.Tensor], torch.Tensor], float]], steps: int) -> None:
    """`teachers`: (name, forward, seconds of its outputs on the images a search's brief distillations share)."""
    space = load_space("nb201-small")
    config = BriefConfig(steps=steps)
    cpu = torch.device("cpu")
    logits = torch.zeros(len(dataset.train), dataset.num_classes)  # speed only: values do not matter here
    trial_images = DEFAULT_TRIALS * BriefConfig.steps * config.batch_size
    shared = len(brief_subset(dataset, BriefConfig()).train)
    print(f"\n1. brief distillation speed, {steps} steps of {config.batch_size} images, "
          f"{torch.get_num_threads()} threads, CPU")
    cached: dict[str, float] = {}
    for name, arch in STUDENTS.items():  # hwkd's loop does not depend on the teacher
        torch.manual_seed(0)
        student = space.build(arch, dataset.num_classes, dataset.input_shape)
        cached[name] = brief_distill(student, dataset, logits, config, cpu).images_per_s
    for teacher_name, teacher_forward, logits_seconds in teachers:
        amortized = logits_seconds / DEFAULT_TRIALS  # seconds per trial of a default search
        print(f"\n   teacher: {teacher_name}, {torch_macs(teacher_forward, dataset.input_shape) / 1e6:.2f} MMACs "
              f"per image; its outputs on the {shared} training images brief distillation uses: {logits_seconds:.1f} s once per run "
              f"({amortized:.1f} s per trial over a default {DEFAULT_TRIALS}-trial search)")
        print(f"   {'student':<8} {'MMACs':>6} {'cached img/s':>13} {'+ amortized':>12} {'plain img/s':>12} "
              f"{'ratio':>6} {'ratio amortized':>16}")
        ratios = []
        for name, arch in STUDENTS.items():
            torch.manual_seed(0)
            student = space.build(arch, dataset.num_classes, dataset.input_shape)
            macs = torch_macs(student, dataset.input_shape)
            # the one-time teacher pass spread over the images a default search trains on
            with_share = 1 / (1 / cached[name] + logits_seconds / trial_images)
            plain = plain_loop(student, teacher_forward, dataset, config)
            ratios.append(with_share / plain)
            print(f"   {name:<8} {macs / 1e6:>6.2f} {cached[name]:>13.0f} {with_share:>12.0f} {plain:>12.0f} "
                  f"{cached[name] / plain:>5.2f}x {with_share / plain:>15.2f}x")
        print(f"   goal: at least 2x; amortized ratio min {min(ratios):.2f}x, median {statistics.median(ratios):.2f}x")


def teacher_outputs_seconds(forward: Callable[[torch.Tensor], torch.Tensor], dataset, index) -> float:
    images = dataset.normalize(dataset.train.images if index is None else dataset.train.images[index])
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(images), 256):
            forward(images[i : i + 256])
    return time.perf_counter() - start


def print_scores(label: str, scores: dict[str, list[float]]) -> None:
    """One row: each column's mean ± stdev over the seeds, its gain over kd, and every seed's score."""
    means = {c: statistics.mean(v) for c, v in scores.items()}
    spread = {c: statistics.stdev(v) if len(v) > 1 else 0.0 for c, v in scores.items()}
    gains = " ".join(f"{means[c] - means['kd']:>+10.2f}" for c in scores if c != "kd" and "kd" in means)
    per_seed = "; ".join(f"{c} " + "/".join(f"{x:.2f}" for x in v) for c, v in scores.items())
    print(f"   {label} " + " ".join(f"{means[c]:>6.2f}±{spread[c]:<4.2f}%" for c in scores)
          + f"   {gains}   {per_seed}", flush=True)


def accuracy(dataset, logits: torch.Tensor, teacher_acc: float, steps_list: list[int], seeds: int,
             losses: list[str], student_name: str) -> None:
    space = load_space("nb201-small")
    arch = STUDENTS[student_name]
    cpu = torch.device("cpu")
    print(f"\n2. test accuracy on {dataset.name} ({len(dataset.test)} test images), student {arch}")
    print(f"   teacher test accuracy {100 * teacher_acc:.2f}%; defaults T={BriefConfig.temperature}, "
          f"alpha={BriefConfig.alpha}, loss {BriefConfig.loss}; {seeds} seeds each, the same seeds for every column")
    columns = losses
    print(f"   {'steps':>6} " + " ".join(f"{c:>13}" for c in columns) + "   "
          + " ".join(f"{c + ' - kd':>10}" for c in columns if c != "kd" and "kd" in columns) + "   per seed")
    for steps in steps_list:
        scores: dict[str, list[float]] = {c: [] for c in columns}
        for seed in range(seeds):
            config = BriefConfig(steps=steps, seed=seed)
            shared = brief_subset(dataset, config)  # the images a search with these settings trains on
            index = brief_indices(len(dataset.train), config)
            soft = logits if index is None else logits[index]
            for column in columns:
                torch.manual_seed(seed)
                student = space.build(arch, dataset.num_classes, dataset.input_shape)
                if column == "labels":
                    brief_distill(student, shared, None, config, cpu)
                else:
                    brief_distill(student, shared, soft, replace(config, loss=column), cpu)
                scores[column].append(100 * evaluate(student, dataset, dataset.test, cpu))
        print_scores(f"{steps:>6}", scores)
    print("   goals: distillation (kd) ahead of labels only by at least 1 point; the default loss at or above kd")


def full_accuracy(dataset, teacher, teacher_acc: float, epochs: int, seeds: int, losses: list[str],
                  student_name: str, loss_warmup_epochs: float) -> None:
    """Part 3: full distillation (augmentation, the teacher on every batch, warm-up + cosine) with each loss."""
    import tempfile
    from pathlib import Path

    from hwkd.distillation.full import full_distill

    space = load_space("nb201-small")
    arch = STUDENTS[student_name]
    cpu = torch.device("cpu")
    columns = losses
    d = FullConfig()
    print(f"\n3. full distillation, {epochs} epochs of {len(dataset.train)} images, T={d.temperature}, "
          f"alpha={d.alpha}, distillation term ramped up over {loss_warmup_epochs:g} epochs "
          f"(hwkd distill's default {d.loss_warmup_epochs:g}), loss default {d.loss}; test accuracy, {seeds} seeds; teacher test accuracy "
          f"{100 * teacher_acc:.2f}% (a student that can pass its teacher is held back by it: compare labels); "
          f"student {student_name} {arch}")
    print(f"   {'':>6} " + " ".join(f"{c:>13}" for c in columns) + "   "
          + " ".join(f"{c + ' - kd':>10}" for c in columns if c != "kd" and "kd" in columns) + "   per seed")
    scores: dict[str, list[float]] = {c: [] for c in columns}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            for column in columns:
                config = FullConfig(epochs=epochs, seed=seed, loss="kd" if column == "labels" else column,
                                    alpha=0.0 if column == "labels" else d.alpha,
                                    loss_warmup_epochs=loss_warmup_epochs)
                torch.manual_seed(seed)
                student = space.build(arch, dataset.num_classes, dataset.input_shape)
                result = full_distill(student, teacher.forward, None, dataset, config,
                                      Path(tmp) / f"{column}-{seed}.pt", cpu, {"arch": arch}, progress=False)
                scores[column].append(100 * result.test_accuracy)
                print(f"   seed {seed} {column}: {100 * result.test_accuracy:.2f}%", file=sys.stderr, flush=True)
    print_scores(f"{epochs:>4}ep", scores)
    print(f"   goal: hwkd distill's default loss ({d.loss}) at or above kd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--steps", default="200,600", help="brief budgets to compare, comma separated ('' skips part 2)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--losses", default=",".join(COLUMNS), help="the columns of parts 2 and 3: labels "
                        "(trained from the labels alone) and distillation losses (default: all)")
    parser.add_argument("--full-epochs", type=int, default=0, help="epochs of part 3 (default 0: skipped)")
    parser.add_argument("--speed-steps", type=int, default=60, help="steps of part 1 (0 skips it)")
    parser.add_argument("--student", default="middle", choices=sorted(STUDENTS),
                        help="the nb201-small student of parts 2 and 3 (default: middle)")
    parser.add_argument("--loss-warmup-epochs", type=float, default=FullConfig.loss_warmup_epochs,
                        help="part 3's ramp of the distillation term (default: hwkd distill's)")
    parser.add_argument("--small-teacher", action="store_true", help="hwkd's default network at its small-data "
                        "recipe, cached in the folder proxy_fidelity.py uses")
    args = parser.parse_args()
    losses = [name.strip() for name in args.losses.split(",") if name.strip()]
    unknown = [name for name in losses if name not in COLUMNS]
    if unknown or not losses:
        parser.error(f"--losses {','.join(unknown) or repr(args.losses)}: choose from {', '.join(COLUMNS)}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    dataset = load_dataset(args.data, args.data_dir)
    print(f"{dataset.name}: {len(dataset.train)} train / {len(dataset.val)} val / {len(dataset.test)} test images")
    recipe = None
    if args.small_teacher:
        os.environ["HWKD_CACHE_DIR"] = str(Path("hwkd-runs/benchmark-proxy-cache").resolve())
        recipe = SMALL_DATA_RECIPE
    teacher = default_teacher(dataset, torch.device("cpu"), progress=print, recipe=recipe)
    index = brief_indices(len(dataset.train), BriefConfig())
    logits_seconds = teacher_outputs_seconds(teacher.forward, dataset, index)  # what a search computes once
    logits = teacher.logits(dataset.normalize(dataset.train.images))  # every budget's images, for part 2
    test_logits = teacher.logits(dataset.normalize(dataset.test.images))
    teacher_acc = float((test_logits.argmax(1) == dataset.test.labels).float().mean())
    # A teacher of the size users bring (ResNet-18 widths, one block per stage); speed does not
    # depend on its weights, so it is not trained.
    large = DefaultTeacher(dataset.input_shape[1], dataset.num_classes, widths=(64, 128, 256, 512)).eval()
    if args.speed_steps:
        speed(dataset, [("hwkd's default", teacher.forward, logits_seconds),
                        ("ResNet-18 widths (64-512), untrained", large, teacher_outputs_seconds(large, dataset, index))],
              args.speed_steps)
    if args.steps:
        accuracy(dataset, logits, teacher_acc, [int(s) for s in args.steps.split(",")], args.seeds, losses,
                 args.student)
    if args.full_epochs:
        full_accuracy(dataset, teacher, teacher_acc, args.full_epochs, args.seeds, losses, args.student,
                      args.loss_warmup_epochs)


if __name__ == "__main__":
    main()
