# One rule job per grid cell. It submits the cell through submitit and waits; the
# cell's summary.json, written last by the training job, is its only output, so a
# cell without one (failed, killed) is exactly what the next run executes again.
rule train_cell:
    input:
        get_dataset_files,
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
