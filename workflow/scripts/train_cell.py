"""Snakemake script of rule train_cell: submit one grid cell and wait for it."""

import sys
from pathlib import Path

from jobs.launch.launcher import CellFailed, CellLaunch, run_cell, say
from jobs.plan.grid import make_plan
from jobs.plan.params import TrainParams

smk = snakemake  # noqa: F821  (injected by Snakemake)
plan = make_plan(smk.config, try_user_code=False)  # the Snakefile's parse has tried them
summary_path = Path(smk.output[0])
cell = smk.params.cell


class Tee:
    """Progress goes to the terminal and to the rule's log."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)

    def flush(self):
        for stream in self.streams:
            stream.flush()


with open(smk.log[0], "a") as log:
    out = Tee(sys.stderr, log)
    try:
        run_cell(
            CellLaunch(
                cell_dir=summary_path.parent,
                study=smk.wildcards.study,
                cell=smk.wildcards.cell,
                grid_axes=tuple(cell["grid_axes"]),
                params=TrainParams.from_dict(cell["params"]),
                launcher=plan.launcher,
                data_dir=Path(plan.data_dir),
                python_path=plan.python_path,
                user_code=plan.user_code(),
            ),
            scheduler_dir=Path(plan.results_dir) / ".scheduler",
            out=out,
        )
    except CellFailed as error:
        say(out, str(error))
        sys.exit(1)
