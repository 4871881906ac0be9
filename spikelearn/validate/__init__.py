"""Validation against Brian2 and neuromorphic export. The only part of spikelearn that imports brian2."""
