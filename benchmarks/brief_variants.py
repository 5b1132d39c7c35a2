"""Brief-distillation variants against full runs already measured: does another brief, at no more
compute, rank students more like full distillation than the search's own?

`proxy_fidelity.py` distils each student fully (hours of a 2-core machine) and briefly; a brief is
seconds. This script takes the students and full test accuracies of `proxy_fidelity.py --save`
files (`--truth`, each space from the first file that has it) and runs the brief distillation of
every student again in each variant, with the teacher of this machine's cache (the files'
briefs need not be from it: only their full runs are used). Per variant it prints the Spearman
(with its 95 % interval) of brief validation accuracy and of the search's score (accuracy plus
`BriefConfig.synflow_points` per decade of SynFlow) against the full runs, and against the mean
of two full runs where the file has a second (`--reseed`), the brief's cost in training images
over the full run's, and its seconds. The variants `default` and `seed1` to `seed4` are the search's
brief with five seeds (initialization, images and their order): how far the brief's own noise moves
its Spearman, the margin a variant must clear before it counts as better.

    python benchmarks/brief_variants.py [--spaces mbconv-small,nb201-widths] [--variants default,seed1,...]
        [--truth FILE ...] [--save FILE] [--load FILE]

`--save` writes each student's scores as it finishes and resumes the same file (another teacher is
refused); `--load` prints the tables of a saved file. On a 2-core Xeon VM a variant took 5-7 minutes on
mbconv-small and 1.5-2 on nb201-widths.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from hwkd.data import load_dataset
from hwkd.data.datasets import Dataset
from hwkd.distillation.brief import brief_distill, brief_indices, brief_subset
from hwkd.distillation.config import BriefConfig
from hwkd.files import write_atomic
from hwkd.spaces import load_space
from hwkd.stats import spearman
from hwkd.teachers import default_teacher
from hwkd.training import pick_device, recalibrate_batchnorm

sys.path.insert(0, str(Path(__file__).parent))  # the students, their full runs and scoring of proxy_fidelity.py
from proxy_fidelity import (
    Student,
    check_same_teacher,
    full_run_images,
    students_of,
    teacher_test_accuracy,
    two_run_mean,
    val_scores,
    with_interval,
)

RESULTS = Path(__file__).parent / "results"
TRUTH = [RESULTS / "proxy_fidelity_default_teacher2.json", RESULTS / "proxy_fidelity_default_teacher.json"]
FORWARD_COST = 1 / 3  # a forward pass alone, as a share of a training step's forward and backward


@dataclass(frozen=True)
class Variant:
    what: str
    config: BriefConfig = field(default_factory=BriefConfig)
    recalibrate_images: int = 0  # BatchNorm statistics re-estimated on this many brief images afterwards
    ema_decay: float = 0.0  # score an exponential average of the weights over the second half

    def train_images(self) -> float:
        """Training images' worth of compute: a recalibration image costs a forward pass only."""
        return self.config.steps * self.config.batch_size + FORWARD_COST * self.recalibrate_images


VARIANTS = {
    "default": Variant("the search's brief: 200 steps of 64, one-cycle to lr 0.1"),
    **{f"seed{seed}": Variant(f"the same with seed {seed}: initialization, images and their order (the brief's own "
                              "noise)", BriefConfig(seed=seed)) for seed in (1, 2, 3, 4)},
    "batch32": Variant("400 steps of 32 (the same images, twice the updates)", BriefConfig(steps=400, batch_size=32)),
    "batch32-lr0.05": Variant("400 steps of 32, lr 0.05", BriefConfig(steps=400, batch_size=32, lr=0.05)),
    "lr0.2": Variant("lr 0.2", BriefConfig(lr=0.2)),
    "lr0.05": Variant("lr 0.05", BriefConfig(lr=0.05)),
    "bn-recal": Variant("BatchNorm statistics re-estimated on 2,048 brief images", recalibrate_images=2048),
    "ema": Variant("EMA of the weights over the second half (decay 0.98, buffers too)", ema_decay=0.98),
}


