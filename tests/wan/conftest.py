"""tests/wan: the tiny components live beside the tests; the naive SPEC §3 loop lives in tests/."""
import sys
from pathlib import Path

for folder in (Path(__file__).parent, Path(__file__).parent.parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
