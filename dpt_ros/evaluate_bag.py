"""evaluate_bag: run DPT over a rosbag2 recording, score it against ground truth, write a report.

    evaluate_bag INPUT_BAG --image-topic /camera/image_raw --gt-depth-topic /camera/depth \
        --camera-info-topic /camera/camera_info --variant dpt_hybrid_kitti --weights auto \
        --output-bag out_bag --report-dir report/

Reads the bag with ``rosbags`` (no ROS install needed), runs the inference engine on batches of
frames, optionally writes the outputs to a new bag in the input's storage format, and writes
report.json, report.md and plots. Ctrl-C stops the run cleanly: what was processed so far is
written to the bag and the report.
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path

from . import bag_io
from .bag_evaluation import DEFAULT_DEPTH_RANGE, PRESETS, Config, EvaluationError, evaluate
from .depth import ALIGNMENT_NONE, ALIGNMENT_SCALE_SHIFT
from .metrics import load_label_map

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # shell convention for "terminated by SIGINT"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate_bag",
        description="Run DPT depth/segmentation over a rosbag2 bag and evaluate it against "
        "ground truth recorded in the same bag.",
    )
    parser.add_argument("input_bag", help="rosbag2 bag directory (sqlite3 or mcap) or storage file")
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

    model = parser.add_argument_group("model")
    model.add_argument("--variant", default="dpt_hybrid", help="model variant (default dpt_hybrid)")
    model.add_argument("--tasks", nargs="+", choices=("depth", "segmentation"),
                       help="tasks to run (default: depth, plus segmentation when --gt-labels-topic "
                       "is given)")
    model.add_argument("--weights", help="checkpoint path, URL, HF directory, or 'auto' (official)")
    model.add_argument("--segmentation-weights",
                       help="segmentation checkpoint when both tasks run (default: 'auto' if "
                       "--weights is 'auto')")
    model.add_argument("--allow-random-weights", action="store_true",
                       help="run with untrained weights (smoke tests only; metrics are meaningless)")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    model.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    model.add_argument("--batch-size", type=int, default=1)

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
    evaluation.add_argument("--alignment", choices=("auto", "none", "scale-shift"), default="auto",
                            help="auto: least-squares scale/shift in inverse depth for relative "
                            "models, none for metric models")

    output = parser.add_argument_group("output")
    output.add_argument("--output-bag", type=Path, help="write predictions to this new bag")
    output.add_argument("--output-prefix", default="/dpt", help="topic prefix in the output bag")
    output.add_argument("--copy-topics", nargs="+", default=[], metavar="TOPIC",
                        help="copy these input topics unchanged into the output bag")
    output.add_argument("--report-dir", type=Path, help="write report.json, report.md and plots here")
    output.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """Check argument combinations and fill defaults that depend on other arguments."""
    from .model import VARIANTS

    if args.variant not in VARIANTS:
        raise EvaluationError(f"unknown variant {args.variant!r}; known: {', '.join(sorted(VARIANTS))}")
    spec = VARIANTS[args.variant]
    tasks = tuple(args.tasks) if args.tasks else (
        ("depth",) + (("segmentation",) if args.gt_labels_topic else ()))
    tasks = tuple(dict.fromkeys(tasks))
    missing = [t for t in tasks if t not in spec.tasks]
    if missing:
        raise EvaluationError(f"variant {args.variant} has no {' or '.join(missing)} head "
                              f"(it has: {', '.join(spec.tasks)})")

    weights, segmentation_weights = args.weights, args.segmentation_weights
    if weights is None and segmentation_weights is None and not args.allow_random_weights:
        raise EvaluationError("no weights given: pass --weights PATH|URL|auto, or "
                              "--allow-random-weights to run an untrained model")
    if tasks == ("segmentation",):
        segmentation_weights = segmentation_weights or weights
        weights = None
    elif "segmentation" in tasks and segmentation_weights is None:
        if weights == "auto":
            segmentation_weights = "auto"
        elif not args.allow_random_weights:
            raise EvaluationError("both tasks run: give the segmentation checkpoint with "
                                  "--segmentation-weights (or use --weights auto)")

    preset = args.preset or _preset_of_variant(args.variant)
    min_depth, max_depth = PRESETS.get(preset, DEFAULT_DEPTH_RANGE)
    min_depth = args.min_depth if args.min_depth is not None else min_depth
    max_depth = args.max_depth if args.max_depth is not None else max_depth
    if not (0 < min_depth < max_depth < math.inf):
        raise EvaluationError(f"need 0 < min-depth < max-depth < inf, got {min_depth}, {max_depth}")
    if args.batch_size < 1 or args.stride < 1:
        raise EvaluationError("--batch-size and --stride must be at least 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise EvaluationError("--max-frames must be at least 1")
    if args.start < 0 or args.stamp_tolerance < 0:
        raise EvaluationError("--start and --stamp-tolerance must not be negative")

    depth_kind = spec.tasks["depth"].output_kind if "depth" in tasks else None
    alignment = args.alignment
    if alignment == "auto":
        alignment = ALIGNMENT_SCALE_SHIFT if depth_kind == "relative_inverse_depth" else ALIGNMENT_NONE
    elif alignment == "scale-shift":
        alignment = ALIGNMENT_SCALE_SHIFT
    if (alignment == ALIGNMENT_NONE and depth_kind == "relative_inverse_depth"
            and args.gt_depth_topic):
        raise EvaluationError(f"{args.variant} predicts relative inverse depth, which cannot be "
                              "compared with metric ground truth without --alignment scale-shift")
    if args.output_bag is not None and args.output_bag.exists():
        raise EvaluationError(f"output bag {args.output_bag} exists already; not overwriting")
    if args.gt_label_map is not None:
        try:
            load_label_map(args.gt_label_map)
        except (OSError, ValueError) as exc:
            raise EvaluationError(f"cannot read --gt-label-map: {exc}") from None
    if args.copy_topics and args.output_bag is None:
        raise EvaluationError("--copy-topics needs --output-bag")
    prefix = "/" + args.output_prefix.strip("/") if args.output_prefix.strip("/") else ""

    return Config(
        input_bag=Path(args.input_bag), image_topic=args.image_topic,
        camera_info_topic=args.camera_info_topic, gt_depth_topic=args.gt_depth_topic,
        gt_labels_topic=args.gt_labels_topic, gt_label_map=args.gt_label_map,
        gt_label_offset=args.gt_label_offset, stamp_tolerance=args.stamp_tolerance,
        variant=args.variant, tasks=tasks, weights=weights,
        segmentation_weights=segmentation_weights, device=args.device, precision=args.precision,
        batch_size=args.batch_size, start=args.start, stride=args.stride,
        max_frames=args.max_frames, preset=preset, min_depth=min_depth, max_depth=max_depth,
        alignment=alignment, output_bag=args.output_bag, output_prefix=prefix,
        copy_topics=list(args.copy_topics), report_dir=args.report_dir,
        progress=not args.no_progress,
    )


def _preset_of_variant(variant: str) -> str | None:
    """Metric variants are evaluated on the range of the benchmark they were trained for, which
    their name says (dpt_hybrid_kitti, depth_anything_v2_metric_hypersim_vits, ...)."""
    words = variant.split("_")
    return next((name for name in PRESETS if name in words), None)


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .model.errors import WeightsError

    # SIGTERM (e.g. from a job scheduler) ends the run like Ctrl-C: outputs are still finalised.
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        config = config_from_args(args)
        report = evaluate(config)
    except (EvaluationError, bag_io.BagError, WeightsError, FileNotFoundError) as exc:
        print(f"evaluate_bag: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:  # before the main loop (e.g. while loading the model)
        print("evaluate_bag: interrupted before any frame was processed", file=sys.stderr)
        return EXIT_INTERRUPTED
    counts = report["counts"]
    print(f"evaluate_bag: {counts['processed']} frames processed, {counts['undecodable']} "
          f"undecodable{' (interrupted)' if report['interrupted'] else ''}", file=sys.stderr)
    return EXIT_INTERRUPTED if report["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
