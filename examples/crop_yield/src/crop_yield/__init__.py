"""A user's own regression model for inferline: crop yield (tonnes per hectare) per plot."""
