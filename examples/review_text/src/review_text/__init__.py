"""A user's own text classifier for inferline: a product review's sentiment from its words."""
