"""inferline monitor stage (not built yet: see the open issues)."""
