"""``python -m experiments`` runs the paper-claims experiment (same flags as ``python -m experiments.paper_claims``)."""

import sys

from experiments.paper_claims import main

if __name__ == "__main__":
    sys.exit(main())
