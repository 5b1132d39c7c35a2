"""hwkd: find a small, fast student network for an edge device and distill a teacher into it.

The public API (see `hwkd.api` and the README): `search`, `estimate`, `report`, `distill`,
`export`, `calibrate`, the configurations they take and the records they return. Names are
imported on first use, so `import hwkd` (and `hwkd --help`) does not load torch or TVM.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hwkd.errors import HwkdError

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "search": "hwkd.api", "estimate": "hwkd.api", "report": "hwkd.api", "distill": "hwkd.api",
    "export": "hwkd.api", "calibrate": "hwkd.api", "compress": "hwkd.api",
    "CompressConfig": "hwkd.compress_trial", "CompressOutcome": "hwkd.compress_trial", "CompressRecord": "hwkd.records",
    "SearchConfig": "hwkd.searcher", "SearchSummary": "hwkd.searcher",
    "Budgets": "hwkd.records", "FixedSettings": "hwkd.records", "RunRecord": "hwkd.records",
    "TrialOutcome": "hwkd.records", "TrainedStudent": "hwkd.records", "DistillRecord": "hwkd.records",
    "BriefConfig": "hwkd.distillation.config", "FullConfig": "hwkd.distillation.config",
    "Estimate": "hwkd.latency.estimator",
    "Report": "hwkd.reports",
    "DistillOutcome": "hwkd.distill_trial",
    "ExportOutcome": "hwkd.exporter",
    "CalibrateConfig": "hwkd.calibrator", "CalibrationOutcome": "hwkd.calibrator",
    "DeviceProfile": "hwkd.profiles", "load_profile": "hwkd.profiles",
    "SearchSpace": "hwkd.spaces", "load_space": "hwkd.spaces",
}

__all__ = [
    "Budgets", "BriefConfig", "CalibrateConfig", "CalibrationOutcome", "CompressConfig", "CompressOutcome",
    "CompressRecord", "DeviceProfile", "DistillOutcome",
    "DistillRecord", "Estimate", "ExportOutcome", "FixedSettings", "FullConfig", "HwkdError", "Report", "RunRecord",
    "SearchConfig", "SearchSpace", "SearchSummary", "TrainedStudent", "TrialOutcome", "__version__", "calibrate",
    "compress", "distill", "estimate", "export", "load_profile", "load_space", "report", "search",
]

if TYPE_CHECKING:
    from hwkd.api import calibrate, compress, distill, estimate, export, report, search
    from hwkd.calibrator import CalibrateConfig, CalibrationOutcome
    from hwkd.compress_trial import CompressConfig, CompressOutcome
    from hwkd.distill_trial import DistillOutcome
    from hwkd.distillation.config import BriefConfig, FullConfig
    from hwkd.exporter import ExportOutcome
    from hwkd.latency.estimator import Estimate
    from hwkd.profiles import DeviceProfile, load_profile
    from hwkd.records import (
        Budgets,
        CompressRecord,
        DistillRecord,
        FixedSettings,
        RunRecord,
        TrainedStudent,
        TrialOutcome,
    )
    from hwkd.reports import Report
    from hwkd.searcher import SearchConfig, SearchSummary
    from hwkd.spaces import SearchSpace, load_space


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hwkd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
