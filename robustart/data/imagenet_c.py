"""ImageNet-C's corruptions, as the released dataset names its folders
(`<corruption>/<severity>/<wnid>/<file>`): facts the data layer needs to read the dataset, and
the corruption noises (robustart/noises/corruptions) reproduce."""

#: The 15 ImageNet-C corruptions, in the paper's order (also the order of mCE tables).
COMMON = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
#: The 4 held-out ("validation") corruptions of ImageNet-C.
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL = COMMON + EXTRA
SEVERITIES = (1, 2, 3, 4, 5)
