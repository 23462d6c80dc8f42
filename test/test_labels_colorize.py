"""labels and colorize: ADE20K facts, palette lookups, depth colouring, blending."""
import cv2
import numpy as np
import pytest

from dpt_ros.colorize import blend, colorize_depth, colorize_labels
from dpt_ros.labels import (ADE20K_CLASSES, ADE20K_COLORS_PACKED, ADE20K_PALETTE, IGNORE_LABEL, NUM_CLASSES,
                            class_name)


def test_class_names_follow_object_info_150():
    assert len(ADE20K_CLASSES) == NUM_CLASSES == 150
    assert len(set(ADE20K_CLASSES)) == 150
    # Spot checks against objectInfo150 (index = Idx - 1).
    known = {0: "wall", 1: "building", 2: "sky", 3: "floor", 4: "tree", 7: "bed", 12: "person",
             20: "car", 44: "chest of drawers", 89: "television receiver", 127: "bicycle",
             136: "traffic light", 148: "clock", 149: "flag"}
    for index, name in known.items():
        assert ADE20K_CLASSES[index] == name
    assert all(name == name.strip() for name in ADE20K_CLASSES)
    assert IGNORE_LABEL == 255
    assert class_name(255) == "unknown" and class_name(2) == "sky"
    with pytest.raises(ValueError, match="outside 0..149"):
        class_name(150)


def test_palette_shape_and_known_colours():
    assert ADE20K_PALETTE.shape == (150, 3) and ADE20K_PALETTE.dtype == np.uint8
    assert not ADE20K_PALETTE.flags.writeable
    expected = {0: (120, 120, 120), 1: (180, 120, 120), 2: (6, 230, 230), 4: (4, 200, 3),
                12: (150, 5, 61), 20: (0, 102, 200), 149: (92, 0, 255)}
    for index, colour in expected.items():
        assert tuple(ADE20K_PALETTE[index]) == colour
    # The original table has exactly one repeated colour: road (6) and skyscraper (48).
    unique, counts = np.unique(ADE20K_PALETTE, axis=0, return_counts=True)
    assert len(unique) == 149
    assert tuple(unique[counts == 2][0]) == (140, 140, 140)
    assert tuple(ADE20K_PALETTE[6]) == tuple(ADE20K_PALETTE[48]) == (140, 140, 140)


def test_colorize_labels_uses_palette_and_blacks_out_unknown():
    labels = np.array([[0, 2, 255], [149, 12, 200]], dtype=np.uint8)
    rgb = colorize_labels(labels)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, [[[120, 120, 120], [6, 230, 230], [0, 0, 0]],
                                        [[92, 0, 255], [150, 5, 61], [0, 0, 0]]])
    wide = np.array([[-1, 2, 70000]], dtype=np.int64)
    np.testing.assert_array_equal(colorize_labels(wide), [[[0, 0, 0], [6, 230, 230], [0, 0, 0]]])
    with pytest.raises(ValueError, match="integers"):
        colorize_labels(np.zeros((2, 2), np.float32))


def cv2_colour(index, colormap=cv2.COLORMAP_VIRIDIS):
    """RGB colour cv2 assigns to one 8-bit index (cv2 itself returns BGR)."""
    bgr = cv2.applyColorMap(np.array([[index]], np.uint8), colormap)[0, 0]
    return bgr[::-1]


def test_colorize_depth_explicit_range_and_invalid_pixels():
    depth = np.array([[1.0, 3.0, 5.0, np.nan, np.inf, 9.0, 0.0]], dtype=np.float32)
    rgb = colorize_depth(depth, vmin=1.0, vmax=5.0)
    assert rgb.shape == (1, 7, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], cv2_colour(0))
    np.testing.assert_array_equal(rgb[0, 1], cv2_colour(128))  # (3-1)/4*255 = 127.5 -> 128
    np.testing.assert_array_equal(rgb[0, 2], cv2_colour(255))
    np.testing.assert_array_equal(rgb[0, 3], [0, 0, 0])  # NaN
    np.testing.assert_array_equal(rgb[0, 4], [0, 0, 0])  # inf
    np.testing.assert_array_equal(rgb[0, 5], cv2_colour(255))  # clipped above vmax
    np.testing.assert_array_equal(rgb[0, 6], cv2_colour(0))  # 0 is a valid value when not inverse
    # The colormap is applied in RGB order: viridis' top is yellow (red+green high, blue low).
    assert rgb[0, 2, 0] > 200 and rgb[0, 2, 2] < 60


