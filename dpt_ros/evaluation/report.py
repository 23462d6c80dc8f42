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
PLOT_ALIGNMENT = "online_alignment_per_frame.png"


def write_report(report: dict, report_dir: str | Path, samples=(), min_depth: float = 1e-3,
                 max_depth: float = 80.0, confusion=None) -> dict[str, Path]:
    """Write report.json, report.md and the plots that have data; returns name -> path."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: headless machines, no display
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    frames = report.get("frames", [])
    if report.get("online_alignment"):
        plots["online_alignment"] = _plot_online_alignment(frames, report["depth_rows"], report_dir / PLOT_ALIGNMENT)
    if any("depth" in f for f in frames):
        plots["depth_curves"] = _plot_depth_curves(frames, report_dir / PLOT_DEPTH_CURVES)
    if any("segmentation" in f for f in frames):
        plots["segmentation_curves"] = _plot_segmentation_curves(
            frames, report_dir / PLOT_SEGMENTATION_CURVES)
    if report.get("depth_error_histogram"):
        plots["error_vs_depth"] = plot_error_vs_depth(report["depth_error_histogram"],
                                                       report_dir / PLOT_ERROR_VS_DEPTH)
    if samples:
        plots["samples"] = _plot_samples(samples, report_dir / PLOT_SAMPLES, min_depth, max_depth)
    if confusion is not None and confusion.total:
        plots["confusion_matrix"] = plot_confusion(confusion, report_dir / PLOT_CONFUSION)
    return write_json_and_markdown(report, report_dir, plots, render_markdown)


def write_json_and_markdown(report: dict, report_dir: Path, plots: dict[str, Path], render) -> dict[str, Path]:
    """report.json (strict JSON, with the plots' file names) and report.md (``render(report)``);
    returns name -> path of everything written, plots included."""
    report = dict(report, plots={k: v.name for k, v in plots.items()})
    json_path = report_dir / REPORT_JSON
    json_path.write_text(json.dumps(jsonable(report), indent=1, allow_nan=False))
    md_path = report_dir / REPORT_MD
    md_path.write_text(render(report))
    return {**plots, "json": json_path, "markdown": md_path}


def jsonable(value):
    """NaN/inf -> None and numpy scalars -> Python, so report.json is strict JSON."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_value(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(report: dict) -> str:
    """Human-readable summary: configuration, counts, metric tables, timing, plots."""
    config = report.get("configuration", {})
    counts = report.get("counts", {})
    timing = report.get("timing", {})
    lines = [f"# DPT evaluation of `{config.get('input_bag', '?')}`", ""]
    if report.get("interrupted"):
        lines += ["**Interrupted**: the numbers cover the frames processed before the stop.", ""]
    lines += settings_table(report)
    lines += ["## Frames", "", "| Outcome | Frames |", "|---|---|"]
    lines += [f"| {name.replace('_', ' ')} | {value} |" for name, value in counts.items()]
    lines.append("")
    if report.get("empty_selection"):
        lines += [f"No frame selected: {report['empty_selection']}.", ""]
    if report.get("undecodable_reasons"):
        lines += ["| Frames not decoded | Reason |", "|---|---|"]
        lines += [f"| {count} | {reason} |" for reason, count in report["undecodable_reasons"].items()]
        lines.append("")

    lines += depth_section(report) + online_alignment_section(report) + segmentation_section(report)

    lines += ["## Timing", "", "| Stage | mean ms/frame |", "|---|---|"]
    for stage, value in (timing.get("mean_ms_per_frame") or {}).items():
        lines.append(f"| {stage.removesuffix('_ms')} | {format_value(value, 2)} |")
    lines += ["", f"Wall time {format_value(timing.get('wall_s'), 2)} s, "
              f"{format_value(timing.get('frames_per_second'), 2)} frames/s.", ""]

    if report.get("output_topics"):
        lines += ["## Output bag", "", f"`{config.get('output_bag')}`", "",
                  "| Topic | Messages |", "|---|---|"]
        lines += [f"| `{t}` | {n} |" for t, n in report["output_topics"].items()]
        lines.append("")
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    lines += plots_and_versions(report)
    return "\n".join(lines)


def settings_table(report: dict) -> list[str]:
    """The "Setting | Value" table of a report's configuration, engine and input."""
    config = report.get("configuration", {})
    model = config.get("model", {})
    pipeline = config.get("pipeline", {})
    engine = report.get("input", {}).get("engine") or {}
    tasks = model.get("tasks", [])
    weights = [f"depth `{model.get('weights') or 'random'}`"] if "depth" in tasks else []
    if "segmentation" in tasks:
        seg_weights = model.get("segmentation_weights") if "depth" in tasks else model.get("weights")
        weights.append(f"segmentation `{seg_weights or 'random'}`"
                       + (f" ({model['segmentation_variant']})" if model.get("segmentation_variant") else ""))
    metric_map = (f"1 / ({pipeline.get('depth_scale')} · output + {pipeline.get('depth_shift')})"
                  if pipeline.get("depth_scale") else "the model's")
    return [
        "| Setting | Value |", "|---|---|",
        f"| Variant | `{model.get('variant')}` ({', '.join(tasks)}) |",
        f"| Weights | {', '.join(weights)} |",
        f"| Device / precision / forward | {engine.get('device')} / {engine.get('precision')} / "
        f"{engine.get('compile')} |",
        f"| Image topic | `{config.get('image_topic')}` ({report.get('input', {}).get('image_type')}) |",
        f"| Storage | {report.get('input', {}).get('storage')} |",
        f"| Depth output | {report.get('depth_output_kind')}; metres: {metric_map}, max range "
        f"{pipeline.get('depth_max_range') or 'none'} |",
        f"| Alignment | {report.get('alignment')} |",
        f"| Depth range | {config.get('min_depth')} – {config.get('max_depth')} m"
        f" ({config.get('preset') or 'default'}) |",
        f"| Frames | start {config.get('start')} s, stride {config.get('stride')}, "
        f"max {config.get('max_frames') or 'all'}, batch {config.get('batch_size')} |",
        "",
    ]


def depth_section(report: dict) -> list[str]:
    """"## Depth": the metrics averaged over frames and over all pixels at once."""
    depth = report.get("depth")
    lines = ["## Depth", ""]
    if not depth:
        return lines + ["No depth ground truth was evaluated.", ""]
    lines += ["| " + " | ".join(title for _, title, _ in DEPTH_COLUMNS) + " | frames |",
              "|" + "---|" * (len(DEPTH_COLUMNS) + 1),
              "| " + " | ".join(format_value(depth[key]) for key, _, _ in DEPTH_COLUMNS)
              + f" | {report.get('counts', {}).get('depth_evaluated', 0)} |", ""]
    lines += ["Mean over frames; AbsRel, SqRel, RMSE, RMSE log: lower is better; δ: higher is "
              "better.", ""]
    pixels = report.get("depth_pixel_weighted")
    if pixels:
        lines += ["Over all pixels at once (each pixel weighs the same):", "",
                  "| " + " | ".join(title for _, title, _ in DEPTH_COLUMNS) + " | pixels |",
                  "|" + "---|" * (len(DEPTH_COLUMNS) + 1),
                  "| " + " | ".join(format_value(pixels[key]) for key, _, _ in DEPTH_COLUMNS)
                  + f" | {pixels['valid_pixels']} |", ""]
    return lines


def segmentation_section(report: dict) -> list[str]:
    """"## Segmentation": pixel accuracy, mIoU and each class's IoU."""
    from dpt_ros.labels import class_name

    segmentation = report.get("segmentation")
    lines = ["## Segmentation", ""]
    if not segmentation:
        return lines + ["No segmentation ground truth was evaluated.", ""]
    lines += ["| Pixel accuracy | mIoU | classes | pixels |", "|---|---|---|---|",
              f"| {format_value(segmentation['pixel_accuracy'])} | {format_value(segmentation['mean_iou'])} "
              f"| {len(segmentation['per_class_iou'])} | {segmentation['evaluated_pixels']} |",
              "", "| Class | IoU |", "|---|---|"]
    per_class = sorted(segmentation["per_class_iou"].items(), key=lambda kv: -kv[1])
    lines += [f"| {int(c)} {class_name(int(c))} | {format_value(iou)} |" for c, iou in per_class]
    return lines + [""]


def plots_and_versions(report: dict) -> list[str]:
    lines = []
    if report.get("plots"):
        lines += ["## Plots", ""] + [f"![{name}]({path})" for name, path in report["plots"].items()]
        lines.append("")
    versions = report.get("versions", {})
    return lines + ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]


