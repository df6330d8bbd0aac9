"""The application layer: what `kconvert` and a program embedding it ask for (convert a file, write it,
check it), composed from converter/ (reading, conversion, writing) and runtime/ (running, comparing).
The only package that imports both; neither imports it."""
