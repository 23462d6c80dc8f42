"""The offline evaluator: DPT over rosbag2 recordings, scored against ground truth (ROS-free).

cli (the evaluate_bag command line), config (what a run is asked to do), run (one run as a
function: ``evaluate(config) -> report``), bag_io (rosbags reading and writing), metrics (depth and
segmentation scores), report (report.json, report.md, plots).
"""
