localrules:
    collect_study,
    plot_study,


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
    params:
        cells=get_cell_ids,
    log:
        f"{RESULTS}/{{study}}/logs/collect.log",
    shell:
        "{PYTHON} -m analysis.collect {RESULTS}/{wildcards.study} --cells {params.cells}"
        " --runs {output.runs} --epochs {output.epochs} > {log} 2>&1"


rule plot_study:
    input:
        runs=f"{RESULTS}/{{study}}/runs.csv",
        epochs=f"{RESULTS}/{{study}}/epochs.csv",
    output:
        **{
            name: report(
                f"{RESULTS}/{{study}}/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="{study}",
                subcategory="figures",
            )
            for name in FIGURE_NAMES
        },
        svg=expand(f"{RESULTS}/{{{{study}}}}/figures/{{name}}.svg", name=FIGURE_NAMES),
    log:
        f"{RESULTS}/{{study}}/logs/plot.log",
    shell:
        "{PYTHON} -m analysis.figures {input.runs} {input.epochs}"
        " --out {RESULTS}/{wildcards.study}/figures > {log} 2>&1"
