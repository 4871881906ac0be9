"""Neuron dynamics: pure step functions with explicit state."""
