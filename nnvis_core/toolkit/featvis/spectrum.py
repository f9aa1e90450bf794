"""How much of an image's variation is fine detail: a check that regularization did its job.

Unregularized feature visualizations are dominated by high-frequency patterns
(pixel-level noise the network responds to); regularized ones are not. The
share of spectral power above a cut-off frequency measures that in one number.
"""

from __future__ import annotations

import numpy as np

HALF_NYQUIST = 0.25  # cycles per pixel


def high_frequency_share(image: np.ndarray, cutoff: float = HALF_NYQUIST) -> float:
    """Share of the power spectrum of the image's grey values above `cutoff` cycles per pixel.

    `image` is (H, W, 3) or (H, W), uint8 or float. The mean is removed first
    (the constant term carries no pattern); a flat image gives 0.
    """
    values = np.asarray(image, dtype=np.float64)
    if values.ndim == 3:
        values = values.mean(axis=2)
    if values.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {values.shape}")
    power = np.abs(np.fft.fft2(values - values.mean())) ** 2
    fy = np.fft.fftfreq(values.shape[0])[:, None]
    fx = np.fft.fftfreq(values.shape[1])[None, :]
    total = power.sum()
    if total <= 0:
        return 0.0
    return float(power[np.sqrt(fx ** 2 + fy ** 2) > cutoff].sum() / total)
