"""dpt_ros: DPT depth and segmentation for ROS 2.

The ROS-free core (``dpt_ros.model``, ``dpt_ros.inference``, ``dpt_ros.geometry`` ...) imports
only torch and numpy.  The ROS adapter modules import rclpy and are never imported from here.
"""
import pkgutil

# colcon installs our modules and the rosidl-generated ``dpt_ros.msg`` into one package in the
# install space; when the source tree comes first on sys.path (running from a checkout), this
# lets ``dpt_ros.msg`` still be found in the install space.
__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
