"""The ROS 2 adapter of dpt_ros: the only place besides the demo tools that imports rclpy.

node          DptNode (a lifecycle node) and main(): parameters, state transitions, wiring
parameters    declaring the parameter table with descriptors; unknown names; start-up errors
camera        one camera's subscriptions, image/camera_info pairing by stamp, camera model
camera_alignment  one camera's online alignment: sparse depth subscriptions, nearest message, aligner
worker        pending frames (newest wins), rate limit, batching across cameras, model reloads
outputs       one camera's publishers and the messages built from the pipeline's outputs
diagnostics   frame counters over a recent window, /diagnostics status, ~/stats
"""