def online_alignment_section(report: dict) -> list[str]:
    """"## Depth with online alignment": the aligner's source and states, and the depth metrics of the
    online-aligned, per-frame oracle and no-alignment rows side by side ([] without online alignment)."""
    online, rows = report.get("online_alignment"), report.get("depth_rows")
    if not online:
        return []
    if online["source"] == "simulated":
        source = f"simulated from the ground truth: `{online['simulation']}`"
    else:
        how = "registered to the camera" if online["source"] == "depth_image" and online["registered"] else \
            "posed by the extrinsic and projected"
        source = f"`{online['topic']}` ({online['source']}, {how}; {online['messages']} messages)"
    states = ", ".join(f"{state} {count}" for state, count in sorted(online["states"].items(), key=lambda i: -i[1]))
    return ["## Depth with online alignment", "",
            f"Sparse depth: {source}; mode {online['parameters']['alignment.mode']}. Usable alignment at "
            f"{online['frames_usable']} of {online['frames']} frames ({states or 'none'}).", ""] + depth_rows_table(rows)


def depth_rows_table(rows: dict) -> list[str]:
    """The online-aligned, per-frame oracle and no-alignment rows (report.json "depth_rows") as a
    table with its notes (a run's report and the fleet report alike)."""
    lines = ["| Depth | " + " | ".join(title for _, title, _ in DEPTH_COLUMNS) + " | frames | frames not scored |",
             "|---|" + "---|" * (len(DEPTH_COLUMNS) + 2)]
    notes = []
    for row in rows.values():
        if not row["metric"]:
            dashes = " | ".join("–" for _ in DEPTH_COLUMNS[1:])
            lines.append(f"| {row['title']} | not metric | {dashes} | – | |")
            notes += [f"{row['title'].split(' (')[0].capitalize()} — {row['note']}.", ""]
            continue
        depth = row["depth"] or {}
        unscored = "; ".join(f"{count} {reason}" for reason, count in row["unscored_frames"].items())
        lines.append(f"| {row['title']} | " + " | ".join(format_value(depth.get(key)) for key, _, _ in DEPTH_COLUMNS)
                     + f" | {row['frames']} | {unscored or '0'} |")
    lines += ["", "Mean over the frames each row scored. Online-aligned frames are those whose alignment was usable "
              "(the frames dpt_node publishes depth/image for); the oracle fits each frame's own scale and shift to "
              "its ground truth (least squares in inverse depth), the reference an online alignment is measured "
              "against.", "", *notes]
    return lines


