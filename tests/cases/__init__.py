"""Reusable test cases and helpers shared by several suites."""
