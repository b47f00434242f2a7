"""Small shared helpers: atomic file writes, distributed helpers, logging, TensorBoard scalars."""
