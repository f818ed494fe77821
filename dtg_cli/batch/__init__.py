"""`dtg batch` and `dtg merge` as a library: `expand` (a file of records in, results out in input order)
and `merge` (the outputs of a sharded run as one). The package's modules, in the order a record meets them:
`records` (reading input files), `tasks` (a record's settings, seeds and shard), `outfile` (the output
file: checks, lock, resume), `run` (`expand`), `merging` (`merge`)."""

from dtg_cli.batch.merging import merge
from dtg_cli.batch.outfile import Output, check_output, is_stdout, output_format
from dtg_cli.batch.records import BatchInputError, InputFile, check_input, count_records, input_format, sniff_format
from dtg_cli.batch.run import Summary, expand
from dtg_cli.batch.tasks import RECORD_FIELDS, build_task, derive_seed, parse_shard

__all__ = [
    "RECORD_FIELDS",
    "BatchInputError",
    "InputFile",
    "Output",
    "Summary",
    "build_task",
    "check_input",
    "check_output",
    "count_records",
    "derive_seed",
    "expand",
    "input_format",
    "is_stdout",
    "merge",
    "output_format",
    "parse_shard",
    "sniff_format",
]
