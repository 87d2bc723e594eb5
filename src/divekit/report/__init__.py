"""The HTML report: one self-contained page built from experiments' ``results.json`` files."""

from divekit.report.html import build_report, collect_results

__all__ = ["build_report", "collect_results"]
