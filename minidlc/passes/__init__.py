"""Graph-to-graph passes and the pass manager that runs them (see manager.py)."""
