"""Sample efficiency: streaming linear heads, frozen feature extractors, the benchmark and its HTTP service."""
