"""The named plans (presets), accepted wherever a plan is: one home for each preset and its source.
Imports nothing, so that plan parsing (``config``) can read it."""

# "published" is the published default, steps 2-5 with K=3 and 6-14 with K=1 of a 50-step run
# (``published.DEFAULT_PLAN``), written as fractions of the run so that it fits any step count;
# "published-wan22" is the published Wan 2.2 T2V plan (2-5:3,6-13:1 of 40 steps) in the same form.
# "distilled" is for 4-8 step distilled models: one iteration at the steps between 10% and 50% of the
# run (step 1 of 4; steps 1-3 of 8), never the first step, whose sigma-1 perturbation only redraws the
# noise. It follows the published plan's reasoning (refine the early steps that lay out the video); it
# is not tuned, and no measurement on distilled models backs it yet.
PRESETS = {
    "published": "f0.04-0.12:3,f0.12-0.30:1",
    "published-wan22": "f0.05-0.15:3,f0.15-0.35:1",
    "distilled": "f0.1-0.5:1",
}
