"""One evaluation run, in one process or on torchrun's ranks: the samples not done yet are computed
(shared out over the ranks) and the report is written from every saved sample."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..cli_common.errors import UsageError
from ..cli_common.parallel import Ranks, together
from ..staging import Interrupted

PROG = "pnp-eval"


@dataclass
class Evaluation:
    """A checked evaluation, ready to run: nothing has been loaded yet."""

    sampler: object
    prompts: list[str]
    seeds: list[int]
    settings: list  # runner.Setting
    baseline: object  # runner.Setting
    out: Path
    notices: list[str]
    extras: list  # extras.MetricGroup: the model's own metrics and the optional ones found

    def extra_metrics(self) -> list:
        return [metric for group in self.extras for metric in group.metrics]

    def fingerprint(self) -> dict:
        """What a resumed evaluation must share with the one it continues (not the prompts and seeds),
        as it reads back from JSON."""
        settings = {s.label: {**vars(s.pnp), "plan": str(s.pnp.plan)} for s in (self.baseline, *self.settings)}
        fingerprint = {"model": self.sampler.fingerprint(), "settings": settings,
                       "extras": [metric.name for metric in self.extra_metrics()]}
        return json.loads(json.dumps(fingerprint))


def check_resumable(store, fingerprint: dict) -> None:
    """Refuse an output folder that holds an evaluation of another model or other settings."""
    try:
        existing = store.existing_fingerprint()
    except (OSError, ValueError, KeyError) as error:
        raise UsageError(f"--out {store.folder}: cannot read the record of its evaluation ({error})") from None
    if existing is not None and existing != fingerprint:
        changed = sorted(key for key in set(existing) | set(fingerprint) if existing.get(key) != fingerprint.get(key))
        raise UsageError(f"--out {store.folder} holds an evaluation with other {' and '.join(changed)}; "
                         "give another --out to start a new one")


def _left_to_do(store, samples: list, fingerprint: dict, ranks: Ranks | None) -> list:
    """The samples without a record, as rank 0 finds them after preparing the folder."""
    from .distributed import agreed

    done = None
    with together(ranks, "preparing the output folder"):
        if ranks is None or ranks.writes:
            store.start(fingerprint)
            done = [store.done(sample) for sample in samples]
    done = done if ranks is None else agreed(done)
    return [sample for sample, finished in zip(samples, done) if not finished]


def _saved(store, samples: list) -> int:
    return sum(store.done(sample) for sample in samples)


def _interrupted(interruption: KeyboardInterrupt, store, samples: list, out: Path, ranks: Ranks | None) -> int:
    status = interruption.exit_status if isinstance(interruption, Interrupted) else 130
    done = sum(store.done(sample) for sample in samples)
    where = "" if ranks is None or ranks.writes else f"rank {ranks.rank}: "
    print(f"{PROG}: {where}interrupted; {done} of {len(samples)} samples are saved in {out}; "
          "run the same command again to resume", file=sys.stderr)
    return status


def run(evaluation: Evaluation, store, fingerprint: dict, progress: bool = True, ranks: Ranks | None = None) -> int:
    """Evaluate the samples not done yet and write the report (rank 0); returns the exit status."""
    from tqdm.auto import tqdm

    from .distributed import share
    from .metrics import REPORTED_METRICS
    from .report import markdown, summarize, write_report
    from .runner import all_samples, evaluate

    samples = all_samples(evaluation.prompts, evaluation.seeds)
    reports = ranks is None or ranks.writes
    started = time.perf_counter()
    todo = _left_to_do(store, samples, fingerprint, ranks)
    if reports and len(todo) < len(samples):
        print(f"{PROG}: resuming: {len(samples) - len(todo)} of {len(samples)} samples are already in "
              f"{evaluation.out}", file=sys.stderr)
    mine = todo if ranks is None else share(todo, ranks.launch)
    shown = progress and reports  # one bar, over the samples every rank saves
    try:
        with tqdm(total=len(samples), initial=_saved(store, samples), unit="sample", disable=not shown) as bar, \
                together(ranks, "sampling"):
            evaluate(evaluation.sampler, mine, evaluation.baseline, evaluation.settings, store,
                     [group.compute for group in evaluation.extras], save=ranks is None or ranks.leads_group,
                     finished=(lambda: bar.update(_saved(store, samples) - bar.n)) if shown else (lambda: None))
        if not reports:
            return 0
        seconds = time.perf_counter() - started
        header = {"model": evaluation.sampler.description, "fingerprint": fingerprint,
                  "num_seeds": len(evaluation.seeds),
                  "num_prompts": len(evaluation.prompts) if evaluation.sampler.uses_prompts else 0,
                  "steps": fingerprint["model"].get("steps"), "notice": " ".join(evaluation.notices),
                  "run": {"wall_s": seconds, "computed": len(todo), "samples_per_s": len(todo) / seconds,
                          "processes": 1 if ranks is None else ranks.launch.world_size}}
        records = [store.record(sample) for sample in samples]
        metrics = list(REPORTED_METRICS) + evaluation.extra_metrics()
        summary = summarize(records, evaluation.baseline.label, [s.label for s in evaluation.settings], metrics, header)
        paths = write_report(summary, samples, [store.thumbnails(sample) for sample in samples], evaluation.out)
    except KeyboardInterrupt as interruption:  # SIGINT or SIGTERM: every finished sample is on disk already
        return _interrupted(interruption, store, samples, evaluation.out, ranks)
    print(markdown(summary))
    print("\n".join(f"wrote {name}: {path}" for name, path in paths.items()))
    return 0
