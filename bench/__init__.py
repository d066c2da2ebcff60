"""Benchmarks; each script prints one JSON object as its last line. A package so that Ray
workers can import helpers such as ``bench.scripted_model``."""
