"""Datasets: Extended PolyMNIST (generation, storage, verification, import) and small synthetic sets."""
