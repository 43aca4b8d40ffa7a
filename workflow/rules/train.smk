# One rule job per grid cell. It submits the cell through submitit and waits; the
# cell's summary.json, written last by the training job, is its only output, so a
# cell without one (failed, killed) is exactly what the next run executes again.
rule train_cell:
    input:
        get_dataset_files,
        get_damaged_summary,
    output:
        f"{RESULTS}/{{study}}/cells/{{cell}}/summary.json",
    params:
        cell=get_cell,
    # The rule only waits for the cell's job. Snakemake starts at most
    # launcher.max_cells_in_flight of them at once (common.smk), so the login node holds
    # one waiting process per cell in flight whatever the grid's size.
    threads: 1
    resources:
        cells_in_flight=1,
    log:
        f"{RESULTS}/{{study}}/logs/train/{{cell}}.log",
    script:
        "../scripts/train_cell.py"


# A damaged cell's summary.json is renamed, never deleted, before its train_cell job runs
# again (find_damaged_cells in common.smk); the launcher then moves the whole damaged run
# to results/<study>/superseded/. A rule, not a parse-time step, so that only a real run
# touches the disk.
rule set_aside_damaged_summary:
    output:
        f"{RESULTS}/{{study}}/cells/{{cell}}/summary.json.{{damaged}}",
    wildcard_constraints:
        damaged=r"damaged(\.\d+)?",
    localrule: True
    log:
        f"{RESULTS}/{{study}}/logs/set_aside/{{cell}}.{{damaged}}.log",
    run:
        keep_damaged_summary(Path(output[0]), Path(log[0]))
