from jobs.train.data import FASHION_MNIST_FILES as _FASHION_MNIST_NAMES

FASHION_MNIST_FILES = [f"{PLAN.data_dir}/fashion_mnist/{name}" for name in _FASHION_MNIST_NAMES.values()]


localrules:
    download_fashion_mnist,


# Runs on the login node (it needs internet); compute jobs never download anything.
rule download_fashion_mnist:
    output:
        FASHION_MNIST_FILES,
    log:
        f"{RESULTS}/logs/download_fashion_mnist.log",
    script:
        "../scripts/download_fashion_mnist.py"
