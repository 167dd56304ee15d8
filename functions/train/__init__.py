"""Training: the plain trainer for any network, and the batched engine for groups of study-CNN runs."""
