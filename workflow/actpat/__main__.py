import sys

from actpat.forkserver import delegate

# a local run's fork server runs the job in a process with the libraries imported (None: run it here)
code = delegate(sys.argv[1:])
if code is None:
    from actpat.cli import main

    code = main()
sys.exit(code)
