"""Evaluation report: report.json, report.md and matplotlib plots (Agg, no display needed).

Takes the report dictionary built by dpt_ros.evaluate_bag plus the few arrays that are not worth
storing in JSON (sample frames, the confusion matrix) and renders them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

DEPTH_COLUMNS = (
    ("abs_rel", "AbsRel", "lower"), ("sq_rel", "SqRel", "lower"), ("rmse", "RMSE (m)", "lower"),
    ("rmse_log", "RMSE log", "lower"), ("delta1", "δ<1.25", "higher"),
    ("delta2", "δ<1.25²", "higher"), ("delta3", "δ<1.25³", "higher"),
)
# Classes shown in the confusion-matrix plot: the most frequent ones, so the plot stays legible.
MAX_CONFUSION_CLASSES = 30

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PLOT_DEPTH_CURVES = "depth_metrics_per_frame.png"
PLOT_SEGMENTATION_CURVES = "segmentation_metrics_per_frame.png"
PLOT_SAMPLES = "samples.png"
PLOT_ERROR_VS_DEPTH = "error_vs_depth.png"
PLOT_CONFUSION = "confusion_matrix.png"


def write_report(report: dict, report_dir: str | Path, samples=(), min_depth: float = 1e-3,
                 max_depth: float = 80.0, confusion=None) -> dict[str, Path]:
    """Write report.json, report.md and the plots that have data; returns name -> path."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: headless machines, no display
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    plots = {}
    frames = report.get("frames", [])
    if any("depth" in f for f in frames):
        plots["depth_curves"] = _plot_depth_curves(frames, report_dir / PLOT_DEPTH_CURVES)
    if any("segmentation" in f for f in frames):
        plots["segmentation_curves"] = _plot_segmentation_curves(
            frames, report_dir / PLOT_SEGMENTATION_CURVES)
    if report.get("depth_error_histogram"):
        plots["error_vs_depth"] = _plot_error_vs_depth(report["depth_error_histogram"],
                                                       report_dir / PLOT_ERROR_VS_DEPTH)
    if samples:
        plots["samples"] = _plot_samples(samples, report_dir / PLOT_SAMPLES, min_depth, max_depth)
    if confusion is not None and confusion.total:
        plots["confusion_matrix"] = _plot_confusion(confusion, report_dir / PLOT_CONFUSION)
    written.update(plots)

    report = dict(report, plots={k: v.name for k, v in plots.items()})
    json_path = report_dir / REPORT_JSON
    json_path.write_text(json.dumps(_jsonable(report), indent=1, allow_nan=False))
    written["json"] = json_path
    md_path = report_dir / REPORT_MD
    md_path.write_text(render_markdown(report))
    written["markdown"] = md_path
    return written


