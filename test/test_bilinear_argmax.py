"""bilinear_argmax: labels equal to argmax of the bilinearly resized logits at every pixel, ties included."""
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dpt_ros.bilinear_argmax as bilinear_argmax
from dpt_ros.bilinear_argmax import argmax_classes, plain_resized_argmax, resized_argmax


def random_logits(batch, classes, height, width, seed=0):
    return torch.randn(batch, classes, height, width, generator=torch.Generator().manual_seed(seed)) * 3


def structured_logits(batch, classes, height, width, seed=0, present=6):
    """Segmentation-like logits: a few classes with smooth fields that cross each other (regions and
    boundaries), the rest far below, plus a little per-pixel noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, classes, max(2, height // 6), max(2, width // 6), generator=generator)
    fields = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    fields[:, :present] *= 3
    fields[:, present:] -= 10
    return fields + 0.05 * torch.randn(batch, classes, height, width, generator=generator)


def tied_logits(batch, height, width, seed=0):
    """Exact ties everywhere: class 9 repeats class 2 and every value is an integer."""
    logits = structured_logits(batch, 12, height, width, seed=seed, present=4).round()
    logits[:, 9] = logits[:, 2]
    return logits


def fast_path_only(monkeypatch):
    """Make resized_argmax fail if it falls back to the reference: the host path must carry it."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("the reference ran instead of the host path")
    monkeypatch.setattr(bilinear_argmax, "plain_resized_argmax", refuse)


GEOMETRIES = [((12, 16), (97, 131)), ((16, 12), (100, 70)), ((30, 40), (90, 170)), ((7, 9), (64, 81))]


@pytest.mark.parametrize("network, image", GEOMETRIES)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("make", [random_logits, structured_logits])
def test_every_pixel_equals_the_plain_resize_then_argmax(monkeypatch, network, image, memory_format, make):
    classes = 150 if make is structured_logits else 40
    logits = make(2, classes, *network, seed=sum(network)).contiguous(memory_format=memory_format)
    expected = plain_resized_argmax(logits, image)
    full = F.interpolate(logits.contiguous(), size=image, mode="bilinear", align_corners=False).argmax(dim=1)
    assert torch.equal(expected, full)
    fast_path_only(monkeypatch)
    labels = resized_argmax(logits, image)
    assert labels.dtype == torch.int64 and labels.shape == (2, *image)
    assert torch.equal(labels, expected)
    assert len(torch.unique(expected)) > 2


@pytest.mark.parametrize("network, image", GEOMETRIES)
def test_ties_go_to_the_lowest_class_index_as_in_argmax(monkeypatch, network, image):
    logits = tied_logits(2, *network, seed=3)
    expected = plain_resized_argmax(logits, image)
    assert (expected == 2).any() and not (expected == 9).any()  # the reference's rule: the first index
    fast_path_only(monkeypatch)
    assert torch.equal(resized_argmax(logits, image), expected)


def test_near_ties_follow_the_kernels_rounding(monkeypatch):
    """Two classes that differ by less than the rounding bound everywhere: every boundary pixel is
    decided by the emulated kernel arithmetic, and must agree with the kernel's."""
    logits = structured_logits(1, 8, 20, 24, seed=4, present=3)
    logits[:, 5] = logits[:, 1] + 1e-6 * torch.randn(1, 20, 24, generator=torch.Generator().manual_seed(5))
    expected = plain_resized_argmax(logits, (111, 133))
    assert (expected == 1).any() and (expected == 5).any()
    fast_path_only(monkeypatch)
    assert torch.equal(resized_argmax(logits, (111, 133)), expected)


def test_labels_in_the_requested_dtype_and_batches_of_different_content(monkeypatch):
    logits = torch.cat([structured_logits(1, 150, 24, 32, seed=6), random_logits(1, 150, 24, 32, seed=7)])
    expected = plain_resized_argmax(logits, (96, 128))
    fast_path_only(monkeypatch)
    labels = resized_argmax(logits, (96, 128), dtype=torch.uint8)
    assert labels.dtype == torch.uint8 and torch.equal(labels.long(), expected)


def test_same_size_is_a_plain_argmax_with_the_same_tie_rule():
    for logits in (tied_logits(2, 30, 40), random_logits(1, 150, 30, 40)):
        for memory_format in (torch.contiguous_format, torch.channels_last):
            tensor = logits.contiguous(memory_format=memory_format)
            labels = resized_argmax(tensor, (30, 40))
            assert torch.equal(labels, logits.argmax(dim=1)) and torch.equal(argmax_classes(tensor), labels)
    assert not (resized_argmax(tied_logits(1, 30, 40), (30, 40)) == 9).any()


