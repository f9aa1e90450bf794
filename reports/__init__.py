"""The static HTML report, a sink of the core's run: assets on disk, report.json, and index.html."""

from nnvis_reports.sink import HtmlReport, build_report
from nnvis_reports.writer import SCHEMA_VERSION, ReportWriter

__all__ = ["SCHEMA_VERSION", "HtmlReport", "ReportWriter", "build_report"]
