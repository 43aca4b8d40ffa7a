"""Where a job array's task starts: `python -m jobs.launch.array_task FOLDER SUBMISSION_ID`.

Every task of a job array (jobs/launch/submission.py) runs this, then submitit's own job
runner. The submitter stages each task's pickle under the submission's name before its
sbatch, since the array's job id is unknown until then, and moves it to submitit's name
afterwards; a task whose submitter was killed before that moves its pickle itself, so a
submission cut short by a lost login session still runs, and a rerun only reattaches.
Before submitit unpickles it, the task checks that the pickle and its folder are the
user's alone to write (jobs/private.py); a local job runs submitit's runner directly,
unchecked, in the launcher's own private folder a moment after the launcher wrote it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from submitit.core.submission import process_job

from jobs.launch.submission import take_staged_pickle
from jobs.private import NotPrivate, check_private, never_group_writable


def main(argv: list[str]) -> None:
    folder, submission_id = Path(argv[0]), argv[1]
    array_job_id, task = os.environ["SLURM_ARRAY_JOB_ID"], int(os.environ["SLURM_ARRAY_TASK_ID"])
    never_group_writable()
    submitted = take_staged_pickle(folder, submission_id, array_job_id, task)
    try:
        check_private(submitted)  # before submitit unpickles it
    except NotPrivate as refused:
        sys.exit(str(refused))
    process_job(folder)  # the training job makes the outcome pickle private (TrainingJob._private_from_now_on)


if __name__ == "__main__":
    main(sys.argv[1:])
