"""scaling: one case at several world sizes - the `sweep` command that runs the points (sweep), the
speedup and efficiency of each point (figures) and its chart (sweep_plot).

May import: core, measure, data, results, run.
"""
