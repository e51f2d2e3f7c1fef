"""The pipeline's progress bar, counting model calls instead of loop entries.

The stock loop ticks its bar once per entry of the expanded timesteps, idle entries after an early
exit included. While P&P runs, the bar ticks once per model call the engine receives instead, shows
the step, the iteration and the certain fractions, and its total (the plan's upper bound) drops to
the calls made when the loop ends.
"""
from __future__ import annotations


class ModelCallProgress:
    """Wraps the tqdm bar of ``DiffusionPipeline.progress_bar(total=...)``; the loop's own ``update``
    calls are ignored, ``model_call`` ticks."""

    def __init__(self, bar, upper_bound: int | None):
        self.bar = bar
        if upper_bound is not None:  # the loop may count steps, not entries
            bar.total = upper_bound
            bar.refresh()

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.total = self.bar.n  # early exits make fewer calls than the upper bound
        self.bar.refresh()
        return self.bar.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self.bar, name)

    def update(self, n: int = 1) -> None:
        """The loop's tick per entry: counted by ``model_call`` instead."""

    def model_call(self, event) -> None:
        self.bar.update()
        postfix = {"step": f"{event.step + 1}/{event.num_steps}", "iteration": f"{event.iteration}/{event.planned}"}
        if event.certain_fraction:
            postfix["certain"] = "/".join(f"{f:.2f}" for f in event.certain_fraction)
        self.bar.set_postfix(postfix, refresh=False)
