"""results: what a run leaves and how it is judged - the result JSON (resultfile), reading results of
every kind into records (records), stored baselines and the `baseline record` command (baselines,
recording), statistics (stats), and verdicts against a baseline (compare). Pure data, no torch.

May import: core, measure, data (in practice core alone).
"""
