"""tests/diffusers: the tiny Wan components (tests/wan) and the naive P&P loop (tests/) are reused by import."""
import sys
from pathlib import Path

for folder in (Path(__file__).parent, Path(__file__).parent.parent / "wan", Path(__file__).parent.parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
