"""Tie a run together: prepare (usage errors), stream the work into the writer, move the report into place."""

from __future__ import annotations

from typing import Callable

from nnvis_core.cache import ResultCache, run_fingerprint
from nnvis_core.config import ReportConfig
from nnvis_core.plugin import Scope
from nnvis_core.registry import Registry
from nnvis_core.runner import RunOutcome, UsageError, check_input_size, execute, prepare
from nnvis_reports.output import OutputError, OutputFolder
from nnvis_reports.writer import ReportWriter


def build_report(
    config: ReportConfig,
    registry: Registry,
    progress: Callable[[int], Callable[[int], None]] | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> RunOutcome:
    """Run every selected plugin over the folder and write OUT/index.html and report.json.

    The report is written beside OUT and moved into place when complete (see
    nnvis_reports.output); results are cached there too, so a run interrupted by
    Ctrl-C or a kill can be continued with config.resume.
    progress(total) returns an `advance(n)` callable (or use None for no progress).
    Raises runner.UsageError before writing anything when the options are wrong.
    """
    runs, records, ctx = prepare(config, registry)
    check_input_size(ctx, records)
    try:
        output = OutputFolder(config.out_dir, config.force)
        output.check()
        staging = output.begin(config.resume, log)
    except OutputError as error:
        raise UsageError(str(error)) from None
    try:
        cache = ResultCache(output.cache_dir, run_fingerprint(ctx))
        writer = ReportWriter(staging, config.image_dir, ctx, runs, records, registry.failures)
        per_image = sum(1 for r in runs if r.plugin.scope is Scope.IMAGE)
        total = len(records) * max(1, per_image) + (len(runs) - per_image)
        advance = progress(total) if progress else (lambda n: None)
        outcome = execute(config, registry, writer, runs, records, ctx, advance, log, cache)
        writer.finish()
        output.commit()
    finally:
        output.release()  # after a failure the work folder stays, for --resume
    if cache.hits:
        log(f"reused {cache.hits} results of an interrupted run")
    return outcome
