"""A periodic 3-D speckle texture: fully developed speckle (Rayleigh amplitude) in decibels.

The texture is sampled at a point's END-DIASTOLIC (material) position, so speckle is fixed in the
tissue: the same tissue shows the same speckle from any probe pose and moves with the beating heart.
It is made once per process from a fixed seed; patients differ by an offset into it.
"""

import functools

import numpy as np

TEXTURE_SIZE = 128
"""Voxels per side of the periodic texture (a power of two, so wrapping is a bit mask)."""

TEXTURE_SPACING_MM = 0.5
"""Texture voxel size; the texture repeats every TEXTURE_SIZE * TEXTURE_SPACING_MM = 64 mm."""


@functools.lru_cache(maxsize=4)
def speckle_texture_db(correlation_mm=0.7, seed=20240607):
    """Return the (N, N, N) float32 speckle texture in dB (mean amplitude 0 dB).

    A complex Gaussian field is low-passed with a Gaussian kernel of standard deviation
    ``correlation_mm`` (periodic, in Fourier space); its magnitude is Rayleigh distributed, like the
    envelope of echoes from many sub-resolution scatterers.
    """
    if not correlation_mm > 0:
        raise ValueError(f'speckle correlation length must be > 0 mm, got {correlation_mm}')
    n = TEXTURE_SIZE
    rng = np.random.default_rng(seed)
    field = rng.standard_normal((n, n, n), dtype=np.float32) + 1j * rng.standard_normal(
        (n, n, n), dtype=np.float32
    )
    freq = np.fft.fftfreq(n, d=TEXTURE_SPACING_MM).astype(np.float32)
    sigma_f = 1.0 / (2.0 * np.pi * correlation_mm)
    g = np.exp(-0.5 * (freq / sigma_f) ** 2).astype(np.float32)
    spectrum = np.fft.fftn(field)
    spectrum *= g[:, None, None] * g[None, :, None] * g[None, None, :]
    amplitude = np.abs(np.fft.ifftn(spectrum)).astype(np.float32)
    amplitude /= amplitude.mean()
    return (20.0 * np.log10(np.maximum(amplitude, 1e-3))).astype(np.float32)
