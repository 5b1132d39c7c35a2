"""Reports of a run: the table of trials, the Pareto front, and its plots.

- `trials.csv`: every trial (state, architecture, score, brief accuracy, SynFlow, latency with its
  source, memory, MACs, parameters, duration, and the reason of an infeasible or failed one);
- `pareto.csv`: the front of feasible trained students (higher score, lower latency), best
  score first; the score is the brief validation accuracy plus the run's points per decade of
  SynFlow (`--synflow-points`), or the accuracy alone;
- `pareto.png` (matplotlib) and `pareto.html` (plotly, self-contained: works offline).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from hwkd.errors import RunError
from hwkd.files import write_atomic
from hwkd.records import RunRecord, TrialOutcome
from hwkd.run_folder import STUDY_NAME, RunFolder

log = logging.getLogger(__name__)

COLUMNS = [
    "trial", "state", "arch", "score", "val_accuracy", "synflow", "latency_ms", "latency_source", "latency_calibrated",
    "latency_expected_error_pct", "model_latency_ms",
    "peak_memory_bytes", "params_bytes", "macs", "duration_s", "train_images_per_s", "duplicate_of",
    "function_key", "reason", "full_test_accuracy",
]


def load_study(folder: RunFolder) -> Any:
    import optuna

    from hwkd.errors import error_line
    from hwkd.storage import hide_secrets, masked

    storage = folder.storage_url()
    try:
        return optuna.load_study(study_name=STUDY_NAME, storage=storage)
    except Exception as exc:  # noqa: BLE001 - a missing or broken storage
        raise RunError(f"{folder.path}: cannot open its study in {masked(storage)} "
                       f"({hide_secrets(error_line(exc), storage)}); a password is read from $HWKD_STORAGE "
                       "or, for PostgreSQL, PGPASSWORD or ~/.pgpass, never from run.json") from None


@dataclass(frozen=True)
class FinalStudent:
    """A student after the search, at its test accuracy: fully distilled, pruned, or int8."""

    kind: str  # "distilled", "pruned" or "int8"
    trial: int
    name: str  # "#N", "#N-NAME" for a pruned one, "#N int8" ...
    latency_ms: float  # int8: the fp32 student's estimate (hwkd does not model int8 kernels)
    test_accuracy: float
    from_latency_ms: float | None = None  # a pruned student: its distilled student's latency


@dataclass(frozen=True)
class Report:
    """What `hwkd report` shows: every trial that ran, the front, and the students after the search."""

    trials: tuple[TrialOutcome, ...]
    front: tuple[TrialOutcome, ...]  # best score first
    full_test_accuracy: Mapping[int, float]  # trial -> test accuracy after `hwkd distill`
    fidelity: ProxyFidelity | None
    final: tuple[FinalStudent, ...] = ()  # fully distilled, pruned (hwkd compress) and int8 (hwkd export)
    synflow_points: float = 0.0  # the run's score (BriefConfig.synflow_points); 0: brief accuracy alone

    def frame(self) -> pd.DataFrame:
        """The trials as trials.csv holds them."""
        return trials_frame(self.trials, self.full_test_accuracy)

    def state_counts(self) -> dict[str, int]:
        return dict(Counter(t.state for t in self.trials))


def trials_frame(trials: Sequence[TrialOutcome], full: Mapping[int, float] | None = None) -> pd.DataFrame:
    full = full or {}
    rows = [{**{column: getattr(t, column, None) for column in COLUMNS}, "trial": t.number, "reason": t.reason,
             "full_test_accuracy": full.get(t.number)} for t in trials]
    return pd.DataFrame(rows, columns=COLUMNS)


def pareto_front(study: Any) -> tuple[TrialOutcome, ...]:
    """Trained students no other beats on both score and latency (Optuna's `best_trials`, which
    keeps only feasible trials), without repeats of a student trained before; best score first."""
    front = [TrialOutcome.from_trial(t) for t in study.best_trials]
    front = [t for t in front if t.duplicate_of is None and t.score is not None]
    return tuple(sorted(front, key=lambda t: (-(t.score or 0.0), t.latency_ms or 0.0, t.number)))


@dataclass(frozen=True)
class ProxyFidelity:
    """How well the search's score ranked the students that were later fully distilled, and how
    well each of its two parts did."""

    students: int
    spearman: float  # the search's score against full test accuracy
    kendall: float
    accuracy_spearman: float | None = None  # brief accuracy alone, when the score was more than that
    synflow_spearman: float | None = None  # SynFlow alone (when every student records it)

    @property
    def spearman_interval(self) -> tuple[float, float] | None:
        """95 % interval of `spearman` (from 8 students): how far a few students' ranking can be read."""
        from hwkd.stats import spearman_interval

        return spearman_interval(self.spearman, self.students)

    @property
    def interval_words(self) -> str:
        """`spearman_interval` as the report line and fidelity.png say it, or "" below 8 students."""
        interval = self.spearman_interval
        return "" if interval is None else f" (95 % interval {interval[0]:.2f} to {interval[1]:.2f})"

    def line(self) -> str:
        line = (f"proxy fidelity over {self.students} fully distilled students: Spearman {self.spearman:.3f}"
                f"{self.interval_words}, "
                f"Kendall {self.kendall:.3f} (the search's score vs full test accuracy)")
        if self.accuracy_spearman is not None:
            line += f"; brief accuracy alone: Spearman {self.accuracy_spearman:.3f}"
        if self.synflow_spearman is not None:
            line += f"; SynFlow of the untrained students alone: Spearman {self.synflow_spearman:.3f}"
        return line


