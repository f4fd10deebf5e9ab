"""The CLI's exit codes, the help text that explains them, and the line an interrupted run ends
with."""

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_CODES_HELP = """exit codes:
  0  every case was segmented (or skipped because its outputs already exist)
  1  some cases failed while others succeeded, an unexpected error occurred, or the run was
     interrupted (Ctrl-C, SIGTERM: finished cases are kept, running it again resumes)
  2  nothing was segmented because of bad input, a bad model bundle, an unavailable device or
     bad arguments (every case failed with such an error, or the run was refused before any case)
"""
INTERRUPTED = ("interrupted: finished cases keep their six outputs, the case in progress left "
               "nothing; run the same command again to resume")