def test_shrinking_and_small_outputs_use_the_reference(monkeypatch):
    """Fewer output pixels than network pixels, or an output small enough that ATen picks another
    kernel: the reference itself runs (and is the answer by definition)."""
    calls = []
    plain = bilinear_argmax.plain_resized_argmax
    monkeypatch.setattr(bilinear_argmax, "plain_resized_argmax", lambda *a: calls.append(a[1]) or plain(*a))
    logits = structured_logits(1, 20, 64, 80)
    for size in ((40, 50), (30, 90)):
        assert torch.equal(resized_argmax(logits, size), plain(logits, size))
    assert calls == [(40, 50), (30, 90)]


def test_chunked_reference_equals_one_resize(monkeypatch):
    logits = random_logits(2, 150, 12, 20, seed=3)
    logits[0, 7] = logits[0, 100]  # exact ties: the lower class index must win, as in argmax
    full = F.interpolate(logits, size=(50, 70), mode="bilinear", align_corners=False).argmax(dim=1)
    monkeypatch.setattr(bilinear_argmax, "_LOGITS_CHUNK_ELEMENTS", 2 * 50 * 70 * 16)  # 16 classes a chunk
    assert torch.equal(plain_resized_argmax(logits, (50, 70)), full)


# ------------------------------------------------------------------------------- the emulated kernel
@pytest.mark.parametrize("network, image", GEOMETRIES + [((96, 128), (480, 640)), ((480, 864), (720, 1280))])
def test_emulated_interpolation_is_bit_exact(network, image):
    assert bilinear_argmax._emulation_matches(5, *network, image)


def test_a_wrong_emulation_is_caught_and_the_reference_used(monkeypatch):
    """Plain float32 arithmetic instead of the kernel's fused multiply-adds rounds differently:
    the per-geometry check must notice, and resized_argmax then falls back to the reference."""
    def unfused(a, b, c, d, w0, w1, h0, h1):
        return (a * w0 + b * w1) * h0 + (c * w0 + d * w1) * h1

    monkeypatch.setattr(bilinear_argmax, "_interpolate", unfused)
    monkeypatch.setattr(bilinear_argmax, "_verified", {})
    assert not bilinear_argmax._emulation_matches(150, 24, 32, (96, 128))
    logits = structured_logits(1, 150, 24, 32)
    calls = []
    plain = bilinear_argmax.plain_resized_argmax
    monkeypatch.setattr(bilinear_argmax, "plain_resized_argmax", lambda *a: calls.append(1) or plain(*a))
    assert torch.equal(resized_argmax(logits, (96, 128)), plain(logits, (96, 128))) and calls == [1]


def correctly_rounded_fma(a: np.float32, b: np.float32, c: np.float32) -> np.float32:
    """a*b + c in exact rational arithmetic, rounded once to the nearest float32 (ties to even)."""
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    guess = np.float32(float(exact))
    neighbours = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    distance = [abs(Fraction(float(n)) - exact) for n in neighbours]
    best = min(distance)
    ties = [n for n, d in zip(neighbours, distance) if d == best]
    return min(ties, key=lambda n: int(np.array(n).view(np.int32)) & 1)


def test_fma_rounds_once():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 3, 3000).astype(np.float32)
    b = rng.uniform(0, 1, 3000).astype(np.float32)
    c = (rng.normal(0, 3, 3000) * 10.0 ** rng.integers(-12, 12, 3000)).astype(np.float32)  # far apart too
    # a*b = 2**-24 - 2**-70: the exact sums lie a hair off a float32 midpoint, closer than float64
    # resolves, so rounding the float64 sum again would land on the wrong side (round-to-odd does not)
    a[:2] = np.float32(2.0 ** -24 * (1 + 2.0 ** -23))
    b[:2] = np.float32(1 - 2.0 ** -23)
    c[:2] = np.float32([1 + 2.0 ** -23, -(1 + 2.0 ** -23)])
    got = bilinear_argmax._fma(a, b, c)
    expected = np.array([correctly_rounded_fma(x, y, z) for x, y, z in zip(a, b, c)], np.float32)
    np.testing.assert_array_equal(got.view(np.int32), expected.view(np.int32))
