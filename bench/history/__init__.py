"""history: every run of a system over time - the store of runs (store), change points (changepoints),
series per system, configuration and case with what changed at each step (series), the `history`
command (command) and its web page (page).

May import: core, measure, data, results, run, scaling, report.
"""
