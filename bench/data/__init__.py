"""data: CIFAR-10 from disk to batches - reading the formats (sources, official), the decoded-tensor cache
(cache), staging it once for many jobs (staging), class-balanced subsets, global batches and rank
shards (sampling), the three data paths (datapaths) and the Lightning DataModule (datamodule).

May import: core, measure.
"""
