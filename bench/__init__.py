"""Benchmarks (``make bench``): each measured side by side with its anchor in one run."""
