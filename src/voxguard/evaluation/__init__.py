"""Offline evaluation: detection metrics, scoring data sets, reports."""