def _jsonable(value):
    """NaN/inf -> None and numpy scalars -> Python, so report.json is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(report: dict) -> str:
    """Human-readable summary: configuration, counts, metric tables, timing, plots."""
    from dpt_ros.labels import class_name

    config = report.get("configuration", {})
    counts = report.get("counts", {})
    timing = report.get("timing", {})
    lines = [f"# DPT evaluation of `{config.get('input_bag', '?')}`", ""]
    if report.get("interrupted"):
        lines += ["**Interrupted**: the numbers cover the frames processed before the stop.", ""]
    engine = report.get("input", {}).get("engine", {})
    lines += [
        "| Setting | Value |", "|---|---|",
        f"| Variant | `{config.get('variant')}` ({', '.join(config.get('tasks', []))}) |",
        f"| Weights | `{config.get('weights') or config.get('segmentation_weights') or 'random'}` |",
        f"| Device / precision | {engine.get('device')} / {engine.get('precision')} |",
        f"| Image topic | `{config.get('image_topic')}` ({report.get('input', {}).get('image_type')}) |",
        f"| Storage | {report.get('input', {}).get('storage')} |",
        f"| Depth output | {report.get('depth_output_kind')} |",
        f"| Alignment | {report.get('alignment')} |",
        f"| Depth range | {config.get('min_depth')} – {config.get('max_depth')} m"
        f" ({config.get('preset') or 'default'}) |",
        f"| Frames | start {config.get('start')} s, stride {config.get('stride')}, "
        f"max {config.get('max_frames') or 'all'}, batch {config.get('batch_size')} |",
        "",
        "## Frames", "", "| Outcome | Frames |", "|---|---|",
    ]
    lines += [f"| {name.replace('_', ' ')} | {value} |" for name, value in counts.items()]
    lines.append("")

    depth = report.get("depth")
    lines += ["## Depth", ""]
    if depth:
        lines += ["| " + " | ".join(title for _, title, _ in DEPTH_COLUMNS) + " | frames |",
                  "|" + "---|" * (len(DEPTH_COLUMNS) + 1),
                  "| " + " | ".join(_fmt(depth[key]) for key, _, _ in DEPTH_COLUMNS)
                  + f" | {counts.get('depth_evaluated', 0)} |", ""]
        lines += ["Mean over frames; AbsRel, SqRel, RMSE, RMSE log: lower is better; δ: higher is "
                  "better.", ""]
    else:
        lines += ["No depth ground truth was evaluated.", ""]

    segmentation = report.get("segmentation")
    lines += ["## Segmentation", ""]
    if segmentation:
        lines += ["| Pixel accuracy | mIoU | classes | pixels |", "|---|---|---|---|",
                  f"| {_fmt(segmentation['pixel_accuracy'])} | {_fmt(segmentation['mean_iou'])} "
                  f"| {len(segmentation['per_class_iou'])} | {segmentation['evaluated_pixels']} |",
                  "", "| Class | IoU |", "|---|---|"]
        per_class = sorted(segmentation["per_class_iou"].items(), key=lambda kv: -kv[1])
        lines += [f"| {int(c)} {class_name(int(c))} | {_fmt(iou)} |" for c, iou in per_class]
        lines.append("")
    else:
        lines += ["No segmentation ground truth was evaluated.", ""]

    lines += ["## Timing", "", "| Stage | mean ms/frame |", "|---|---|"]
    for stage, value in (timing.get("mean_ms_per_frame") or {}).items():
        lines.append(f"| {stage.removesuffix('_ms')} | {_fmt(value, 2)} |")
    lines += ["", f"Wall time {_fmt(timing.get('wall_s'), 2)} s, "
              f"{_fmt(timing.get('frames_per_second'), 2)} frames/s.", ""]

    if report.get("output_topics"):
        lines += ["## Output bag", "", f"`{config.get('output_bag')}`", "",
                  "| Topic | Messages |", "|---|---|"]
        lines += [f"| `{t}` | {n} |" for t, n in report["output_topics"].items()]
        lines.append("")
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    if report.get("plots"):
        lines += ["## Plots", ""] + [f"![{name}]({path})" for name, path in report["plots"].items()]
        lines.append("")
    versions = report.get("versions", {})
    lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------------

def _plot_depth_curves(frames: list[dict], path: Path) -> Path:
    import matplotlib.pyplot as plt

    evaluated = [f for f in frames if "depth" in f]
    index = [f["index"] for f in evaluated]
    fig, (errors, accuracy) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for key, title, _ in DEPTH_COLUMNS[:4]:
        errors.plot(index, [f["depth"][key] for f in evaluated], marker=".", label=title)
    errors.set_ylabel("error")
    errors.legend(loc="upper right", fontsize="small")
    for key, title, _ in DEPTH_COLUMNS[4:]:
        accuracy.plot(index, [f["depth"][key] for f in evaluated], marker=".", label=title)
    accuracy.set_ylim(0, 1.02)
    accuracy.set_ylabel("accuracy")
    accuracy.set_xlabel("frame")
    accuracy.legend(loc="lower right", fontsize="small")
    fig.suptitle("Depth metrics per frame")
    return _save(fig, path)


def _plot_segmentation_curves(frames: list[dict], path: Path) -> Path:
    import matplotlib.pyplot as plt

    evaluated = [f for f in frames if "segmentation" in f]
    index = [f["index"] for f in evaluated]
    fig, axis = plt.subplots(figsize=(9, 3.5))
    axis.plot(index, [f["segmentation"]["pixel_accuracy"] for f in evaluated], marker=".",
              label="pixel accuracy")
    axis.plot(index, [f["segmentation"]["mean_iou"] for f in evaluated], marker=".",
              label="mean IoU")
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("frame")
    axis.legend(loc="lower right", fontsize="small")
    fig.suptitle("Segmentation metrics per frame")
    return _save(fig, path)


def _plot_error_vs_depth(histogram: dict, path: Path) -> Path:
    import matplotlib.pyplot as plt

    edges = np.asarray(histogram["edges_m"])
    centres = (edges[:-1] + edges[1:]) / 2
    widths = np.diff(edges)
    error = np.array([np.nan if v is None else v for v in histogram["mean_abs_rel"]])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top.bar(centres, np.nan_to_num(error), width=widths * 0.9, color="tab:red")
    top.set_ylabel("mean AbsRel")
    bottom.bar(centres, histogram["pixels"], width=widths * 0.9, color="tab:blue")
    bottom.set_ylabel("pixels")
    bottom.set_xlabel("ground-truth depth (m)")
    fig.suptitle("Error vs ground-truth depth")
    return _save(fig, path)


def _plot_samples(samples: list[dict], path: Path, min_depth: float, max_depth: float) -> Path:
    """One row per sample: image | prediction | ground truth | error (depth, then labels)."""
    import matplotlib.pyplot as plt

    from dpt_ros.colorize import colorize_labels

    rows = []
    for sample in samples:
        if "prediction" in sample:
            rows.append(("depth", sample))
        if "labels" in sample:
            rows.append(("labels", sample))
    rows = rows or [("image", s) for s in samples]
    fig, axes = plt.subplots(len(rows), 4, figsize=(14, 3 * len(rows)), squeeze=False)
    for (kind, sample), axis_row in zip(rows, axes):
        for axis in axis_row:
            axis.axis("off")
        axis_row[0].imshow(sample["image"])
        axis_row[0].set_title(f"frame {sample['index']}")
        if kind == "depth":
            shown = sample.get("metric_prediction", sample["prediction"])
            metric = "metric_prediction" in sample or sample.get("prediction_kind") == "metric_depth"
            _imshow_depth(axis_row[1], shown, min_depth if metric else None,
                          max_depth if metric else None, "prediction (m)" if metric
                          else "prediction (relative inverse depth)")
            if "gt_depth" in sample:
                gt = sample["gt_depth"]
                _imshow_depth(axis_row[2], gt, min_depth, max_depth, "ground truth (m)")
                with np.errstate(invalid="ignore", divide="ignore"):
                    error = np.abs(shown - gt) / gt
                image = axis_row[3].imshow(error, cmap="magma", vmin=0, vmax=0.5)
                axis_row[3].set_title("|pred − gt| / gt")
                fig.colorbar(image, ax=axis_row[3], fraction=0.046)
        elif kind == "labels":
            axis_row[1].imshow(colorize_labels(sample["labels"]))
            axis_row[1].set_title("predicted classes")
            if "gt_labels" in sample:
                gt = sample["gt_labels"]
                axis_row[2].imshow(colorize_labels(gt))
                axis_row[2].set_title("ground truth")
                pred = sample["labels"]
                if pred.shape == gt.shape:
                    wrong = np.where(gt == 255, np.nan, (pred != gt).astype(float))
                    axis_row[3].imshow(wrong, cmap="Reds", vmin=0, vmax=1)
                    axis_row[3].set_title("wrong pixels")
    fig.tight_layout()
    return _save(fig, path)


def _imshow_depth(axis, depth, vmin, vmax, title) -> None:
    finite = depth[np.isfinite(depth)]
    if vmin is None and finite.size:
        vmin, vmax = np.percentile(finite, [2, 98])
    image = axis.imshow(depth, cmap="turbo", vmin=vmin, vmax=vmax)
    axis.figure.colorbar(image, ax=axis, fraction=0.046)
    axis.set_title(title)


def _plot_confusion(confusion, path: Path) -> Path:
    """Row-normalized confusion matrix over the most frequent ground-truth/predicted classes."""
    import matplotlib.pyplot as plt

    from dpt_ros.labels import class_name

    matrix = confusion.matrix
    weight = matrix.sum(axis=0) + matrix.sum(axis=1)
    classes = [int(c) for c in np.argsort(-weight, kind="stable") if weight[c] > 0]
    classes = sorted(classes[:MAX_CONFUSION_CLASSES])
    sub = matrix[np.ix_(classes, classes)].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = sub / sub.sum(axis=1, keepdims=True)
    size = max(4.0, 0.35 * len(classes) + 2.5)
    fig, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    names = [f"{c} {class_name(c)}" for c in classes]
    axis.set_xticks(range(len(classes)), names, rotation=90, fontsize="small")
    axis.set_yticks(range(len(classes)), names, fontsize="small")
    axis.set_xlabel("predicted")
    axis.set_ylabel("ground truth")
    fig.colorbar(image, ax=axis, fraction=0.046, label="fraction of ground-truth pixels")
    axis.set_title("Confusion matrix (rows normalized)")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
