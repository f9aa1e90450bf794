"""The static HTML report: assets on disk, report.json, and index.html from Jinja2 templates."""

from nnvis_reports.build import build_report
from nnvis_reports.writer import SCHEMA_VERSION, ReportWriter

__all__ = ["SCHEMA_VERSION", "ReportWriter", "build_report"]
