"""Data sources (synthetic motion, later Human3.6M / HumanEva-I / BVH) and the window sampler."""
