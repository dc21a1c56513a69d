"""Run folders, grids, scaling curves and compare reports."""