MIN_FIDELITY_STUDENTS = 3


def full_accuracies(folder: RunFolder) -> dict[int, float]:
    """Test accuracy of each fully distilled trial (RUN/distilled/trial-N/result.json)."""
    out = {}
    for number in folder.distilled_trials():
        try:
            record = folder.read_distilled(number)
        except RunError as exc:
            log.warning("%s; left out of the report", exc)
            continue
        if record is not None:
            out[number] = record.test_accuracy
    return out


def proxy_fidelity(trials: pd.DataFrame) -> ProxyFidelity | None:
    from hwkd.stats import kendall, spearman

    both = trials.dropna(subset=["score", "full_test_accuracy"])
    both = both[both.duplicate_of.isna()]
    if len(both) < MIN_FIDELITY_STUDENTS:
        return None
    score, full = list(both.score), list(both.full_test_accuracy)
    blended = not both.val_accuracy.equals(both.score)
    accuracy = spearman(list(both.val_accuracy), full) if blended else None
    syn = None if both.synflow.isna().any() else spearman(list(both.synflow), full)  # runs before it was recorded
    return ProxyFidelity(len(both), spearman(score, full), kendall(score, full), accuracy, syn)


def build_report(folder: RunFolder, study: Any | None = None) -> Report:
    study = study if study is not None else load_study(folder)
    trials = tuple(TrialOutcome.from_trial(t) for t in study.get_trials(deepcopy=False)
                   if t.state.name != "WAITING")  # queued opening students: not tried yet
    full = full_accuracies(folder)
    points = folder.read().fixed.brief.synflow_points if folder.exists() else 0.0
    return Report(trials, pareto_front(study), full, proxy_fidelity(trials_frame(trials, full)),
                  final_students(folder, trials, full), points)


def final_students(folder: RunFolder, trials: Sequence[TrialOutcome],
                   full: Mapping[int, float]) -> tuple[FinalStudent, ...]:
    """The students after the search: each fully distilled one, each pruned one, each int8 export."""
    latency = {t.number: t.latency_ms for t in trials if t.latency_ms is not None}
    out = [FinalStudent("distilled", n, f"#{n}", latency[n], acc) for n, acc in sorted(full.items()) if n in latency]
    for number, name in folder.compressed():
        try:
            record = folder.read_compressed(number, name)
        except RunError as exc:
            log.warning("%s; left out of the report", exc)
            continue
        if record is not None:
            out.append(FinalStudent("pruned", number, f"#{number}-{name}", record.latency_ms, record.test_accuracy,
                                    record.unpruned_latency_ms))
    for export in folder.exports():
        if "onnx_int8" in export.test_accuracy:
            label = f"#{export.trial}" + (f"-{export.compressed}" if export.compressed else "") + " int8"
            out.append(FinalStudent("int8", export.trial, label, export.latency_ms, export.test_accuracy["onnx_int8"]))
    return tuple(out)


def write_reports(folder: RunFolder, study: Any | None = None) -> Report:
    """trials.csv, pareto.csv and the plots; the report they show."""
    report = build_report(folder, study)
    trials = report.frame()
    front = trials_frame(report.front, report.full_test_accuracy)
    write_atomic(folder.file("trials.csv"), trials.to_csv(index=False))
    write_atomic(folder.file("pareto.csv"), front.to_csv(index=False))
    if report.final:
        final = pd.DataFrame([asdict(f) for f in report.final])
        write_atomic(folder.file("final.csv"), final.to_csv(index=False))
    title = _title(folder.read()) if folder.exists() else ""
    points = report.synflow_points
    note = latency_note([t for t in report.trials if t.state == "COMPLETE"])
    _plot_png(folder, trials, front, title, note, report.final, points)
    _plot_html(folder, trials, front, title, note, points)
    if report.fidelity is not None:
        _plot_fidelity(folder, trials, report.fidelity, points)
    return report