# ------------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------------

def _plot_online_alignment(frames: list[dict], rows: dict, path: Path) -> Path:
    """AbsRel per frame of each depth row, and the online estimate's state per frame."""
    import matplotlib.pyplot as plt

    from dpt_ros.alignment import AlignmentState

    aligned = [f for f in frames if "online_alignment" in f]
    fig, (errors, states) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, height_ratios=(3, 1))
    for row, info in rows.items():
        scored = [f for f in aligned if "abs_rel" in f.get("depth_rows", {}).get(row, {})]
        if scored:
            # The online row has gaps (frames without a usable alignment): points, not a line across them.
            errors.plot([f["index"] for f in scored], [f["depth_rows"][row]["abs_rel"] for f in scored], marker="o",
                        linestyle="none" if row == "online" else "-", label=info["title"])
    errors.set_ylabel("AbsRel")
    errors.set_ylim(bottom=0)
    errors.legend(loc="best", fontsize="small")
    names = [state.name for state in AlignmentState]
    states.plot([f["index"] for f in aligned], [names.index(f["online_alignment"]["state"]) for f in aligned],
                marker="o", linestyle="none", color="tab:gray")
    states.set_yticks(range(len(names)), names, fontsize="small")
    states.set_ylim(-0.5, len(names) - 0.5)
    states.set_xlabel("frame")
    fig.suptitle("Online alignment per frame")
    return save_figure(fig, path)


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
    return save_figure(fig, path)


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
    return save_figure(fig, path)


