"""The research layer on the four files of the course submission: the further studies, results
files, the tuning rule, reproduction and the benchmark (python -m study --help). It imports
test.py's round, pool, statistics and table; test.py never imports it."""
