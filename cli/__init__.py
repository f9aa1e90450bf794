"""The `nnvis` command line: a thin click layer over nnvis_core and nnvis_reports."""
