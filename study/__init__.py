"""The study machinery around the card's four files: the command line, the further studies,
many rounds in worker processes, statistics and results files, the benchmark, reproduction and
provenance. The round itself is train.run_round; test.py holds the defaults and the variants."""
