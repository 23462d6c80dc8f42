"""The fleet report of an evaluate_bags run: report.json, report.md and plots in the output folder.

Overall metrics come from the per-bag reports' ``sums`` (DepthMetricSums, DepthErrorHistogram,
ConfusionMatrix merged), so every frame or every valid pixel of the fleet weighs the same, as if
the bags had been one recording; a bag's own averages are not averaged again.  Only bags that are
done count; failed, interrupted and not started bags are listed with their reasons.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dpt_ros.evaluation.fleet_inputs import BagInput
from dpt_ros.evaluation.manifest import DONE, FAILED, INTERRUPTED, PER_BAG_REPORT
from dpt_ros.evaluation.metrics import ConfusionMatrix, DepthErrorHistogram, DepthMetricSums
from dpt_ros.evaluation.online_alignment import ROW_NONE, DepthRows
from dpt_ros.evaluation.report import (
    DEPTH_COLUMNS,
    depth_rows_table,
    depth_section,
    format_value,
    plot_confusion,
    plot_error_vs_depth,
    plots_and_versions,
    save_figure,
    segmentation_section,
    settings_table,
    write_json_and_markdown,
)

PENDING = "not started"
PLOT_BAGS_ABS_REL = "bags_abs_rel.png"
PLOT_BAGS_MEAN_IOU = "bags_mean_iou.png"
FLEET_PLOTS = (PLOT_BAGS_ABS_REL, PLOT_BAGS_MEAN_IOU, "error_vs_depth.png", "confusion_matrix.png")
MAX_PLOTTED_BAGS = 40  # bars in the per-bag plots: the worst ones


@dataclass
class BagOutcome:
    """How one bag of the run ended: ``state`` done, failed, interrupted or not started;
    ``evaluated`` False for a bag done before and skipped; ``why`` it was evaluated or skipped."""

    bag: BagInput
    state: str
    why: str
    evaluated: bool
    reason: str | None = None
    traceback: str | None = None
    worker_s: float | None = None  # the bag's time in its worker (evaluation, report, plots)


def build_fleet_report(outcomes: list[BagOutcome], output_dir: Path, head: dict) -> tuple[dict, dict]:
    """The fleet report (report.json's dictionary) and the merged sums its plots need.

    ``head`` holds what the run knows beyond the bags (configuration, input, timing, ray ...) and
    is placed first.  Each done bag's report.json is read back from its folder."""
    depth = histogram = confusion = engine = depth_rows = None
    rows, failures = [], []
    counts: dict[str, int] = {}
    for outcome in outcomes:
        row = {"name": outcome.bag.name, "bag": str(outcome.bag.path), "state": outcome.state, "why": outcome.why,
               "evaluated_now": outcome.evaluated, "reason": outcome.reason, "worker_s": outcome.worker_s}
        if outcome.state == DONE:
            report = json.loads((Path(output_dir) / outcome.bag.name / PER_BAG_REPORT).read_text())
            row.update(_bag_row(report, outcome.bag.name))
            engine = engine or report["input"]["engine"]
            sums = report["sums"]
            depth = _merged(depth, DepthMetricSums.from_json(sums["depth"]))
            histogram = _merged(histogram, DepthErrorHistogram.from_json(sums["depth_error_histogram"]))
            confusion = _merged(confusion, ConfusionMatrix.from_json(sums["confusion_matrix"]))
            if sums.get("depth_rows"):  # online alignment: its rows add up like the other sums
                if depth_rows is None:
                    none_row = report["depth_rows"][ROW_NONE]
                    depth_rows = DepthRows(None if none_row["metric"] else none_row["note"])
                depth_rows.merge_sums_json(sums["depth_rows"])
            for key, value in report["counts"].items():
                counts[key] = counts.get(key, 0) + value
        elif outcome.state == FAILED:
            failures.append({"name": outcome.bag.name, "bag": str(outcome.bag.path), "reason": outcome.reason,
                             **({"traceback": outcome.traceback} if outcome.traceback else {})})
        rows.append(row)

    ranking, key = _ranking(rows)
    done = sorted((r for r in rows if r["state"] == DONE), key=key)
    order = {INTERRUPTED: 0, PENDING: 1, FAILED: 2}
    rest = sorted((r for r in rows if r["state"] != DONE), key=lambda r: (order.get(r["state"], 3), r["name"]))
    frame_mean = depth.frame_mean() if depth else None
    pixel_mean = depth.pixel_mean() if depth else None
    segmentation = confusion.metrics() if confusion else None
    states = [o.state for o in outcomes]
    if engine and not head.get("input", {}).get("engine"):  # no worker ran now: as the bags were evaluated
        head = {**head, "input": {**head.get("input", {}), "engine": engine}}
    report = {
        **head,
        "interrupted": PENDING in states or INTERRUPTED in states,
        "bags": {"total": len(outcomes), "done": states.count(DONE), "failed": states.count(FAILED),
                 "interrupted": states.count(INTERRUPTED), "not_started": states.count(PENDING),
                 "evaluated_now": sum(o.evaluated for o in outcomes),
                 "done_before": sum(o.state == DONE and not o.evaluated for o in outcomes)},
        "counts": counts,
        "depth": frame_mean.as_dict() if frame_mean else None,
        "depth_pixel_weighted": pixel_mean.as_dict() if pixel_mean else None,
        "segmentation": segmentation.as_dict() if segmentation else None,
        "depth_error_histogram": histogram.shown_json() if histogram and histogram.counts.any() else None,
        "depth_rows": depth_rows.summary() if depth_rows else None,
        "sums": {"depth": depth.to_json() if depth else None,
                 "depth_error_histogram": histogram.to_json() if histogram else None,
                 "confusion_matrix": confusion.to_json() if confusion else None,
                 **({"depth_rows": depth_rows.sums_json()} if depth_rows else {})},
        "ranking": ranking,
        "per_bag": done + rest,
        "failures": failures,
    }
    return report, {"histogram": histogram, "confusion": confusion}


def _merged(total, part):
    if total is None:
        return part
    total.merge(part)
    return total


def _bag_row(report: dict, name: str) -> dict:
    """What the per-bag table shows of a bag's report.json."""
    segmentation = report.get("segmentation")
    return {"report": f"{name}/report.md", "counts": report["counts"], "depth": report.get("depth"),
            "depth_pixel_weighted": report.get("depth_pixel_weighted"),
            "segmentation": {key: segmentation[key] for key in ("pixel_accuracy", "mean_iou")} if segmentation else None,
            "wall_s": report["timing"]["wall_s"], "frames_per_second": report["timing"]["frames_per_second"],
            "warnings": len(report.get("warnings", []))}


def _ranking(rows: list[dict]):
    """How done bags are ordered, worst first: by AbsRel when depth was scored, else by mIoU."""
    if any(r.get("depth") for r in rows):
        return "depth AbsRel (mean over frames), highest first", \
            lambda r: (r["depth"] is None, -(r["depth"] or {}).get("abs_rel", 0.0), r["name"])
    if any(r.get("segmentation") for r in rows):
        return "segmentation mIoU, lowest first", \
            lambda r: (r["segmentation"] is None, (r["segmentation"] or {}).get("mean_iou", 0.0), r["name"])
    return "bag name (no metric was scored)", lambda r: r["name"]


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------

def write_fleet_report(report: dict, merged: dict, output_dir: Path) -> dict[str, Path]:
    """report.json, report.md and the plots that have data, in the output folder."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: headless machines, no display
    output_dir = Path(output_dir)
    for name in FLEET_PLOTS:  # an earlier run's plot that this run has no data for
        (output_dir / name).unlink(missing_ok=True)
    done = [r for r in report["per_bag"] if r["state"] == DONE]
    plots = {}
    scored = [r for r in done if r["depth"]]
    if scored:
        plots["bags_abs_rel"] = _plot_bags(
            [(r["name"], r["depth"]["abs_rel"]) for r in scored], report["depth"]["abs_rel"],
            "AbsRel (mean over frames), worst first", output_dir / PLOT_BAGS_ABS_REL)
    labelled = sorted((r for r in done if r["segmentation"]), key=lambda r: r["segmentation"]["mean_iou"])
    if labelled:
        plots["bags_mean_iou"] = _plot_bags(
            [(r["name"], r["segmentation"]["mean_iou"]) for r in labelled], report["segmentation"]["mean_iou"],
            "mIoU, worst first", output_dir / PLOT_BAGS_MEAN_IOU)
    if report.get("depth_error_histogram"):
        plots["error_vs_depth"] = plot_error_vs_depth(report["depth_error_histogram"], output_dir / FLEET_PLOTS[2])
    if merged["confusion"] is not None and merged["confusion"].total:
        plots["confusion_matrix"] = plot_confusion(merged["confusion"], output_dir / FLEET_PLOTS[3])
    return write_json_and_markdown(report, output_dir, plots, render_fleet_markdown)


def _plot_bags(values: list[tuple[str, float]], overall: float, title: str, path: Path) -> Path:
    """Horizontal bars, one per bag in the given order (the worst at the top), and the fleet's value."""
    import matplotlib.pyplot as plt

    values = values[:MAX_PLOTTED_BAGS]
    fig, axis = plt.subplots(figsize=(8, 1.2 + 0.3 * len(values)))
    axis.barh(range(len(values)), [v for _, v in values], color="tab:red")
    axis.set_yticks(range(len(values)), [name for name, _ in values], fontsize="small")
    axis.invert_yaxis()
    axis.axvline(overall, color="black", linestyle="--", label=f"fleet {overall:.4f}")
    axis.legend(loc="lower right", fontsize="small")
    axis.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def render_fleet_markdown(report: dict) -> str:
    bags = report["bags"]
    lines = [f"# DPT evaluation of {bags['total']} bags", ""]
    if report.get("interrupted"):
        lines += ["**Interrupted**: the overall numbers cover the bags that were done; the others are "
                  "evaluated by the next run with the same options.", ""]
    lines += settings_table(report)
    lines += ["## Bags", "", "| Outcome | Bags |", "|---|---|",
              f"| done | {bags['done']} ({bags['done_before']} done before and skipped) |",
              f"| failed | {bags['failed']} |", f"| interrupted | {bags['interrupted']} |",
              f"| not started | {bags['not_started']} |", ""]
    if report["failures"]:
        lines += ["## Failures", "", "| Bag | Reason |", "|---|---|"]
        lines += [f"| `{f['name']}` ({f['bag']}) | {f['reason']} |" for f in report["failures"]]
        lines.append("")
    lines += ["## Overall", "", "Over every frame (or pixel) of the done bags, as if they were one recording.", ""]
    lines += [("#" + line) if line.startswith("## ") else line
              for line in depth_section(report) + segmentation_section(report)]
    if report.get("depth_rows"):
        lines += ["### Depth with online alignment", ""] + depth_rows_table(report["depth_rows"])
    lines += _per_bag_table(report)
    timing = report.get("timing", {})
    lines += ["## Timing", "", "| | |", "|---|---|",
              f"| wall time | {format_value(timing.get('wall_s'), 1)} s |",
              f"| frames evaluated now | {timing.get('frames_processed')} |",
              f"| frames per second, whole run | {format_value(timing.get('frames_per_second'), 2)} |",
              f"| frames per second, first bag handed out to last result | "
              f"{format_value(timing.get('frames_per_second_evaluating'), 2)} |",
              f"| Ray start-up or joining | {format_value(timing.get('ray_start_s'), 1)} s |",
              f"| workers ready (process + model) | {format_value(timing.get('workers_ready_s'), 1)} s |",
              f"| Ray overhead per bag (driver - worker) | {format_value(timing.get('ray_overhead_per_bag_s'), 3)} s |",
              f"| workers | {report.get('ray', {}).get('workers')} on {report.get('ray', {}).get('where')} |", ""]
    return "\n".join(lines + plots_and_versions(report))


def _per_bag_table(report: dict) -> list[str]:
    rows = report["per_bag"]
    has_depth = any(r.get("depth") for r in rows)
    has_labels = any(r.get("segmentation") for r in rows)
    depth_columns = [c for c in DEPTH_COLUMNS if c[0] in ("abs_rel", "rmse", "delta1")] if has_depth else []
    header = ["Bag", "State", "Frames"] + [title for _, title, _ in depth_columns] \
        + (["mIoU"] if has_labels else []) + ["frames/s", "s in worker", "Report"]
    lines = [f"## Per bag (by {report['ranking']})", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for row in rows:
        counts = row.get("counts") or {}
        frames = (f"{counts['processed']}/{counts['selected']}" if counts else "–")
        cells = [f"`{row['name']}`", row["state"] + ("" if row["evaluated_now"] or row["state"] != DONE else " before"),
                 frames]
        cells += [format_value((row.get("depth") or {}).get(key)) for key, _, _ in depth_columns]
        cells += [format_value((row.get("segmentation") or {}).get("mean_iou"))] if has_labels else []
        cells += [format_value(row.get("frames_per_second"), 2), format_value(row.get("worker_s"), 1),
                  f"[report]({row['report']})" if row.get("report") else (row.get("reason") or "–")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]
