"""Tie a run together: prepare (usage errors), stream the work into the writer, write the files."""

from __future__ import annotations

from typing import Callable

from nnvis_core.config import ReportConfig
from nnvis_core.registry import Registry
from nnvis_core.runner import RunOutcome, check_input_size, execute, prepare
from nnvis_core.plugin import Scope
from nnvis_reports.writer import ReportWriter


def build_report(
    config: ReportConfig,
    registry: Registry,
    progress: Callable[[int], Callable[[int], None]] | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> RunOutcome:
    """Run every selected plugin over the folder and write OUT/index.html and report.json.

    progress(total) returns an `advance(n)` callable (or use None for no progress).
    Raises runner.UsageError before writing anything when the options are wrong.
    """
    runs, records, ctx = prepare(config, registry)
    check_input_size(ctx, records)
    writer = ReportWriter(config.out_dir, config.image_dir, ctx, runs, records, registry.failures)
    per_image = sum(1 for r in runs if r.plugin.scope is Scope.IMAGE)
    total = len(records) * max(1, per_image) + (len(runs) - per_image)
    advance = progress(total) if progress else (lambda n: None)
    outcome = execute(config, registry, writer, runs, records, ctx, advance, log)
    writer.finish()
    return outcome
