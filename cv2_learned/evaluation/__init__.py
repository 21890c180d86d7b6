"""Benchmark of keypoint detectors/descriptors (torch-free): datasets, metrics, reports and the ``eval`` command.

Entry points: ``create_feature`` (method factory), ``open_dataset`` (lazy pair lists), ``evaluate_pairs`` /
``summarize`` (metrics) and ``cli.run_eval`` (the whole benchmark). See docs/BENCHMARK.md.
"""
from .evaluate import evaluate_pairs, summarize
from .features import create_feature, method_label
from .images import default_data_root
from .registry import DEFAULT_DATASETS, DatasetUnavailable, open_dataset

__all__ = ["create_feature", "method_label", "open_dataset", "DatasetUnavailable", "DEFAULT_DATASETS",
           "evaluate_pairs", "summarize", "default_data_root"]
