"""Run the real imgvec CLI in a subprocess with the test model registered (for kill tests)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tests.fake_model  # noqa: F401
from imgvec.cli import main

if __name__ == "__main__":
    main()
