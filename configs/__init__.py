"""Experiment YAMLs shipped with the package (found by `core.shipped`, not imported as code)."""
