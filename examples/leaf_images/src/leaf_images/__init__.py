"""A user's own image classifier for inferline: a leaf's disease from a small RGB photo."""
