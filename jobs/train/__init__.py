"""Training a cell: the Horovod job every task of a cell runs."""
