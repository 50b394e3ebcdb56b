"""core: what every wing shares - the run configuration and its presets (config), the run options
generated from it (options), the one table of exit statuses (exitcodes), atomic file writes (files)
and plain-text tables (tables).

May import: nothing of bench outside this wing (the bottom of bench.LAYERS). Torch-free.
"""
