"""Ringside's benchmark: ``python -m bench`` (see ``bench/__main__.py``).

Loads the upstream simulator directly, a bare Quart-Trio + httpx relay (the "stack floor",
``bench/stack_floor.py``) and Ringside's full path with wrk at several concurrencies, then
measures Ringside's resident memory with many streams open.
"""
