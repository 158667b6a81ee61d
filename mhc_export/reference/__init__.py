"""The eager side: the mHC ops' PyTorch reference, the torch custom ops built on it, the
reference model (V4, V4.1), its checkpoints and the seed documents' weight loaders."""