def score_name(synflow_points: float) -> str:
    """What a run's score is, in words."""
    if not synflow_points:
        return "brief validation accuracy"
    return f"brief validation accuracy + {synflow_points:g} pt per decade of SynFlow"


def _plot_fidelity(folder: RunFolder, trials: pd.DataFrame, fidelity: ProxyFidelity, synflow_points: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    both = trials.dropna(subset=["score", "full_test_accuracy"])
    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    ax.scatter(100 * both.score, 100 * both.full_test_accuracy, color="#1f6feb")
    for r in both.itertuples():
        ax.annotate(f"#{int(r.trial)}", (100 * r.score, 100 * r.full_test_accuracy), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"the search's score: {score_name(synflow_points)} (%)")
    ax.set_ylabel("test accuracy after full distillation (%)")
    ax.set_title(f"Spearman {fidelity.spearman:.2f}{fidelity.interval_words}, Kendall {fidelity.kendall:.2f} "
                 f"({fidelity.students} students)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    partial = folder.file("fidelity.png.partial")
    fig.savefig(partial, format="png")
    plt.close(fig)
    partial.replace(folder.file("fidelity.png"))


def _title(record: RunRecord) -> str:
    fixed = record.fixed
    return f"{fixed.space} on {fixed.device} — {fixed.data} data"


def _plot_png(folder: RunFolder, trials: pd.DataFrame, front: pd.DataFrame, title: str, note: str,
              final: Sequence[FinalStudent] = (), synflow_points: float = 0.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if final:  # the search's front, and beside it the students after it, on the same latency axis
        fig, (ax, after) = plt.subplots(1, 2, figsize=(14, 5.5), dpi=120, sharex=True)
        _plot_final(after, final)
    else:
        fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    done = trials[trials.state == "COMPLETE"]
    ax.scatter(done.latency_ms, 100 * done.val_accuracy, s=22, color="#9aa5b1", label="trained students")
    over = trials[(trials.state == "INFEASIBLE") & trials.latency_ms.notna()]
    if not over.empty:
        ax.scatter(over.latency_ms, [ax.get_ylim()[0]] * len(over), marker="x", color="#d64545",
                   label="over budget (not trained)")
    if not front.empty:
        # the front is the score's; on the accuracy axis it is a staircase only when the score is the accuracy
        ordered = front.sort_values("latency_ms")
        if synflow_points:
            ax.plot(ordered.latency_ms, 100 * ordered.val_accuracy, color="#1f6feb", linewidth=1, alpha=0.6)
        else:
            ax.step(ordered.latency_ms, 100 * ordered.val_accuracy, where="post", color="#1f6feb", linewidth=1.5)
        ax.scatter(ordered.latency_ms, 100 * ordered.val_accuracy, s=46, color="#1f6feb", zorder=3,
                   label="Pareto front" + (f" of the score ({score_name(synflow_points)})" if synflow_points else ""))
        for _, row in ordered.iterrows():
            ax.annotate(f"#{int(row.trial)}", (row.latency_ms, 100 * row.val_accuracy), textcoords="offset points",
                        xytext=(4, 4), fontsize=8, color="#1f6feb")
    ax.set_xlabel(f"latency (ms, {note})")
    ax.set_ylabel("validation accuracy after brief distillation (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    partial = folder.file("pareto.png.partial")
    fig.savefig(partial, format="png")
    plt.close(fig)
    partial.replace(folder.file("pareto.png"))


def _plot_final(ax: Any, final: Sequence[FinalStudent]) -> None:
    styles = {"distilled": ("o", "#1f6feb", "fully distilled"), "pruned": ("^", "#e8710a", "pruned + KD fine-tuned"),
              "int8": ("x", "#188038", "int8 ONNX (at its fp32 latency)")}
    for kind, (marker, color, label) in styles.items():
        points = [f for f in final if f.kind == kind]
        if not points:
            continue
        ax.scatter([f.latency_ms for f in points], [100 * f.test_accuracy for f in points], marker=marker, s=50,
                   color=color, label=label, zorder=3)
        for f in points:
            ax.annotate(f.name, (f.latency_ms, 100 * f.test_accuracy), textcoords="offset points", xytext=(4, 4),
                        fontsize=8, color=color)
    parents = {f.trial: f for f in final if f.kind == "distilled"}
    for f in final:  # a pruned student points back to the student it was pruned from
        parent = parents.get(f.trial)
        if f.kind == "pruned" and parent is not None:
            ax.annotate("", (f.latency_ms, 100 * f.test_accuracy), (parent.latency_ms, 100 * parent.test_accuracy),
                        arrowprops={"arrowstyle": "->", "color": "#e8710a", "alpha": 0.6})
    ax.set_xlabel("latency (ms, on the run's device)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("after the search: full distillation, pruning, int8")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def _plot_html(folder: RunFolder, trials: pd.DataFrame, front: pd.DataFrame, title: str, note: str,
               synflow_points: float = 0.0) -> None:
    import plotly.graph_objects as go

    def hover(frame: pd.DataFrame) -> list[str]:
        return [
            f"trial {int(r.trial)}<br>{r.arch}<br>accuracy {100 * (r.val_accuracy or 0):.2f}%, "
            f"log10 SynFlow {r.synflow if pd.notna(r.synflow) else float('nan'):.1f}, "
            f"score {100 * (r.score or 0):.2f}<br>"
            f"latency {r.latency_ms:.3f} ms ({r.latency_source})<br>"
            f"peak memory {(r.peak_memory_bytes or 0) / 1024:.0f} KiB"
            f"<br>{(r.macs or 0) / 1e6:.1f} MMACs, {(r.params_bytes or 0) / 4 / 1e3:.1f} k params"
            for r in frame.itertuples()
        ]

    fig = go.Figure()
    done = trials[trials.state == "COMPLETE"]
    fig.add_trace(go.Scatter(x=done.latency_ms, y=100 * done.val_accuracy, mode="markers", name="trained students",
                             marker={"color": "#9aa5b1"}, hovertext=hover(done), hoverinfo="text"))
    if not front.empty:
        ordered = front.sort_values("latency_ms")
        fig.add_trace(go.Scatter(x=ordered.latency_ms, y=100 * ordered.val_accuracy, mode="lines+markers",
                                 line={"shape": "linear" if synflow_points else "hv", "color": "#1f6feb"},
                                 name="Pareto front" + (" of the score" if synflow_points else ""),
                                 hovertext=hover(ordered), hoverinfo="text"))
    fig.update_layout(title=title, xaxis_title=f"latency (ms, {note})",
                      yaxis_title="validation accuracy (%)",
                      template="plotly_white")
    write_atomic(folder.file("pareto.html"), fig.to_html(include_plotlyjs=True, full_html=True))


def latency_note(trials: Sequence[TrialOutcome]) -> str:
    """How far the latencies of `trials` can be trusted, in a few words."""
    sources = sorted({t.latency_source for t in trials if t.latency_source}) or ["model"]
    if sources == ["measured"]:
        return "measured on the device"
    errors = [t.latency_expected_error_pct for t in trials
              if t.latency_source != "measured" and t.latency_expected_error_pct is not None]
    if errors:
        trust = f"cost model, calibrated: median error {float(errors[0]):.1f} %"
    else:
        trust = "cost model, uncalibrated: error unknown (hwkd calibrate fits it to your board)"
    return trust if sources == ["model"] else f"{trust}; some measured"


def front_table(front: Sequence[TrialOutcome], synflow_points: float = 0.0) -> str:
    """The front as `hwkd search` and `hwkd report` print it; with the score and SynFlow columns
    when the run's score was more than the accuracy (`synflow_points`, BriefConfig)."""
    if not front:
        return "no trained student yet"
    blended = bool(synflow_points)
    extra = f" {'score':>7} {'synflow':>7}" if blended else ""
    lines = [f"{'trial':>5}{extra} {'val_acc':>8} {'latency_ms':>11} {'source':<8} {'mem_KiB':>8} {'MMACs':>7} "
             f"{'params_k':>8}  arch"]
    for r in front:
        syn = r.synflow if r.synflow is not None else float("nan")
        extra = f" {100 * (r.score or 0):>7.2f} {syn:>7.2f}" if blended else ""
        lines.append(
            f"{r.number:>5}{extra} {100 * (r.val_accuracy or 0):>7.2f}% {r.latency_ms or 0:>11.3f} "
            f"{str(r.latency_source):<8} "
            f"{(r.peak_memory_bytes or 0) / 1024:>8.0f} {(r.macs or 0) / 1e6:>7.2f} {(r.params_bytes or 0) / 4e3:>8.1f}"
            f"  {r.arch}"
        )
    if blended:
        lines.append(f"score: {score_name(synflow_points)} (log10, the synflow column)")
    lines.append(f"latency: {latency_note(front)}")
    return "\n".join(lines)
