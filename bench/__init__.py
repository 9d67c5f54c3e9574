"""Benchmarks: each compares ltx-lora against a baseline measured in the same run (a ratio)."""
