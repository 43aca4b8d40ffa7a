from pathlib import Path


localrules:
    collect_study,


# The params `python` and the directories take `output`, which makes Snakemake count them as
# derived from the outputs and leave them out of the params whose change reruns a rule: the
# interpreter is software, not a parameter, and a moved .venv must not rerun tables and figures.
rule collect_study:
    input:
        get_cell_summaries,
    output:
        runs=report(
            f"{RESULTS}/{{study}}/runs.csv",
            caption="../report/runs.rst",
            category="{study}",
            subcategory="tables",
        ),
        epochs=f"{RESULTS}/{{study}}/epochs.csv",
        updates=f"{RESULTS}/{{study}}/updates.csv",
    params:
        cells=get_cell_ids,
        analysis=get_analysis_args,
        python=lambda wildcards, output: PYTHON,
        study_dir=lambda wildcards, output: str(Path(output.runs).parent),
    log:
        f"{RESULTS}/{{study}}/logs/collect.log",
    shell:
        "{params.python} -m analysis.collect {params.study_dir} --cells {params.cells} {params.analysis}"
        " --runs {output.runs} --epochs {output.epochs} --updates {output.updates} > {log} 2>&1"


# One rule per analysis step (analysis/steps.py: figures, Lab 1, the assessment, the answer),
# for the studies it applies to; after a failure, onerror runs the same steps (common.smk).
for step in STEPS:

    rule:
        name:
            step.name
        localrule: True
        input:
            runs=f"{RESULTS}/{{study}}/runs.csv",
            epochs=f"{RESULTS}/{{study}}/epochs.csv",
            **({"updates": f"{RESULTS}/{{study}}/updates.csv"} if step.reads_updates else {}),
        output:
            **figure_pngs(step.figures),
            svg=figure_svgs(step.figures),
            **step_files(step),
        params:
            # A param, not part of the shell string: Snakemake evaluates that when the job runs,
            # when the loop variable names the last step.
            step=step.name,
            python=lambda wildcards, output: PYTHON,
            study_dir=lambda wildcards, output: str(Path(output.svg[0]).parent.parent),
        log:
            f"{RESULTS}/{{study}}/logs/{step.name}.log",
        shell:
            "{params.python} -m analysis.steps {params.step} {params.study_dir} --study {wildcards.study} > {log} 2>&1"
