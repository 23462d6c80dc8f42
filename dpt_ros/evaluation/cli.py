"""evaluate_bag: run DPT over a rosbag2 recording, score it against ground truth, write a report.

    evaluate_bag INPUT_BAG --image-topic /camera/image_raw --gt-depth-topic /camera/depth \
        --camera-info-topic /camera/camera_info --variant dpt_hybrid_kitti \
        --output-bag out_bag --report-dir report/

Reads the bag with ``rosbags`` (no ROS install needed), runs the model dpt_node would run on
batches of frames, optionally writes what dpt_node would publish to a new bag in the input's
storage format, and writes report.json, report.md and plots.  Ctrl-C stops the run cleanly: what
was processed so far is written to the bag and the report.  The run itself is
``dpt_ros.evaluation.run.evaluate``; this module only turns arguments into its configuration.
"""
from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from pathlib import Path

from dpt_ros.evaluation import bag_io
from dpt_ros.evaluation.config import (
    ALIGNMENT_AUTO,
    ALIGNMENT_PARAMETER_OF_FLAG,
    NODE_PARAMETER_OF_FLAG,
    PRESETS,
    EvaluationConfig,
    EvaluationError,
)
from dpt_ros.depth import ALIGNMENT_NONE, ALIGNMENT_SCALE_SHIFT
from dpt_ros.model_config import ModelConfig, ModelLoadError
from dpt_ros.node_parameters import COMPILE_MODES, PARAMETERS_BY_NAME, PRECISIONS
from dpt_ros.pipeline import PipelineSettings

EXIT_OK = 0
EXIT_REFUSED = 2  # nothing was done: bad arguments, unusable input or output locations, model not loadable
EXIT_NO_FRAME = 3  # the run finished but processed no frame (each reason is printed with its count)
EXIT_INTERRUPTED = 130  # shell convention for "terminated by SIGINT"

EXIT_CODES = f"""exit codes:
  {EXIT_OK}    at least one frame was processed
  {EXIT_REFUSED}    refused before any work (one line says why): bad arguments, unreadable bag, missing
       topic, unwritable --output-bag or --report-dir, undecodable image encoding, model not loadable
  {EXIT_NO_FRAME}    no frame was processed (each reason is printed once with its count)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C, SIGTERM): the frames processed so far are in the bag and report
"""
_ALIGNMENT_OF_FLAG = {"auto": ALIGNMENT_AUTO, "none": ALIGNMENT_NONE, "scale-shift": ALIGNMENT_SCALE_SHIFT}


def _node_default(flag: str):
    return PARAMETERS_BY_NAME[NODE_PARAMETER_OF_FLAG[flag]].default


