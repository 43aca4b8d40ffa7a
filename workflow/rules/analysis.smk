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


# The study's figures and answer, in one job: the steps of analysis/steps.py that apply to
# the study (figures, Lab 1, the assessment, the answer); after a failure, onerror runs the
# same steps (common.smk). Which figures the data fill is known only once the tables are, so
# the figures are a directory: the report shows the PNGs in it, each with its caption from
# the directory's manifest.
rule analyse_study:
    localrule: True
    input:
        runs=f"{RESULTS}/{{study}}/runs.csv",
        epochs=f"{RESULTS}/{{study}}/epochs.csv",
        updates=f"{RESULTS}/{{study}}/updates.csv",
    output:
        figures=report(
            directory(f"{RESULTS}/{{study}}/{FIGURES_DIR}"),
            patterns=["{figure}.png"],
            caption="../report/figure.rst",
            category="{study}",
            subcategory="figures",
            labels={"figure": "{figure}"},
        ),
        answer=report(
            f"{RESULTS}/{{study}}/answer.html",
            caption="../report/answer.rst",
            category="{study}",
            subcategory="answer",
        ),
        files=[f"{RESULTS}/{{study}}/{name}" for name in STUDY_FILES if name != "answer.html"],
    params:
        steps=get_analysis_steps,
        # From the outputs: read when the report is made, and never a reason to rerun.
        captions=lambda wildcards, output: figure_captions(output.figures),
        python=lambda wildcards, output: PYTHON,
        study_dir=lambda wildcards, output: str(Path(output.answer).parent),
    log:
        f"{RESULTS}/{{study}}/logs/analyse_study.log",
    shell:
        "{params.python} -m analysis.steps {params.study_dir} --steps {params.steps} --study {wildcards.study}"
        " > {log} 2>&1"
