"""Training a cell: the data-parallel job (Horovod or DDP) every task of a cell runs."""
