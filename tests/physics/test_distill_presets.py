"""Few-step plans resolve to the steps the docs say, at 2, 4, 6 and 8 steps, on uniform and shifted grids:
the presets table of docs/FEW_STEP.md and the candidate plans of docs/FEWSTEP_PREREG.md."""
import pathlib
import re

import pytest

from pnp_kernels import RefinePlan

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
STEP_COUNTS = (2, 4, 6, 8)


def uniform(num_steps):
    return [1.0 - i / num_steps for i in range(num_steps + 1)]


def shifted(num_steps, shift=5.0):
    return [shift * t / (1 + (shift - 1) * t) for t in uniform(num_steps)]


def documented_table(path, header):
    """{plan text: [cell per step count]} of the markdown table whose header row starts with ``header``."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        plan = re.search(r"`([^`]+)`", " ".join(cells[:2])).group(1)
        rows[plan] = cells[-len(STEP_COUNTS) :]
    return rows


def steps_of(cell):
    """'-' -> (); '1-3:1, 4:3' -> ((1, 3, 1), (4, 4, 3)); K is None where the cell gives none."""
    if cell == "-":
        return ()
    entries = []
    for entry in cell.split(","):
        span, _, k = entry.strip().partition(":")
        first, _, last = span.partition("-")
        entries.append((int(first), int(last or first), int(k) if k else None))
    return tuple(entries)


@pytest.mark.parametrize("grid", [uniform, shifted])
def test_presets_resolve_to_the_documented_steps(grid):
    table = documented_table(DOCS / "FEW_STEP.md", "| preset |")
    assert set(table) == {"published", "published-wan22", "distilled"}
    for preset, cells in table.items():
        for num_steps, cell in zip(STEP_COUNTS, cells):
            assert RefinePlan.parse(preset).resolve(grid(num_steps)).ranges == steps_of(cell), (preset, num_steps)


def test_prereg_candidate_plans_refine_the_documented_steps():
    table = documented_table(DOCS / "FEWSTEP_PREREG.md", "| | plan |")
    assert len(table) == 6
    for plan, cells in table.items():
        for num_steps, cell in zip(STEP_COUNTS, cells):
            resolved = RefinePlan.parse(f"{plan}:2").resolve(uniform(num_steps)).ranges
            assert resolved == tuple((a, b, 2) for a, b, _ in steps_of(cell)), (plan, num_steps)


def test_the_three_readings_of_2_5_3_at_four_steps():
    with pytest.raises(ValueError, match="refers to step 5 but the run has 4 steps"):
        RefinePlan.parse("2-5:3").resolve(uniform(4))
    assert RefinePlan.parse("2-3:3").resolve(uniform(4)).ranges == ((2, 3, 3),)
    for reading in ("f0.04-0.12:3", "s0.96-0.88:3"):  # steps 2-5 of 50 as a fraction and as sigmas
        for num_steps in STEP_COUNTS:
            assert RefinePlan.parse(reading).resolve(uniform(num_steps)).ranges == (), (reading, num_steps)
    assert RefinePlan.parse("f0.04-0.12:3").resolve(uniform(50)).ranges == ((2, 5, 3),)
    assert RefinePlan.parse("s0.96-0.88:3").resolve(uniform(50)).ranges == ((2, 5, 3),)