def test_colorize_depth_inverse_makes_near_bright_end():
    depth = np.array([[1.0, 2.0, 4.0, 0.0, -1.0]], dtype=np.float32)
    rgb = colorize_depth(depth, vmin=1.0, vmax=4.0, inverse=True)
    np.testing.assert_array_equal(rgb[0, 0], cv2_colour(255))  # 1/1 is the top of [1/4, 1]
    # 1/2 -> (0.5 - 0.25) / 0.75 * 255 = 85
    np.testing.assert_array_equal(rgb[0, 1], cv2_colour(85))
    np.testing.assert_array_equal(rgb[0, 2], cv2_colour(0))
    np.testing.assert_array_equal(rgb[0, 3:], [[0, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="positive range"):
        colorize_depth(depth, vmin=0.0, vmax=4.0, inverse=True)


def test_colorize_depth_robust_percentiles():
    # Values 0..98 plus one huge outlier: percentiles 2 and 98 sit at order-statistic positions
    # 1.98 and 97.02 (of 0..99), so the range is [1.98, 97.02] and the outlier does not stretch it.
    depth = np.arange(100, dtype=np.float32).reshape(10, 10)
    depth[9, 9] = 1e6
    rgb = colorize_depth(depth)
    lo, hi = 1.98, 97.02
    for v, u in [(0, 0), (0, 2), (0, 5), (5, 0), (9, 8)]:
        value = float(depth[v, u])
        index = int(np.rint(np.clip((value - lo) / (hi - lo), 0, 1) * 255))
        np.testing.assert_array_equal(rgb[v, u], cv2_colour(index))
    np.testing.assert_array_equal(rgb[9, 9], cv2_colour(255))
    # All-invalid and constant images don't divide by zero.
    assert not colorize_depth(np.full((2, 2), np.nan)).any()
    flat = colorize_depth(np.full((2, 2), 3.0))
    np.testing.assert_array_equal(flat, np.broadcast_to(cv2_colour(0), (2, 2, 3)))


def test_blend_weights_and_mask():
    image = np.full((2, 2, 3), 100, np.uint8)
    overlay = np.full((2, 2, 3), 200, np.uint8)
    np.testing.assert_array_equal(blend(image, overlay, 0.25), np.full((2, 2, 3), 125))
    np.testing.assert_array_equal(blend(image, overlay, 0.0), image)
    np.testing.assert_array_equal(blend(image, overlay, 1.0), overlay)
    labels = np.array([[3, 255], [255, 7]], np.uint8)
    out = blend(image, overlay, 0.5, mask=labels != 255)
    np.testing.assert_array_equal(out[:, :, 0], [[150, 100], [100, 150]])
    with pytest.raises(ValueError, match="alpha"):
        blend(image, overlay, 1.5)
    with pytest.raises(ValueError, match="one shape"):
        blend(image, overlay[:1], 0.5)
    with pytest.raises(ValueError, match="mask must be"):
        blend(image, overlay, 0.5, mask=np.ones((3, 3), bool))


def test_packed_colors_are_the_palette_as_0x00rrggbb():
    assert ADE20K_COLORS_PACKED.dtype == np.uint32 and ADE20K_COLORS_PACKED.shape == (150,)
    assert ADE20K_COLORS_PACKED[0] == 0x787878  # wall (120, 120, 120)
    for index in (2, 12, 149):
        r, g, b = (int(v) for v in ADE20K_PALETTE[index])
        assert ADE20K_COLORS_PACKED[index] == (r << 16) | (g << 8) | b