def plot_error_vs_depth(histogram: dict, path: Path) -> Path:
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
    return save_figure(fig, path)


def _plot_samples(samples: list[dict], path: Path, min_depth: float, max_depth: float) -> Path:
    """One row per sample and output: image | prediction [| ground truth | error].

    The figure is as wide as its fullest row and every panel has the image's aspect ratio, so
    nothing but the panels and their titles and colour bars takes room."""
    import matplotlib.pyplot as plt

    rows = [_sample_panels(kind, sample, min_depth, max_depth)
            for sample in samples for kind in ("depth", "labels") if _has_output(sample, kind)]
    rows = rows or [[("image", sample["image"], f"frame {sample['index']}", {})] for sample in samples]
    columns = max(len(row) for row in rows)
    height, width = samples[0]["image"].shape[:2]
    panel_width = 3.2
    panel_height = panel_width * height / width + 0.25  # the title above each panel
    fig, axes = plt.subplots(len(rows), columns, figsize=(panel_width * columns, panel_height * len(rows)),
                             squeeze=False, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.03, h_pad=0.01, wspace=0.0, hspace=0.0)
    for row, axis_row in zip(rows, axes):
        for column, axis in enumerate(axis_row):
            if column >= len(row):
                axis.remove()  # a row without ground truth: its place stays free
                continue
            kind, image, title, style = row[column]
            axis.axis("off")
            shown = axis.imshow(image, **style)
            axis.set_title(title, fontsize="medium")
            if kind == "scalar":
                fig.colorbar(shown, ax=axis, fraction=0.046, pad=0.02)
    return save_figure(fig, path)


def _has_output(sample: dict, kind: str) -> bool:
    return ("prediction" if kind == "depth" else "labels") in sample


def _sample_panels(kind: str, sample: dict, min_depth: float, max_depth: float) -> list[tuple]:
    """[(panel kind, array, title, imshow keywords)] of one sample's depth or labels row."""
    from dpt_ros.colorize import colorize_labels

    panels = [("image", sample["image"], f"frame {sample['index']}", {})]
    if kind == "depth":
        shown = sample.get("metric_prediction", sample["prediction"])
        metric = "metric_prediction" in sample or sample.get("prediction_kind") == "metric_depth"
        gt = sample.get("gt_depth")
        # One colour scale for prediction and ground truth, over the depths they hold.
        vmin, vmax = _depth_range([shown] + ([gt] if gt is not None else []), min_depth, max_depth)
        style = {"cmap": "turbo", "vmin": vmin, "vmax": vmax, "interpolation": "nearest"}
        panels.append(("scalar", shown, "prediction (m)" if metric else "prediction (relative inverse depth)",
                       style))
        if gt is not None:
            panels.append(("scalar", gt, "ground truth (m)", style))
            with np.errstate(invalid="ignore", divide="ignore"):
                error = np.abs(shown - gt) / gt
            panels.append(("scalar", error, "|pred − gt| / gt", {"cmap": "magma", "vmin": 0, "vmax": 0.5}))
    else:
        panels.append(("labels", colorize_labels(sample["labels"]), "predicted classes", {}))
        gt = sample.get("gt_labels")
        if gt is not None:
            panels.append(("labels", colorize_labels(gt), "ground truth", {}))
            pred = sample["labels"]
            if pred.shape == gt.shape:
                wrong = np.where(gt == 255, np.nan, (pred != gt).astype(float))
                panels.append(("mask", wrong, "wrong pixels", {"cmap": "Reds", "vmin": 0, "vmax": 1}))
    return panels


def _depth_range(arrays, min_depth: float, max_depth: float) -> tuple[float, float]:
    """2nd to 98th percentile of the finite values; the evaluated range when there are none."""
    finite = np.concatenate([np.asarray(a, dtype=np.float64)[np.isfinite(a)] for a in arrays])
    if finite.size == 0:
        return min_depth, max_depth
    low, high = np.percentile(finite, [2, 98])
    return float(low), float(high if high > low else low + 1e-6)


def plot_confusion(confusion, path: Path) -> Path:
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
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