def brief_scores(variant: Variant, model: nn.Module, dataset: Dataset, teacher_logits: torch.Tensor, teacher_val: torch.Tensor,
                 device: torch.device) -> dict[str, float]:
    """Train `model` in `variant`'s brief; its validation accuracy, KL to the teacher and seconds."""
    config = variant.config
    index = brief_indices(len(dataset.train), config)
    subset = brief_subset(dataset, config)
    average = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(variant.ema_decay), use_buffers=True)
               if variant.ema_decay else None)

    def on_step(step: int, _loss: float) -> None:
        if average is not None and step > config.steps // 2:
            average.update_parameters(model)

    started = time.perf_counter()
    brief_distill(model, subset, teacher_logits if index is None else teacher_logits[index], config, device,
                  on_step=on_step)
    scored = average.module if average is not None else model
    if variant.recalibrate_images:
        recalibrate_batchnorm(scored, subset, device, images=variant.recalibrate_images, seed=config.seed)
    seconds = time.perf_counter() - started
    acc, _, kl = val_scores(scored, dataset, teacher_val, device)
    return {"acc": acc, "kl": kl, "seconds": seconds}


def truth_of(paths: list[Path], space: str) -> tuple[list[Student], int, int]:
    """The students of `space` in the first file that has them, its training images and full epochs."""
    for path in paths:
        saved = json.loads(path.read_text())
        if space in saved["spaces"]:
            return students_of(saved["spaces"][space]), saved["train_images"], saved["epochs"]
    raise SystemExit(f"--spaces {space}: no --truth file has it ({', '.join(map(str, paths))})")


