"""Reports from a study written by hand: the front (Optuna's best trials, without repeats or
infeasible students), the table, the trust note, and the files."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest

from hwkd.records import TrialWriter
from hwkd.reports import build_report, front_table, latency_note, pareto_front, write_reports
from hwkd.run_folder import STUDY_NAME, RunFolder

# (val_accuracy, latency_ms, duplicate_of, state); state None: complete
TRIALS = [
    (0.80, 1.0, None, None),   # 0: on the front
    (0.70, 2.0, None, None),   # 1: beaten by 0 on both axes
    (0.90, 3.0, None, None),   # 2: on the front (most accurate)
    (0.80, 1.0, 0, None),      # 3: trial 0 again: its result reused, not a second point
    (0.60, 0.5, None, None),   # 4: on the front (fastest)
    (None, 0.2, None, "PRUNED"),  # 5: over a budget, never trained
]


def _study(storage: str | None = None, calibrated_error_pct: float | None = None) -> optuna.Study:
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, directions=["maximize", "minimize"])
    for n, (accuracy, latency, duplicate, state) in enumerate(TRIALS):
        trial = study.ask()
        TrialWriter(trial).update(arch=f"arch-{n}", latency_ms=latency, latency_source="model", macs=1000 * (n + 1),
                                  peak_memory_bytes=2048, params_bytes=400, duplicate_of=duplicate,
                                  latency_calibrated=calibrated_error_pct is not None,
                                  latency_expected_error_pct=calibrated_error_pct,
                                  infeasible="latency 0.200 ms > --max-latency-ms 0.1" if state else None)
        if state:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, [accuracy, latency])
    return study


def test_the_front_is_optunas_without_repeats_best_accuracy_first() -> None:
    front = pareto_front(_study())
    assert [t.number for t in front] == [2, 0, 4]
    assert [t.val_accuracy for t in front] == [0.90, 0.80, 0.60]
    assert front[1].arch == "arch-0" and front[1].latency_ms == 1.0


def test_the_table_and_the_trust_note() -> None:
    front = pareto_front(_study())
    table = front_table(front).splitlines()
    assert table[1].split()[:4] == ["2", "90.00%", "3.000", "model"] and table[1].endswith("arch-2")
    assert table[-1] == "latency: cost model, uncalibrated: error unknown (hwkd calibrate fits it to your board)"
    assert latency_note(pareto_front(_study(calibrated_error_pct=4.3))) == "cost model, calibrated: median error 4.3 %"
    assert front_table(()) == "no trained student yet"


def test_write_reports_writes_every_file_and_returns_the_report(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    study = _study(f"sqlite:///{tmp_path / 'study.db'}")
    report = write_reports(folder, study)
    assert [t.number for t in report.front] == [2, 0, 4]
    assert report.state_counts() == {"COMPLETE": 5, "INFEASIBLE": 1} and report.fidelity is None
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials.trial) == [0, 1, 2, 3, 4, 5]
    assert trials.loc[5, "state"] == "INFEASIBLE" and trials.loc[5, "reason"].startswith("latency 0.200 ms")
    assert trials.loc[3, "duplicate_of"] == 0
    assert list(pd.read_csv(tmp_path / "pareto.csv").trial) == [2, 0, 4]
    for name in ("pareto.png", "pareto.html"):
        assert (tmp_path / name).stat().st_size > 1000


def test_waiting_trials_are_not_reported() -> None:
    study = _study()
    study.enqueue_trial({"x": 1})
    report = build_report(RunFolder(Path("/nonexistent")), study)
    assert len(report.trials) == len(TRIALS)


@pytest.mark.parametrize("sources, note", [
    (["measured"], "measured on the device"),
    (["model", "measured"], "cost model, uncalibrated: error unknown (hwkd calibrate fits it to your board); "
                            "some measured"),
])
def test_the_note_names_measured_latencies(sources: list[str], note: str) -> None:
    from hwkd.records import TrialOutcome

    assert latency_note([TrialOutcome(number=i, state="COMPLETE", latency_source=s)
                         for i, s in enumerate(sources)]) == note


def test_a_score_blended_with_synflow_ranks_the_front_and_the_report_says_so(tmp_path: Path) -> None:
    # (val_accuracy, log10 SynFlow, latency): the score of 1 point per decade ranks 1 above 0
    rows = [(0.80, 10.0, 1.0), (0.79, 12.0, 1.0), (0.60, 8.0, 0.5)]
    study = optuna.create_study(study_name=STUDY_NAME, directions=["maximize", "minimize"])
    for accuracy, syn, latency in rows:
        trial = study.ask()
        TrialWriter(trial).update(arch="a", val_accuracy=accuracy, synflow=syn, latency_ms=latency,
                                  latency_source="model", macs=1, peak_memory_bytes=1, params_bytes=4)
        study.tell(trial, [accuracy + syn / 100, latency])
    front = pareto_front(study)
    assert [t.number for t in front] == [1, 2]
    table = front_table(front, synflow_points=1.0).splitlines()
    assert table[0].split()[:4] == ["trial", "score", "synflow", "val_acc"]
    assert table[1].split()[:4] == ["1", "91.00", "12.00", "79.00%"]
    assert table[-2] == "score: brief validation accuracy + 1 pt per decade of SynFlow (log10, the synflow column)"


def test_proxy_fidelity_names_the_score_and_each_of_its_parts() -> None:
    from hwkd.reports import proxy_fidelity

    frame = pd.DataFrame({"val_accuracy": [0.80, 0.85, 0.90, 0.70], "synflow": [10.0, 10.0, 10.0, 22.0],
                          "full_test_accuracy": [0.86, 0.88, 0.91, 0.89], "duplicate_of": [None] * 4})
    frame["score"] = frame.val_accuracy + frame.synflow / 100  # 0.90, 0.95, 1.00, 0.92
    fidelity = proxy_fidelity(frame)
    assert fidelity is not None and fidelity.students == 4
    # full ranks 1 2 4 3; the score 1 3 4 2: 1 - 6 * 2 / 60; accuracy 2 3 4 1: 1 - 6 * 6 / 60;
    # SynFlow 2 2 2 4 (a three-way tie): the ranks' Pearson, 1 / sqrt(3 * 5)
    assert fidelity.spearman == pytest.approx(0.8) and fidelity.accuracy_spearman == pytest.approx(0.4)
    assert fidelity.synflow_spearman == pytest.approx(15 ** -0.5)
    assert fidelity.line().endswith("(the search's score vs full test accuracy); brief accuracy alone: Spearman "
                                    "0.400; SynFlow of the untrained students alone: Spearman 0.258")


def test_proxy_fidelity_says_how_far_its_spearman_can_be_read_from_8_students() -> None:
    from hwkd.reports import proxy_fidelity

    # 8 students whose score swaps two neighbours of the full ranking: Spearman 1 - 6 * 2 / (8 * 63)
    full = [0.80 + 0.01 * i for i in range(8)]
    score = [0.5, 0.6, 0.8, 0.7, 0.9, 1.0, 1.1, 1.2]
    frame = pd.DataFrame({"val_accuracy": score, "synflow": [10.0] * 8, "full_test_accuracy": full,
                          "duplicate_of": [None] * 8, "score": score})
    fidelity = proxy_fidelity(frame)
    assert fidelity is not None and fidelity.spearman == pytest.approx(1 - 12 / 504)
    low, high = fidelity.spearman_interval  # type: ignore[misc]
    assert 0.8 < low < fidelity.spearman < high < 1  # 8 students ranked 0.976: 0.82 to 1.00
    assert f"Spearman 0.976 (95 % interval {low:.2f} to {high:.2f}), Kendall" in fidelity.line()
    assert proxy_fidelity(frame.iloc[:7]).spearman_interval is None  # type: ignore[union-attr]
