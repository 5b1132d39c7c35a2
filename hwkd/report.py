"""Reports of a run: the table of trials, the Pareto front, and its plots.

- `trials.csv`: every trial (state, architecture, accuracy, latency with its source, memory,
  MACs, parameters, duration, and the reason of an infeasible or failed one);
- `pareto.csv`: the front of feasible trained students (higher validation accuracy, lower
  latency), best accuracy first;
- `pareto.png` (matplotlib) and `pareto.html` (plotly, self-contained: works offline).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from hwkd.errors import RunError
from hwkd.run_folder import STUDY_NAME, RunFolder, write_atomic

log = logging.getLogger(__name__)

COLUMNS = [
    "trial", "state", "arch", "val_accuracy", "latency_ms", "latency_source", "latency_calibrated",
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


def trials_frame(study: Any) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "WAITING":  # queued opening students: not tried yet
            continue
        attrs = t.user_attrs
        values = t.values or [None, None]
        rows.append({
            "trial": t.number,
            "state": {"PRUNED": "INFEASIBLE"}.get(t.state.name, t.state.name),
            "arch": attrs.get("arch"),
            "val_accuracy": values[0],
            "latency_ms": attrs.get("latency_ms", values[1]),
            "latency_source": attrs.get("latency_source"),
            "latency_calibrated": attrs.get("latency_calibrated", False),
            "latency_expected_error_pct": attrs.get("latency_expected_error_pct"),
            "model_latency_ms": attrs.get("model_latency_ms"),
            "peak_memory_bytes": attrs.get("peak_memory_bytes"),
            "params_bytes": attrs.get("params_bytes"),
            "macs": attrs.get("macs"),
            "duration_s": attrs.get("duration_s"),
            "train_images_per_s": attrs.get("train_images_per_s"),
            "duplicate_of": attrs.get("duplicate_of"),
            "function_key": attrs.get("function_key"),
            "reason": attrs.get("infeasible") or attrs.get("fail_reason"),
            "full_test_accuracy": None,  # filled from RUN/distilled by write_reports
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def pareto_front(trials: pd.DataFrame) -> pd.DataFrame:
    """Completed, not-duplicate trials that no other beats on both accuracy and latency."""
    done = trials[(trials.state == "COMPLETE") & trials.duplicate_of.isna()].copy()
    if done.empty:
        return done
    done = done.sort_values(["latency_ms", "val_accuracy"], ascending=[True, False])
    front, best = [], -1.0
    for _, row in done.iterrows():
        if row.val_accuracy > best:
            front.append(row)
            best = row.val_accuracy
    return pd.DataFrame(front).sort_values("val_accuracy", ascending=False).reset_index(drop=True)


@dataclass(frozen=True)
class ProxyFidelity:
    """How well brief distillation ranked the students that were later fully distilled."""

    students: int
    spearman: float
    kendall: float

    def line(self) -> str:
        return (f"proxy fidelity over {self.students} fully distilled students: Spearman {self.spearman:.3f}, "
                f"Kendall {self.kendall:.3f} (brief validation accuracy vs full test accuracy)")


MIN_FIDELITY_STUDENTS = 3


def full_accuracies(folder: RunFolder) -> dict[int, float]:
    """Test accuracy of each fully distilled trial (RUN/distilled/trial-N/result.json)."""
    out = {}
    for path in sorted((folder.path / "distilled").glob("trial-*/result.json")):
        try:
            data = json.loads(path.read_text())
            out[int(data["trial"])] = float(data["test_accuracy"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s is unreadable (%s); left out of the report", path, exc)
    return out


def proxy_fidelity(trials: pd.DataFrame) -> ProxyFidelity | None:
    from hwkd.stats import kendall, spearman

    both = trials.dropna(subset=["val_accuracy", "full_test_accuracy"])
    both = both[both.duplicate_of.isna()]
    if len(both) < MIN_FIDELITY_STUDENTS:
        return None
    brief, full = list(both.val_accuracy), list(both.full_test_accuracy)
    return ProxyFidelity(len(both), spearman(brief, full), kendall(brief, full))


def write_reports(folder: RunFolder, study: Any | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    study = study if study is not None else load_study(folder)
    trials = trials_frame(study)
    full = full_accuracies(folder)
    trials["full_test_accuracy"] = [full.get(int(n)) for n in trials.trial]
    front = pareto_front(trials)
    write_atomic(folder.file("trials.csv"), trials.to_csv(index=False))
    write_atomic(folder.file("pareto.csv"), front.to_csv(index=False))
    info = folder.read() if folder.exists() else {}
    title = _title(info)
    _plot_png(folder, trials, front, title)
    _plot_html(folder, trials, front, title)
    fidelity = proxy_fidelity(trials)
    if fidelity is not None:
        _plot_fidelity(folder, trials, fidelity)
    return trials, front


def _plot_fidelity(folder: RunFolder, trials: pd.DataFrame, fidelity: ProxyFidelity) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    both = trials.dropna(subset=["val_accuracy", "full_test_accuracy"])
    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    ax.scatter(100 * both.val_accuracy, 100 * both.full_test_accuracy, color="#1f6feb")
    for r in both.itertuples():
        ax.annotate(f"#{int(r.trial)}", (100 * r.val_accuracy, 100 * r.full_test_accuracy), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.set_xlabel("validation accuracy after brief distillation (%)")
    ax.set_ylabel("test accuracy after full distillation (%)")
    ax.set_title(f"Spearman {fidelity.spearman:.2f}, Kendall {fidelity.kendall:.2f} ({fidelity.students} students)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    partial = folder.file("fidelity.png.partial")
    fig.savefig(partial, format="png")
    plt.close(fig)
    partial.replace(folder.file("fidelity.png"))


def _title(info: dict[str, Any]) -> str:
    config = info.get("config", {})
    return f"{config.get('space', '?')} on {config.get('device', '?')} — {config.get('data', '?')} data"


def _plot_png(folder: RunFolder, trials: pd.DataFrame, front: pd.DataFrame, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    done = trials[trials.state == "COMPLETE"]
    ax.scatter(done.latency_ms, 100 * done.val_accuracy, s=22, color="#9aa5b1", label="trained students")
    over = trials[(trials.state == "INFEASIBLE") & trials.latency_ms.notna()]
    if not over.empty:
        ax.scatter(over.latency_ms, [ax.get_ylim()[0]] * len(over), marker="x", color="#d64545",
                   label="over budget (not trained)")
    if not front.empty:
        ordered = front.sort_values("latency_ms")
        ax.step(ordered.latency_ms, 100 * ordered.val_accuracy, where="post", color="#1f6feb", linewidth=1.5)
        ax.scatter(ordered.latency_ms, 100 * ordered.val_accuracy, s=46, color="#1f6feb", zorder=3,
                   label="Pareto front")
        for _, row in ordered.iterrows():
            ax.annotate(f"#{int(row.trial)}", (row.latency_ms, 100 * row.val_accuracy), textcoords="offset points",
                        xytext=(4, 4), fontsize=8, color="#1f6feb")
    ax.set_xlabel(f"latency (ms, {latency_note(done)})")
    ax.set_ylabel("validation accuracy after brief distillation (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    partial = folder.file("pareto.png.partial")
    fig.savefig(partial, format="png")
    plt.close(fig)
    partial.replace(folder.file("pareto.png"))


def _plot_html(folder: RunFolder, trials: pd.DataFrame, front: pd.DataFrame, title: str) -> None:
    import plotly.graph_objects as go

    def hover(frame: pd.DataFrame) -> list[str]:
        return [
            f"trial {int(r.trial)}<br>{r.arch}<br>accuracy {100 * (r.val_accuracy or 0):.2f}%<br>"
            f"latency {r.latency_ms:.3f} ms ({r.latency_source})<br>peak memory {(r.peak_memory_bytes or 0) / 1024:.0f} KiB"
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
                                 line={"shape": "hv", "color": "#1f6feb"}, name="Pareto front",
                                 hovertext=hover(ordered), hoverinfo="text"))
    fig.update_layout(title=title, xaxis_title=f"latency (ms, {latency_note(done)})", yaxis_title="validation accuracy (%)",
                      template="plotly_white")
    write_atomic(folder.file("pareto.html"), fig.to_html(include_plotlyjs=True, full_html=True))


def latency_note(trials: pd.DataFrame) -> str:
    """How far the latencies of `trials` can be trusted, in a few words."""
    sources = sorted(str(s) for s in trials.latency_source.dropna().unique()) or ["model"]
    if sources == ["measured"]:
        return "measured on the device"
    modeled = trials[trials.latency_source != "measured"]
    errors = modeled.latency_expected_error_pct.dropna() if "latency_expected_error_pct" in modeled else []
    if len(errors):
        trust = f"cost model, calibrated: median error {float(errors.iloc[0]):.1f} %"
    else:
        trust = "cost model, uncalibrated: error unknown (hwkd calibrate fits it to your board)"
    return trust if sources == ["model"] else f"{trust}; some measured"


def front_table(front: pd.DataFrame) -> str:
    if front.empty:
        return "no trained student yet"
    lines = [f"{'trial':>5} {'val_acc':>8} {'latency_ms':>11} {'source':<8} {'mem_KiB':>8} {'MMACs':>7} {'params_k':>8}  arch"]
    for r in front.itertuples():
        lines.append(
            f"{int(r.trial):>5} {100 * r.val_accuracy:>7.2f}% {r.latency_ms:>11.3f} {str(r.latency_source):<8} "
            f"{(r.peak_memory_bytes or 0) / 1024:>8.0f} {(r.macs or 0) / 1e6:>7.2f} {(r.params_bytes or 0) / 4e3:>8.1f}  {r.arch}"
        )
    lines.append(f"latency: {latency_note(front)}")
    return "\n".join(lines)
