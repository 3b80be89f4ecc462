"""Records, their store, tables, figures and the paper's numbers."""
