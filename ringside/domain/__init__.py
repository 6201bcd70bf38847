"""Domain logic, one module per aggregate: handlers call in here; this calls store/
and upstream/."""
