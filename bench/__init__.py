"""Benchmarks. Run them from the project directory: `.venv/bin/python bench/digest.py`."""
