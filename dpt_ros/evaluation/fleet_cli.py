"""evaluate_bags: evaluate many rosbag2 recordings in parallel on Ray, resumably, with one fleet report.

    evaluate_bags /data/robot1 /data/robot2 'archive/**/*.mcap' --output-dir eval/ \
        --image-topic /camera/image_raw --gt-depth-topic /camera/depth --variant dpt_hybrid_kitti

Every evaluate_bag option applies to every bag, with the same meaning (the options and the
configuration are built by the same code, ``dpt_ros.evaluation.cli``).  The run itself is
``dpt_ros.evaluation.fleet.evaluate_fleet``; this module only turns arguments into its
configuration and its outcome into an exit code.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from dpt_ros.evaluation import bag_io
from dpt_ros.evaluation.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, add_evaluation_arguments, \
    shared_config_from_args, terminate_as_interrupt
from dpt_ros.evaluation.config import EvaluationError
from dpt_ros.evaluation.fleet import FleetConfig, evaluate_fleet, say
from dpt_ros.evaluation.fleet_workers import RayOptions
from dpt_ros.model_config import ModelLoadError

EXIT_BAGS_FAILED = 3  # the run finished, but one or more bags failed (the fleet report lists why)

EXIT_CODES = f"""exit codes:
  {EXIT_OK}    every bag is done (evaluated now, or before with the same options)
  {EXIT_REFUSED}    refused before any bag was evaluated (one line says why): bad arguments, an input
       that names no bag, an unwritable output folder, a Ray that cannot be started or joined,
       a model that no worker can load
  {EXIT_BAGS_FAILED}    the run finished, but some bags failed (corrupt, missing topic ...): the others'
       results are written, and the fleet report lists each failure with its reason
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C, SIGTERM): finished bags keep their results, the manifest says
       which are done, and the next run with the same options evaluates only the rest

Re-running with the same options skips the bags that are done and evaluates new, changed
(size or modification time), failed and unfinished ones; other options evaluate every bag again.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate_bags",
        description="Run DPT over many rosbag2 bags in parallel on Ray (a local instance by default, "
        "or a cluster), as evaluate_bag does for one, and write a report per bag and one for the fleet.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="BAG",
                        help="bags (a directory with metadata.yaml, or a .mcap/.db3 file), directories "
                        "searched for bags, or glob patterns (quoted: 'data/**/*.mcap')")
    output = add_evaluation_arguments(parser)
    output.add_argument("--output-dir", type=Path, required=True,
                        help="DIR/<bag name>/ gets each bag's report and output bag (what evaluate_bag "
                        "writes); DIR/ the fleet report (report.json, report.md, plots) and manifest.json")
    output.add_argument("--no-output-bags", action="store_true",
                        help="write only the reports, not what dpt_node would publish")
    ray = parser.add_argument_group("Ray")
    ray.add_argument("--ray-address", metavar="ADDRESS",
                     help="join this Ray cluster: HEAD_IP:6379 from a machine of the cluster, 'auto' for the "
                     "cluster this machine is part of, ray://HEAD_IP:10001 with ray[client] installed "
                     "(default: start a local Ray inside this process)")
    ray.add_argument("--workers", type=int, metavar="N",
                     help="at most N workers, each loading the model once (default: as many as the "
                     "cluster holds, and no more than there are bags)")
    ray.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C",
                     help="CPUs Ray reserves for each worker; torch uses as many threads (default 1)")
    ray.add_argument("--gpus-per-worker", type=float, metavar="G",
                     help="GPUs Ray reserves for each worker (0.5: two share one); default 1 when the "
                     "model runs on a GPU (--device cuda, or auto on a cluster with GPUs), else 0")
    return parser


def config_from_args(args: argparse.Namespace) -> FleetConfig:
    return FleetConfig(
        inputs=tuple(args.inputs), output_dir=args.output_dir, evaluation=shared_config_from_args(args),
        output_bags=not args.no_output_bags, progress=not args.no_progress,
        ray=RayOptions(address=args.ray_address, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                       gpus_per_worker=args.gpus_per_worker))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (e.g. from a job scheduler) ends the run like Ctrl-C.
    signal.signal(signal.SIGTERM, terminate_as_interrupt)
    try:
        report = evaluate_fleet(config_from_args(args))
    except (EvaluationError, bag_io.BagError, ModelLoadError) as exc:
        say(f"error: {' '.join(str(exc).split())}")
        return EXIT_REFUSED
    except KeyboardInterrupt:  # while Ray was starting: no bag was handed out
        say("interrupted before any bag was evaluated")
        return EXIT_INTERRUPTED
    if report["interrupted"]:
        return EXIT_INTERRUPTED
    return EXIT_BAGS_FAILED if report["bags"]["failed"] else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
