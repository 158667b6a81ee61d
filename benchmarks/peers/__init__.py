"""Other implementations of the mHC ops that the benchmarks time next to ours."""
