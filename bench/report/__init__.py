"""report: results made fit to publish - the `report` command and report.md (report), one row per
configuration with speedup and scaling efficiency (caserows), and report.png (plot).

May import: core, measure, data, results, run, scaling.
"""
