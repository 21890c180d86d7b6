"""``python -m cv2_learned.evaluation [eval options]``: the ``eval`` command without the main CLI."""
import argparse
import sys

from .cli import add_eval_parser


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cv2_learned.evaluation")
    sub = parser.add_subparsers(dest="command")
    add_eval_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "eval":
        argv = ["eval"] + argv
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
