"""Facts about ImageNet-C: corruption names, per-severity parameters, and AlexNet's errors.

The parameters are those of the ImageNet-C corruptions as packaged by `imagecorruptions`
(Michaelis et al. 2019), the reference implementation this package is checked against.
"""

from __future__ import annotations

from robustart.data.imagenet_c import ALL, COMMON, EXTRA, SEVERITIES  # noqa: F401  (the dataset's names)

#: Corruptions whose output depends on random draws (seeded per sample).
STOCHASTIC = frozenset({
    "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur",
    "motion_blur", "snow", "frost", "fog", "spatter", "elastic_transform",
})

GROUPS = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}

# Per-severity parameters (index = severity - 1).
GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)  # std, in [0, 1] units
SHOT_NOISE = (60, 25, 12, 5, 3)  # photons per unit intensity
IMPULSE_NOISE = (0.03, 0.06, 0.09, 0.17, 0.27)  # salt-and-pepper amount
SPECKLE_NOISE = (0.15, 0.2, 0.35, 0.45, 0.6)  # multiplicative std
GAUSSIAN_BLUR = (1, 2, 3, 4, 6)  # sigma
GLASS_BLUR = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # sigma, max delta, iterations
DEFOCUS_BLUR = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # disk radius, alias blur
MOTION_BLUR = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # radius, sigma
ZOOM_BLUR = (  # zoom factors (np.arange(1, stop, step) in the reference)
    (1.0, 1.11, 0.01), (1.0, 1.16, 0.01), (1.0, 1.21, 0.02), (1.0, 1.26, 0.02), (1.0, 1.31, 0.03),
)
SNOW = (  # loc, scale, zoom, threshold, blur radius, blur sigma, image blend
    (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
    (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
    (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
)
FROST = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # image weight, frost weight
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
FOG = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # strength, wibble decay
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to HSV value
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
SATURATE = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))  # HSV saturation * a + b
JPEG_COMPRESSION = (25, 18, 15, 10, 7)  # quality
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # downscale factor
ELASTIC_TRANSFORM = tuple(250 * a for a in (0.05, 0.065, 0.085, 0.1, 0.12))  # alpha
SPATTER = (  # loc, scale, sigma, threshold, intensity, mud (0: water, 1: mud)
    (0.65, 0.3, 4, 0.69, 0.6, 0),
    (0.65, 0.3, 3, 0.68, 0.6, 0),
    (0.65, 0.3, 2, 0.68, 0.5, 0),
    (0.65, 0.3, 1, 0.65, 1.5, 1),
    (0.67, 0.4, 1, 0.65, 1.5, 1),
)

#: AlexNet's top-1 error on ImageNet-C per corruption, averaged over severities 1..5
#: (Hendrycks & Dietterich 2019), the normaliser of CE / mCE.
ALEXNET_ERROR = dict(zip(COMMON, (
    0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360, 0.866816,
    0.826572, 0.819324, 0.564592, 0.853204, 0.646056, 0.717840, 0.606500,
)))
#: AlexNet's clean top-1 error on ImageNet val, the baseline of relative CE.
ALEXNET_CLEAN_ERROR = 0.4348

#: The released ImageNet-C images were saved as JPEG at this quality after corruption.
RELEASE_JPEG_QUALITY = 85
