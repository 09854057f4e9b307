"""The data workbench: `honing data <command>` over files of any size.

    io        streaming input (file:line of every record) and atomic output files
    pipeline  chunks of records through a pool of worker processes, results in input order
    runner    the run record, counts (in = kept + removed + rejected), the streaming driver
    clean, pii, dedup, convert, split, mix, validate, stats, card   one module per command

Each command module has `run(cfg) -> dict`, with its config from honing.config.workbench.
"""
