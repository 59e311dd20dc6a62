"""`python -m kit <command> [key=value ...]`: the command line (kit/cli.py)."""
import os
import sys

try:
    from kit.cli import main
except KeyboardInterrupt:  # Ctrl-C while the kit's libraries load
    print("interrupted: nothing was done yet", file=sys.stderr)
    sys.exit(130)

code = main()
if code == 130:  # Ctrl-C: every file is whole or removed by now; a thread still decoding would hold the exit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
