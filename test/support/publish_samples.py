"""Publisher process for the cross-process tests: sends the sample messages until killed.

Usage: python publish_samples.py SECONDS
"""
import sys
import time

import rclpy
from sensor_msgs.msg import Image

from dpt_ros.msg import InferenceStats, LabelInfo
from support import sample_messages


def main() -> int:
    deadline = time.monotonic() + float(sys.argv[1])
    rclpy.init()
    node = rclpy.create_node("sample_publisher")
    publishers = [
        (node.create_publisher(Image, "samples/image", 10), sample_messages.image()),
        (node.create_publisher(LabelInfo, "samples/label_info", 10), sample_messages.label_info()),
        (node.create_publisher(InferenceStats, "samples/stats", 10), sample_messages.inference_stats()),
    ]
    try:
        while time.monotonic() < deadline:
            for publisher, message in publishers:
                publisher.publish(message)
            time.sleep(0.1)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
