"""The per-run result format's name and version (written by bench.results.resultfile, read by
bench.results.records). Standard library only, and nothing imported: the torch-free record writer
(bench.results.endrecords) runs under ``python -S`` on a batch host inside Slurm's KillWait, where
tabulate, numpy or torch may not be importable; importing bench.results.records from it pulled
tabulate in through the baselines' interconnect figures."""

RESULT_SCHEMA = "cifar-bench/result"  # the per-run result format
RESULT_SCHEMA_VERSION = 1
