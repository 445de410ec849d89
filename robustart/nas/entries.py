"""The nas family in the zoo: the published ABanditNAS genotypes at their evaluation sizes.

No weights are published with them (the authors released a CIFAR-10 and an MNIST checkpoint
only inside their code archive, as pickled training states); `robustart nas train` makes one,
written as a local entry. Parameter counts are exact (tests build the networks).
"""

from __future__ import annotations

from robustart.zoo.registry import ModelEntry, WeightSource, ZooFamily, register

# The nas family (one line in robustart/plugins.py): the zoo learns of it from there and never
# imports robustart.nas; its architectures are registered with timm by robustart.nas.models.
FAMILY = ZooFamily(
    "nas", "NAS", "architectures found by search (ABanditNAS)", architectures="robustart.nas.models",
    no_weights="no weights are published for this architecture. Train a checkpoint with `robustart nas train "
               "--arch {name} --data ...` (it writes a local entry that `robustart eval --model` loads), or build it "
               "untrained with pretrained=False.",
)

CIFAR10_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
MNIST_MEAN_STD = ((0.1307,), (0.3081,))
FASHION_MNIST_MEAN_STD = ((0.2860,), (0.3530,))
PAPER = "Chen et al., Anti-Bandit Neural Architecture Search for Model Defense, ECCV 2020"

ENTRIES = [
    register(ModelEntry(
        name="abanditnas-10", arch="abanditnas_10", family="nas", weights=WeightSource(),
        input_size=(3, 32, 32), crop_pct=1.0, interpolation="bilinear",
        mean=CIFAR10_MEAN_STD[0], std=CIFAR10_MEAN_STD[1], num_classes=10, params=5_688_900,
        tags=("architecture-search", "adversarial-training"), paper=PAPER,
        description="ABanditNAS CIFAR-10 genotype (ABANDIT_CIFAR_1): 10 layers, C=48, auxiliary head, "
                    "denoising blocks after three cells; CIFAR-10 preprocessing",
    ), replace=True),
    register(ModelEntry(
        name="abanditnas-mnist", arch="abanditnas_mnist", family="nas", weights=WeightSource(),
        input_size=(1, 28, 28), crop_pct=1.0, interpolation="bilinear",
        mean=MNIST_MEAN_STD[0], std=MNIST_MEAN_STD[1], num_classes=10, params=102_410,
        tags=("architecture-search", "adversarial-training"), paper=PAPER,
        description="ABanditNAS MNIST genotype (ABANDIT_MINIST_NORMAL_1): 6 layers, C=16; 1x28x28 input",
    ), replace=True),
]
