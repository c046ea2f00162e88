"""The `egbas` command line."""
import sys


def main(argv=None):
    print("egbas demo: not built yet (placeholder)", file=sys.stderr)
    return 0
