"""The run of the few-step study (docs/FEWSTEP_PREREG.md; its rows: physics/fewstep_rows.py), once the
student has passed its gate: ``python -m pnp_kernels.physics.fewstep_study --student DIR/weights.safetensors``.

Every row samples the 1024 held-out study seeds (paired across rows by seed) in the physics study's
batches with its per-clip metrics (physics/study.py ``measure_row``); the results go to
DIR/fewstep_study.json, one row at a time, so a stopped run resumes at the first row it lacks, and
``--part K/N`` lets N processes share the rows (each save merges into the file under a lock).
``--secondary`` samples the secondary rows, which depend on the plan the decision rule selected from
the primary rows (physics/fewstep_report.py). The run refuses a student without a passed gate record
(DIR/gate.json, physics/fewstep_gate.py).
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

from .distill import STUDY_SEEDS, file_digest
from .fewstep_gate import add_student_and_teacher
from .fewstep_report import RESULTS_NAME, decide, load_results
from .fewstep_rows import study_rows
from .model import SHIPPED_WEIGHTS, load_weights
from .study import Results, measure_row, parse_part


def passed_gate(student_path: Path) -> dict:
    """The student's gate record, if it passed on this very file; else a ValueError saying why not."""
    record_path = Path(student_path).parent / "gate.json"
    if not record_path.is_file():
        raise ValueError(f"no gate record at {record_path}: run `python -m pnp_kernels.physics.fewstep_gate "
                         f"--student {student_path}` first")
    record = json.loads(record_path.read_text())
    if not record["gate"]["passed"] or record.get("student_digest") != file_digest(student_path):
        raise ValueError(f"{student_path} has not passed the few-step gate ({record_path}); the study does not run")
    return record


def run_study(student_path: Path, teacher_path: Path = SHIPPED_WEIGHTS, seeds=STUDY_SEEDS, part=(0, 1),
              secondary_plan: str | None = None) -> Path:
    """Sample every row of this part not yet in the results file; returns its path."""
    record = passed_gate(student_path)
    if record.get("teacher_digest") != file_digest(teacher_path):
        raise ValueError(f"the gate judged {student_path} against another teacher than {teacher_path}")
    results = Results(Path(student_path).parent, RESULTS_NAME)
    if results.data.setdefault("seeds", list(seeds)) != list(seeds):
        raise ValueError(f"{results.path} holds rows of other seeds")
    index, parts = part
    weights, load = {"student": student_path, "teacher": teacher_path}, functools.cache(load_weights)
    for who, row in study_rows(secondary_plan)[index::parts]:
        key = f"{who}: {row.label()}"
        if key not in results.data["rows"]:  # a model is loaded only for a row still to sample
            results.data["rows"][key] = measure_row(row, list(seeds), load(Path(weights[who])))
            results.save()  # the file holds whole rows only
            print(f"  {key}: {results.data['rows'][key]['seconds']}s", flush=True)
    return results.path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The few-step study (docs/FEWSTEP_PREREG.md); needs a student "
                                                 "that passed its gate.")
    add_student_and_teacher(parser)
    parser.add_argument("--part", type=parse_part, default=(0, 1), metavar="K/N",
                        help="sample only every N-th row from the K-th (0-based), to share the rows between N processes")
    parser.add_argument("--secondary", action="store_true",
                        help="the secondary rows, for the plan the decision rule selects from the primary rows")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        secondary_plan = None
        if args.secondary:
            secondary_plan = decide(load_results(args.student.parent)).preset
        out = run_study(args.student, args.teacher, part=args.part, secondary_plan=secondary_plan)
    except ValueError as error:  # no passed gate, another teacher or other seeds: nothing was sampled
        raise SystemExit(f"error: {error}") from None
    print(f"written to {out} ({time.perf_counter() - started:.0f}s, 1 thread)")


if __name__ == "__main__":
    main()
