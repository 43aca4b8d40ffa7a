from pathlib import Path


localrules:
    collect_study,
    plot_study,
    plot_lab1,
    plot_assessment,
    answer_study,


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
    conda:
        "../../environment.yml"
    shell:
        "{params.python} -m analysis.collect {params.study_dir} --cells {params.cells} {params.analysis}"
        " --runs {output.runs} --epochs {output.epochs} --updates {output.updates} > {log} 2>&1"


rule plot_study:
    input:
        runs=f"{RESULTS}/{{study}}/runs.csv",
        epochs=f"{RESULTS}/{{study}}/epochs.csv",
    output:
        **figure_pngs(FIGURE_NAMES),
        svg=figure_svgs(FIGURE_NAMES),
    params:
        python=lambda wildcards, output: PYTHON,
        figures_dir=lambda wildcards, output: str(Path(output.svg[0]).parent),
    log:
        f"{RESULTS}/{{study}}/logs/plot.log",
    conda:
        "../../environment.yml"
    shell:
        "{params.python} -m analysis.figures {input.runs} {input.epochs}"
        " --out {params.figures_dir} > {log} 2>&1"


# Lab 1's figures, for the studies whose cells record (w, b) after each update.
rule plot_lab1:
    input:
        runs=f"{RESULTS}/{{study}}/runs.csv",
        epochs=f"{RESULTS}/{{study}}/epochs.csv",
        updates=f"{RESULTS}/{{study}}/updates.csv",
    output:
        **figure_pngs(LAB1_FIGURE_NAMES),
        svg=figure_svgs(LAB1_FIGURE_NAMES),
    params:
        python=lambda wildcards, output: PYTHON,
        figures_dir=lambda wildcards, output: str(Path(output.svg[0]).parent),
    log:
        f"{RESULTS}/{{study}}/logs/plot_lab1.log",
    conda:
        "../../environment.yml"
    shell:
        "{params.python} -m analysis.lab1_figures {input.runs} {input.epochs} {input.updates}"
        " --out {params.figures_dir} > {log} 2>&1"


# The course's assessment, for the studies that set time_budget_s.
rule plot_assessment:
    input:
        runs=f"{RESULTS}/{{study}}/runs.csv",
        epochs=f"{RESULTS}/{{study}}/epochs.csv",
    output:
        **figure_pngs(ASSESSMENT_FIGURE_NAMES),
        svg=figure_svgs(ASSESSMENT_FIGURE_NAMES),
    params:
        python=lambda wildcards, output: PYTHON,
        figures_dir=lambda wildcards, output: str(Path(output.svg[0]).parent),
    log:
        f"{RESULTS}/{{study}}/logs/plot_assessment.log",
    conda:
        "../../environment.yml"
    shell:
        "{params.python} -m analysis.assessment {input.runs} {input.epochs}"
        " --out {params.figures_dir} > {log} 2>&1"


# The answer: critical batch, scaling model with its held-out error, the fastest and the
# cheapest configuration to the target (measured or predicted); printed at the end of the run.
rule answer_study:
    input:
        runs=f"{RESULTS}/{{study}}/runs.csv",
        epochs=f"{RESULTS}/{{study}}/epochs.csv",
    output:
        html=report(f"{RESULTS}/{{study}}/answer.html", caption="../report/answer.rst", category="{study}",
                    subcategory="answer"),
        files=[f"{RESULTS}/{{study}}/{name}" for name in ANSWER_FILES],
        **figure_pngs(ANSWER_FIGURE_NAMES),
        svg=figure_svgs(ANSWER_FIGURE_NAMES),
    params:
        python=lambda wildcards, output: PYTHON,
        study_dir=lambda wildcards, output: str(Path(output.html).parent),
        figures_dir=lambda wildcards, output: str(Path(output.svg[0]).parent),
    log:
        f"{RESULTS}/{{study}}/logs/answer.log",
    conda:
        "../../environment.yml"
    shell:
        "{params.python} -m analysis.answer_figures {input.runs} --epochs {input.epochs} --study {wildcards.study}"
        " --out {params.study_dir} --figures {params.figures_dir} > {log} 2>&1"
