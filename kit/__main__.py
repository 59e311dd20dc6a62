"""`python -m kit <command> [key=value ...]`: the command line (kit/cli.py)."""
import sys

try:
    from kit.cli import main
except KeyboardInterrupt:  # Ctrl-C while the kit's libraries load
    print("interrupted: nothing was done yet", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
