"""Bundled real request traces (data files only; see README.md here for sources and licences)."""
