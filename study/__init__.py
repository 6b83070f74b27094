"""The research layer on top of the card's four files: the command line of the research flags,
the further studies, many rounds in worker processes, statistics and results files, the tuning
rule, the benchmark, reproduction and provenance. The round itself is test.run_round."""
import sys

if sys.version_info < (3, 8):
    raise ImportError('the study package needs Python 3.8 or newer (this is Python {}.{}); the '
                      'four files alone run on 3.6: python test.py [--quick] [--rounds N] '
                      '[--seed S]'.format(*sys.version_info[:2]))
