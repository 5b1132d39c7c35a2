"""Lowered students on disk, so a student is compiled by TVM once per machine, not once per process.

A calibration, a continued search or a new search with a calibrated profile re-costs students it
lowered before from this cache alone: the cost model needs only the kernels' descriptions
(`hwkd.latency.lowering.Kernel`), which are pure data. One SQLite file under the cache folder, its
name carrying `LOWERING_VERSION` and TVM's version, so a change of either starts a new file instead
of reading descriptions of other code. Many processes (search workers) share it safely.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from dataclasses import fields
from pathlib import Path
from typing import Any

from hwkd.cache import cache_dir
from hwkd.latency.lowered import LOWERING_VERSION, Kernel, KernelFeatures, LoopBody, LoweredGraph
from hwkd.latency.onnxruntime_graph import RuntimeNode

log = logging.getLogger(__name__)


def graph_key(*parts: object) -> str:
    """A key for what determines a lowered graph (space file, architecture, shapes...)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


class LoweredCache:
    """Lowered graphs without their TVM module, by key."""

    def __init__(self, folder: Path | None = None) -> None:
        import tvm

        root = (folder or cache_dir()) / "lowered"
        self.path = root / f"v{LOWERING_VERSION}-tvm{tvm.__version__}.sqlite"
        self._db: sqlite3.Connection | None = None
        self.hits = 0
        self.misses = 0

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE IF NOT EXISTS graphs (key TEXT PRIMARY KEY, record TEXT NOT NULL)")
                db.execute("CREATE TABLE IF NOT EXISTS runtime_graphs (key TEXT PRIMARY KEY, record TEXT NOT NULL)")
                self._db = db
            except sqlite3.Error as exc:  # a read-only or full disk: work on without the cache
                log.warning("lowered-student cache %s unusable (%s); students are lowered anew", self.path, exc)
                return None
        return self._db

    def get(self, key: str) -> LoweredGraph | None:
        db = self._connect()
        row = None
        if db is not None:
            try:
                row = db.execute("SELECT record FROM graphs WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as exc:
                log.warning("lowered-student cache %s unreadable (%s)", self.path, exc)
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return _from_json(json.loads(row[0]))

    def put(self, key: str, lowered: LoweredGraph) -> None:
        db = self._connect()
        if db is None:
            return
        try:
            db.execute("INSERT OR REPLACE INTO graphs VALUES (?, ?)", (key, json.dumps(_to_json(lowered))))
        except sqlite3.Error as exc:
            log.warning("lowered-student cache %s not written (%s)", self.path, exc)

    def get_nodes(self, key: str) -> tuple[RuntimeNode, ...] | None:
        """The nodes ONNX Runtime runs of a student, kept beside the graphs, or None."""
        db = self._connect()
        if db is None:
            return None
        try:
            row = db.execute("SELECT record FROM runtime_graphs WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            log.warning("lowered-student cache %s unreadable (%s)", self.path, exc)
            return None
        if row is None:
            return None
        return tuple(RuntimeNode(op, tuple(map(tuple, ins)), tuple(map(tuple, outs)), read, written)
                     for op, ins, outs, read, written in json.loads(row[0]))

    def put_nodes(self, key: str, nodes: tuple[RuntimeNode, ...]) -> None:
        db = self._connect()
        if db is None:
            return
        record = json.dumps([[n.op, n.input_shapes, n.output_shapes, n.bytes_read, n.bytes_written] for n in nodes])
        try:
            db.execute("INSERT OR REPLACE INTO runtime_graphs VALUES (?, ?)", (key, record))
        except sqlite3.Error as exc:
            log.warning("lowered-student cache %s not written (%s)", self.path, exc)


# A LoopBody as a list of its fields in this order; the features of a graph's kernels are written
# once each (students repeat the same few kernels many times), kernels refer to them by index.
_BODY_FIELDS = tuple(f.name for f in fields(LoopBody))


def _to_json(lowered: LoweredGraph) -> dict[str, Any]:
    index: dict[int, int] = {}  # id(KernelFeatures) -> position in "features"
    features: list[list[Any]] = []
    kernels = []
    for k in lowered.kernels:
        f = k.features
        if id(f) not in index:
            index[id(f)] = len(features)
            features.append([f.kind, f.flops, f.strategy, [[getattr(b, n) for n in _BODY_FIELDS] for b in f.bodies]])
        kernels.append([k.name, index[id(f)], k.bytes_read, k.bytes_written])
    return {
        "features": features,
        "kernels": kernels,
        "weight_only_kernels": lowered.weight_only_kernels,
        "macs": lowered.macs,
        "params_bytes": lowered.params_bytes,
        "peak_memory_bytes": lowered.peak_memory_bytes,
        "structure_hash": lowered.structure_hash,
    }


def _from_json(row: dict[str, Any]) -> LoweredGraph:
    features = [
        KernelFeatures(kind=kind, flops=flops, strategy=strategy,
                       bodies=tuple(LoopBody(*body) for body in bodies))
        for kind, flops, strategy, bodies in row["features"]
    ]
    kernels = tuple(
        Kernel(name=name, features=features[at], bytes_read=read, bytes_written=written)
        for name, at, read, written in row["kernels"]
    )
    return LoweredGraph(
        kernels=kernels,
        weight_only_kernels=row["weight_only_kernels"],
        macs=row["macs"],
        params_bytes=row["params_bytes"],
        peak_memory_bytes=row["peak_memory_bytes"],
        structure_hash=row["structure_hash"],
        fused_mod=None,
    )
