"""`make bench`: speed and memory against the kit's targets (bench) and what it times (timings).
Nothing outside this package imports from it but the command line."""
