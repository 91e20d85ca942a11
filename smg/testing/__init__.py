"""Test harness shipped with smg: mock workers, twin parametrization, fuzz proxy."""
