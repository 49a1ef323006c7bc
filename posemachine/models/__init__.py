"""Flax modules: LSTM, 2D-to-3D transformer, 3D-to-2D projector, and their composition."""
