"""A mutation fuzzer for kconvert: the committed fixtures, damaged in seeded, reproducible ways.

Five families of mutators (one module each): `bytes` (flips, truncation, splicing), `json` (the model
config, mutated as a tree and re-embedded), `hdf5` (datasets, attributes and links, edited with h5py),
`zip` (the `.keras` archive's entries and headers) and `escape` (HDF5 features that read outside the
given file). The runner converts every case in a forked child with a memory limit and a timeout, and
sorts the outcome: `ok`, `refused` (a KconvertError) or `defect` (anything else).

    python -m tests.fuzz --cases 10000 --seed 1      # from the repository root
    python -m tests.fuzz --replay /tmp/kconvert-fuzz/json-17.h5

The package imports itself relatively, so it works as `tests.fuzz` (the command line) and as `fuzz`
(tests/test_fuzz.py, where pytest puts tests/ on sys.path).
"""