def _node_help(flag: str, extra: str = "") -> str:
    """The help of a flag with the same meaning as a dpt_node parameter: the node's description."""
    parameter = NODE_PARAMETER_OF_FLAG[flag]
    default = PARAMETERS_BY_NAME[parameter].default
    return (f"{PARAMETERS_BY_NAME[parameter].description}{extra} (dpt_node's {parameter}; "
            f"default {default!r})").replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate_bag",
        description="Run DPT depth/segmentation over a rosbag2 bag, as dpt_node would, and evaluate it "
        "against ground truth recorded in the same bag.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input_bag", help="rosbag2 bag directory (sqlite3 or mcap) or storage file")
    output = add_evaluation_arguments(parser)
    output.add_argument("--output-bag", type=Path,
                        help="write what dpt_node would publish to this new bag, at each input image's "
                        "recording time")
    output.add_argument("--report-dir", type=Path, help="write report.json, report.md and plots here")
    return parser


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Every option of a run except where its input and outputs are (the bag, --output-bag,
    --report-dir): evaluate_bag and evaluate_bags share them, so a flag means the same in both.

    Returns the "output" group, to which each command adds its own locations."""
    topics = parser.add_argument_group("input topics")
    topics.add_argument("--image-topic", required=True,
                        help="sensor_msgs/Image or sensor_msgs/CompressedImage topic")
    topics.add_argument("--camera-info-topic", help="CameraInfo for point clouds and depth/camera_info")
    topics.add_argument("--gt-depth-topic", help="ground-truth depth (32FC1 metres or 16UC1 millimetres)")
    topics.add_argument("--gt-labels-topic",
                        help="ground-truth labels (mono8/16UC1 ADE20K class index 0..149, 255 ignore)")
    labels = topics.add_mutually_exclusive_group()
    labels.add_argument("--gt-label-map", type=Path,
                        help="JSON {gt_id: ade20k_index} or CSV 'gt_id,ade20k_index' for the labels")
    labels.add_argument("--gt-label-offset", type=int, default=0,
                        help="subtract this from ground-truth ids (1 for raw ADE20K: 0 = unlabeled)")
    topics.add_argument("--stamp-tolerance", type=float, default=0.02, metavar="SECONDS",
                        help="max header-stamp difference between an image and its ground truth")

    model = parser.add_argument_group("model (as dpt_node's parameters)")
    model.add_argument("--variant", default=_node_default("--variant"), help=_node_help("--variant"))
    model.add_argument("--tasks", nargs="+", choices=("depth", "segmentation"),
                       help="tasks to run (default: depth, plus segmentation when --gt-labels-topic "
                       "is given)")
    model.add_argument("--weights", default=_node_default("--weights"), help=_node_help("--weights"))
    model.add_argument("--allow-random-weights", action="store_true", help=_node_help("--allow-random-weights"))
    model.add_argument("--segmentation-variant", default=_node_default("--segmentation-variant"),
                       help=_node_help("--segmentation-variant"))
    model.add_argument("--segmentation-weights", default=_node_default("--segmentation-weights"),
                       help=_node_help("--segmentation-weights"))
    model.add_argument("--device", default=_node_default("--device"), help=_node_help("--device"))
    model.add_argument("--precision", default=_node_default("--precision"), choices=PRECISIONS,
                       help=_node_help("--precision"))
    model.add_argument("--compile", default=_node_default("--compile"), choices=COMPILE_MODES,
                       help=_node_help("--compile"))
    model.add_argument("--input-size", type=int, default=_node_default("--input-size"),
                       help=_node_help("--input-size"))
    model.add_argument("--batch-size", type=int, default=1, help="frames per forward pass")

    depth = parser.add_argument_group("depth output (as dpt_node's parameters)")
    depth.add_argument("--depth-scale", type=float, default=_node_default("--depth-scale"),
                       help=_node_help("--depth-scale"))
    depth.add_argument("--depth-shift", type=float, default=_node_default("--depth-shift"),
                       help=_node_help("--depth-shift"))
    depth.add_argument("--depth-max-range", type=float, default=_node_default("--depth-max-range"),
                       help=_node_help("--depth-max-range"))

    selection = parser.add_argument_group("frame selection")
    selection.add_argument("--start", type=float, default=0.0, metavar="SECONDS",
                           help="skip this many seconds from the start of the bag")
    selection.add_argument("--stride", type=int, default=1, help="use every K-th image")
    selection.add_argument("--max-frames", type=int, help="stop after N selected images")

    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--preset", choices=sorted(PRESETS),
                            help="depth range of a benchmark: "
                            + ", ".join(f"{name} {low:g}..{high:g} m" for name, (low, high) in PRESETS.items())
                            + " (default: the metric variant's own benchmark, else 1e-3..80 m)")
    evaluation.add_argument("--min-depth", type=float, help="metres (overrides the preset)")
    evaluation.add_argument("--max-depth", type=float, help="metres (overrides the preset)")
    evaluation.add_argument("--alignment", choices=tuple(_ALIGNMENT_OF_FLAG), default="auto",
                            help="auto: metric depth (metric variant or --depth-scale) is scored as "
                            "published; relative depth is aligned per frame by least squares in inverse depth")

    add_online_alignment_arguments(parser)

    output = parser.add_argument_group("output")
    output.add_argument("--output-prefix", default="/dpt", help="topic prefix in the output bag")
    output.add_argument("--copy-topics", nargs="+", default=[], metavar="TOPIC",
                        help="copy these input topics unchanged into the output bag")
    output.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return output


def add_online_alignment_arguments(parser: argparse.ArgumentParser) -> None:
    """--align-topic / --simulate-sparse and the --align-* flags of dpt_node's alignment.* parameters
    (help, choices and meaning from the node's table; left unset they take the node's defaults)."""
    from dpt_ros.evaluation.simulated_sparse import SPEC_FORMAT

    group = parser.add_argument_group(
        "online alignment (as dpt_node's alignment.* parameters)",
        "Align the depth frame after frame to sparse metric depth, as dpt_node does, and report the online-aligned "
        "depth beside a per-frame oracle alignment and no alignment.")
    group.add_argument("--align-topic", metavar="TOPIC",
                       help="sparse metric depth in the bag: sensor_msgs/Image (16UC1 mm or 32FC1 m; registered to "
                       "the camera unless --align-camera-info-topic is given) or sensor_msgs/PointCloud2 (posed by "
                       "--align-extrinsic, projected through --camera-info-topic)")
    group.add_argument("--align-camera-info-topic", metavar="TOPIC",
                       help="CameraInfo of the --align-topic depth image: reproject it through these intrinsics and "
                       "--align-extrinsic (dpt_node's alignment.registered false)")
    group.add_argument("--simulate-sparse", metavar="SPEC",
                       help=f"simulate the sparse depth from --gt-depth-topic: {SPEC_FORMAT} (points: N random valid "
                       "pixels; lidar: L evenly spaced rows; noise: relative std; outliers: fraction with a random "
                       "depth; seed: of the draws)")
    for flag, parameter in ALIGNMENT_PARAMETER_OF_FLAG.items():
        spec = PARAMETERS_BY_NAME[parameter]
        kwargs = {"default": None, "help": _node_help(flag)}
        if isinstance(spec.default, list):
            kwargs.update(type=float, nargs=len(spec.default), metavar=("X", "Y", "Z", "QX", "QY", "QZ", "QW"))
        elif spec.choices is not None:
            kwargs.update(choices=spec.choices)
        else:
            kwargs.update(type=type(spec.default), metavar="VALUE")
        group.add_argument(flag, **kwargs)


def online_alignment_fields(args: argparse.Namespace) -> dict:
    """The EvaluationConfig fields of the online-alignment flags (only the --align-* flags given)."""
    given = {parameter: getattr(args, flag[2:].replace("-", "_"))
             for flag, parameter in ALIGNMENT_PARAMETER_OF_FLAG.items()}
    return {"align_topic": args.align_topic, "align_camera_info_topic": args.align_camera_info_topic,
            "simulate_sparse": args.simulate_sparse,
            "align_parameters": {name: value for name, value in given.items() if value is not None}}


def config_from_args(args: argparse.Namespace) -> EvaluationConfig:
    """The run's configuration from evaluate_bag's parsed arguments (checked when the run starts)."""
    return dataclasses.replace(shared_config_from_args(args), input_bag=Path(args.input_bag),
                               output_bag=args.output_bag, report_dir=args.report_dir)


def shared_config_from_args(args: argparse.Namespace) -> EvaluationConfig:
    """The configuration of the options :func:`add_evaluation_arguments` adds, for any bag: its
    input bag is a placeholder (``Path()``) and it writes nothing until the caller sets
    input_bag, output_bag and report_dir (evaluate_bags does so for each bag)."""
    tasks = tuple(args.tasks) if args.tasks else (
        ("depth",) + (("segmentation",) if args.gt_labels_topic else ()))
    model = ModelConfig(
        variant=args.variant, weights=args.weights, allow_random_weights=args.allow_random_weights,
        tasks=tuple(dict.fromkeys(tasks)), segmentation_variant=args.segmentation_variant,
        segmentation_weights=args.segmentation_weights, device=args.device, precision=args.precision,
        compile=args.compile, input_size=args.input_size)
    pipeline = PipelineSettings(depth_scale=args.depth_scale, depth_shift=args.depth_shift,
                                depth_max_range=args.depth_max_range)
    return EvaluationConfig(
        input_bag=Path(), image_topic=args.image_topic, model=model, pipeline=pipeline,
        camera_info_topic=args.camera_info_topic, gt_depth_topic=args.gt_depth_topic,
        gt_labels_topic=args.gt_labels_topic, gt_label_map=args.gt_label_map,
        gt_label_offset=args.gt_label_offset, stamp_tolerance=args.stamp_tolerance,
        batch_size=args.batch_size, start=args.start, stride=args.stride, max_frames=args.max_frames,
        preset=args.preset, min_depth=args.min_depth, max_depth=args.max_depth,
        alignment=_ALIGNMENT_OF_FLAG[args.alignment], output_prefix=args.output_prefix,
        copy_topics=tuple(args.copy_topics), progress=not args.no_progress, **online_alignment_fields(args))


def online_alignment_line(report: dict) -> str:
    """One line of what online alignment did: the frames it was usable at and, with ground truth,
    each depth row's AbsRel."""
    online, rows = report["online_alignment"], report["depth_rows"]
    line = f"online alignment usable at {online['frames_usable']} of {online['frames']} frames"
    if any(row.get("frames") for row in rows.values()):
        scores = [f"{name} " + (f"{row['depth']['abs_rel']:.4f}" if row.get("depth") else
                                "not metric" if not row["metric"] else "-") for name, row in rows.items()]
        line += "; AbsRel " + ", ".join(scores)
    return line


def terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def _print(line: str) -> None:
    print(f"evaluate_bag: {line}", file=sys.stderr)


def _print_reasons(report: dict) -> None:
    """Each distinct reason a frame was not processed, once, with its count."""
    for reason, count in sorted(report["undecodable_reasons"].items(), key=lambda item: -item[1]):
        _print(f"  {count} frame{'s' if count != 1 else ''}: {reason}")


def main(argv: list[str] | None = None) -> int:
    from dpt_ros.evaluation.run import OUTCOME_NO_FRAME, evaluate

    parser = build_parser()
    args = parser.parse_args(argv)

    # SIGTERM (e.g. from a job scheduler) ends the run like Ctrl-C: outputs are still finalised.
    signal.signal(signal.SIGTERM, terminate_as_interrupt)
    try:
        report = evaluate(config_from_args(args))
    except (EvaluationError, bag_io.BagError, ModelLoadError) as exc:
        _print(f"error: {' '.join(str(exc).split())}")
        return EXIT_REFUSED
    except KeyboardInterrupt:  # before the main loop (e.g. while loading the model)
        _print("interrupted before any frame was processed")
        return EXIT_INTERRUPTED
    counts = report["counts"]
    if report["outcome"] == OUTCOME_NO_FRAME:
        _print(f"error: no frame was processed ({counts['selected']} selected"
               f"{', ' + str(counts['undecodable']) + ' undecodable' if counts['undecodable'] else ''})")
        if report["empty_selection"]:
            _print(f"  {report['empty_selection']}")
        _print_reasons(report)
        return EXIT_NO_FRAME
    _print(f"{counts['processed']} frames processed, {counts['undecodable']} undecodable"
           f"{' (interrupted)' if report['interrupted'] else ''}")
    _print_reasons(report)
    if report.get("online_alignment"):
        _print(online_alignment_line(report))
    return EXIT_INTERRUPTED if report["interrupted"] else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
