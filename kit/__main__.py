"""`python -m kit <command> [key=value ...]`: the command line (kit/cli.py)."""
import atexit
import os
import sys

try:
    from kit.cli import main
except KeyboardInterrupt:  # Ctrl-C while the kit's libraries load
    print("interrupted: nothing was done yet", file=sys.stderr)
    sys.exit(130)

code = main()
if code == 130:  # Ctrl-C: every file is whole or removed by now. Exit's handlers run (stderr's last lines
    # pass TensorFlow's filter, kit/options.py); a thread still decoding an image is not waited for
    sys.stdout.flush()
    atexit._run_exitfuncs()
    os._exit(code)
sys.exit(code)
