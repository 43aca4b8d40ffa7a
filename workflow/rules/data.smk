from jobs.plan.datasets import FASHION_MNIST_FILES as _FASHION_MNIST_NAMES

FASHION_MNIST_FILES = [f"{PLAN.data_dir}/fashion_mnist/{name}" for name in _FASHION_MNIST_NAMES.values()]


localrules:
    download_fashion_mnist,


# Runs on the login node (it needs internet); compute jobs never download anything.
# update(): files already present are not deleted before the job runs, so the script
# skips the valid ones (and Snakemake restores them if the job fails).
# The script reads config["fashion_mnist_mirror"] itself, not through params: a changed
# param reruns the job and then every cell reading the files, yet a mirror serves the same data.
rule download_fashion_mnist:
    output:
        [update(path) for path in FASHION_MNIST_FILES],
    log:
        f"{RESULTS}/logs/download_fashion_mnist.log",
    script:
        "../scripts/download_fashion_mnist.py"
