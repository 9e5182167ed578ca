"""Small helpers shared by every layer (`core/`, `data/`, `launch/`, `benchmarks/`).

Imports nothing from the project: `data/` may use it without depending on `core/`.
"""
