"""Flow-control rules: one module each, each parsing its option from the function's config and
computing its decision as a value from state the store read in the transaction that applies it."""
