"""The three parts of a scaling study, one subpackage each, and the cell directory they share.

    plan/    config -> checked grid cells (config.py, params.py, grid.py)
    launch/  one submitit job per cell, waited for and published (launcher.py, scheduler.py, status.py)
    train/   the job itself: data-parallel training of one cell (Horovod or DDP) (job.py, data.py, models.py, rendezvous.py)
    cell.py  the cell directory: its file names, record types and how they are written and read
"""