def summarize(space: str, students: list[Student], rows: dict[str, list[dict]], train_images: int,
              epochs: int) -> None:
    full = [s.full_acc for s in students]
    both = two_run_mean(students)
    full_images = full_run_images(epochs, train_images)
    n = len(students)
    print(f"\n{space}: {n} students, full test accuracy {100 * min(full):.2f}% to {100 * max(full):.2f}% "
          f"({epochs} epochs)")
    print(f"{'variant':<16} {'accuracy':>22} {'search score':>22}" + (f" {'score, 2 full seeds':>22}" if both else "")
          + f" {'images/full':>11} {'seconds':>8}  what")
    done = {name: r for name, r in rows.items() if len(r) == n}
    for name, r in done.items():
        variant = VARIANTS[name]
        acc = [x["acc"] for x in r]
        score = [variant.config.score(a, s.synflow) for a, s in zip(acc, students)]
        line = f"{name:<16} {with_interval(spearman(acc, full), n):>22} {with_interval(spearman(score, full), n):>22}"
        if both:
            line += f" {with_interval(spearman(score, both), n):>22}"
        print(f"{line} {variant.train_images() / full_images:>11.2%} {sum(x['seconds'] for x in r):>8.0f}  {variant.what}")
    seeds = [name for name in done if name == "default" or name.startswith("seed")]
    if len(seeds) > 1:  # the search's brief with several seeds: the spread of its Spearman is its own noise
        scores = [[VARIANTS[v].config.score(x["acc"], s.synflow) for x, s in zip(done[v], students)] for v in seeds]
        rho = [spearman(score, full) for score in scores]
        accs = [[x["acc"] for x in done[v]] for v in seeds]  # SynFlow is the same in every seed's score
        alike = [spearman(a, b) for i, a in enumerate(accs) for b in accs[i + 1:]]
        print(f"the search's score over {len(seeds)} seeds of its brief: Spearman {statistics.mean(rho):.3f} on average "
              f"({min(rho):.3f} to {max(rho):.3f}); two seeds' brief accuracies rank the students "
              f"{statistics.mean(alike):.3f} alike on average; the mean score of all {len(seeds)} ranks them {spearman(_mean(scores), full):.3f} "
              f"({len(seeds)}x the compute)")
    print("Spearman (95 % CI, Bonett and Wright 2000) against the full runs' test accuracy; goal 0.85 at <= 5% of "
          "the full run's training images (a recalibration image counts a third)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spaces", default="mbconv-small,nb201-widths", help="comma separated")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--truth", action="append", type=Path, help="proxy_fidelity.py --save files; each space "
                        f"from the first that has it (default: {', '.join(p.name for p in TRUTH)})")
    parser.add_argument("--students", type=int, help="only the first N of each space (a quick check)")
    parser.add_argument("--train-device", default="cpu")
    parser.add_argument("--save", type=Path, metavar="FILE.json")
    parser.add_argument("--load", type=Path, metavar="FILE.json", help="print the tables of an earlier --save")
    args = parser.parse_args()
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants {','.join(unknown)}: choose from {', '.join(VARIANTS)}")
    for path in [args.load] if args.load else args.truth or []:
        if not path.is_file():
            parser.error(f"{'--load' if args.load else '--truth'} {path}: no such file")
    if args.students is not None and args.students < 1:
        parser.error(f"--students {args.students}: must be at least 1")
    if args.load:
        saved = json.loads(args.load.read_text())
        for space, rows in saved["spaces"].items():
            summarize(space, *_truth(saved["truth"], space, rows))
        return
    truth = [_relative(str(p)) for p in (args.truth or TRUTH)]
    saved = json.loads(args.save.read_text()) if args.save and args.save.exists() else {"spaces": {}}
    if saved["spaces"] and saved["truth"] != truth:  # its rows are the students of those files, in their order
        raise SystemExit(f"--save {args.save}: it holds briefs of the students in {', '.join(saved['truth'])}, "
                         f"not of --truth {', '.join(truth)}; resume it with those files or save elsewhere")
    device = pick_device(args.train_device)
    dataset = load_dataset("fashion-mnist", None)
    teacher = default_teacher(dataset, device, progress=lambda line: print(line, flush=True))
    teacher_acc = teacher_test_accuracy(teacher, dataset)
    if saved["spaces"]:
        check_same_teacher(str(args.save), saved, teacher.sha256, teacher_acc)
    print(f"teacher: hwkd's default, test accuracy {100 * teacher_acc:.2f}%, sha256 {teacher.sha256[:12]}...",
          flush=True)
    logits = teacher.logits(dataset.normalize(dataset.train.images))
    teacher_val = teacher.logits(dataset.normalize(dataset.val.images))
    saved.update(truth=truth, teacher_test_acc=teacher_acc, teacher_sha256=teacher.sha256)
    for space_name in args.spaces.split(","):
        students, train_images, epochs = truth_of(_paths(truth), space_name)
        students = students[: args.students]
        if train_images != len(dataset.train):
            raise SystemExit(f"{space_name}: the --truth file trained on {train_images} images, this data has "
                             f"{len(dataset.train)}")
        space = load_space(space_name)
        rows = saved["spaces"].setdefault(space_name, {})
        for name in args.variants.split(","):
            done = rows.setdefault(name, [])
            for i, student in enumerate(students[len(done):], start=len(done)):
                torch.manual_seed(VARIANTS[name].config.seed)
                model = space.build(student.arch, dataset.num_classes, dataset.input_shape)
                done.append(brief_scores(VARIANTS[name], model, dataset, logits, teacher_val, device))
                print(f"{space_name} {name} {i + 1}/{len(students)}: {100 * done[-1]['acc']:.2f}% "
                      f"(full {100 * student.full_acc:.2f}%) in {done[-1]['seconds']:.1f} s", flush=True)
                if args.save:
                    write_atomic(args.save, json.dumps(saved, indent=1))  # a kill never leaves half a file
        summarize(space_name, students, rows, train_images, epochs)


def _mean(rows: list[list[float]]) -> list[float]:
    return [statistics.mean(column) for column in zip(*rows)]


def _relative(path: str) -> str:
    """A --truth path as saved: relative to the repository where it is in it, so --load works from any clone."""
    resolved, root = Path(path).resolve(), Path(__file__).parent.parent.resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)


def _paths(saved: list[str]) -> list[Path]:
    """--truth paths as saved (relative to the repository where they are in it) to open."""
    root = Path(__file__).parent.parent
    return [p if p.is_absolute() else root / p for p in map(Path, saved)]


def _truth(paths: list[str], space: str,
           rows: dict[str, list[dict]]) -> tuple[list[Student], dict[str, list[dict]], int, int]:
    students, train_images, epochs = truth_of(_paths(paths), space)
    saved = max((len(r) for r in rows.values()), default=0)  # a file of the first --students N only
    return students[:saved], rows, train_images, epochs


if __name__ == "__main__":
    main()
