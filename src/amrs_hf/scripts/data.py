"""`amrs data`: look at listening logs and make synthetic ones.

    amrs data describe --source situnes --path ../shared/data/situnes [--json]
    amrs data generate --output DIR --plays 1000000 --seed 0
    amrs data calibrate --plays 200000 --reference-source situnes --reference-path ../shared/data/situnes \
        --reference-option "stages=[2, 3]"
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from amrs_hf.data import LogValidationError, load_log, save_log
from amrs_hf.data.calibration import SITUNES_REFERENCE, affect_statistics, comparison_table
from amrs_hf.data.sources import SOURCES


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amrs data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    describe = commands.add_parser("describe", help="counts and outcome coverage of a listening log")
    describe.add_argument("--source", required=True, help=f"data source: {', '.join(sorted(SOURCES))}")
    describe.add_argument("--path", default=None, help="the source's folder or file (synthetic: optional)")
    describe.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    describe.add_argument("--lenient", action="store_true", help="drop bad rows (and report them) instead of failing")

    generate = commands.add_parser("generate", help="write the synthetic world's logs and catalogue as Parquet")
    generate.add_argument("--output", required=True, help="folder for plays.parquet, catalogue.parquet and log.json")
    generate.add_argument("--plays", type=int, default=20_000, help="number of plays (default 20,000)")
    generate.add_argument("--seed", type=int, default=0, help="world and sampling seed (default 0)")

    calibrate = commands.add_parser("calibrate", help="the synthetic world's affect statistics beside a real log's")
    calibrate.add_argument("--plays", type=int, default=200_000, help="synthetic plays to measure (default 200,000)")
    calibrate.add_argument("--seed", type=int, default=0, help="world and sampling seed (default 0)")
    calibrate.add_argument("--reference-source", default=None,
                           help="a data source to measure the reference on (default: the stored SiTunes figures)")
    calibrate.add_argument("--reference-path", default=None, help="the reference source's path")
    calibrate.add_argument("--reference-option", action="append", default=[], metavar="KEY=VALUE",
                           help="an option of the reference source, the value in YAML (e.g. 'stages=[2, 3]'); repeatable")
    return parser


def format_description(summary: dict) -> str:
    lines = [f"{key:<18}{summary[key]:,}" for key in ("plays", "users", "sessions", "tracks", "catalogue_tracks")]
    lines.insert(0, f"{'source':<18}{summary['source']}")
    lines.append("coverage (share of plays carrying each outcome)")
    lines += [f"  {name:<16}{share:7.1%}" for name, share in summary["coverage"].items()]
    if summary["dropped"]:
        lines.append("dropped (lenient load)")
        lines += [f"  {reason}: {count:,}" for reason, count in summary["dropped"].items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    try:
        if args.command == "describe":
            summary = load_log(args.source, args.path, lenient=args.lenient).describe()
            print(json.dumps(summary, indent=2) if args.json else format_description(summary))
        elif args.command == "generate":
            log = load_log("synthetic", None, num_plays=args.plays, seed=args.seed)
            save_log(log, args.output, extra_meta={"plays": args.plays, "seed": args.seed})
            print(f"wrote {log.num_plays:,} plays and {log.catalogue.num_rows:,} tracks to {args.output}")
        elif args.command == "calibrate":
            stats = affect_statistics(load_log("synthetic", None, num_plays=args.plays, seed=args.seed))
            reference, name = SITUNES_REFERENCE, "SiTunes (stored)"
            if args.reference_source:
                options = dict(option.split("=", 1) for option in args.reference_option)
                options = {key: yaml.safe_load(value) for key, value in options.items()}
                reference = affect_statistics(load_log(args.reference_source, args.reference_path, **options))
                name = args.reference_source
            print(comparison_table(stats, reference, names=("synthetic", name)))
    except LogValidationError as err:
        print(f"amrs data: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
