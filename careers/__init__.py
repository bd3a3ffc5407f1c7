"""O*NET taxonomy, career-history schema, dataset loaders and the synthetic generator."""
