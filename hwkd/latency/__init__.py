"""Latency and memory of students on a device, from the TVM-compiled graph."""
