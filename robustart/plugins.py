"""The built-in extensions: registry group -> name -> "module:attr", one line each.

Each group is a `robustart.registry.Registry` (the module named in the comment). An entry is
imported only when it is first looked up, so listing this file costs nothing and no layer has
to import the packages that extend it (the zoo never imports robustart.nas: the nas family is
a line here). An installed package adds its own entries with entry points of group
`robustart.<group>`, e.g. in its pyproject.toml:

    [project.entry-points."robustart.noise_families"]
    my-noise = "my_package.noise:FAMILY"

Objects can also be registered in code (`REGISTRY.register(name, obj)`, or as a decorator);
docs/architecture.md shows each extension point with an example.
"""

BUILTIN: dict[str, dict[str, str]] = {
    # robustart.noises.NOISE_FAMILIES: what `--noise` can name
    "noise_families": {
        "clean": "robustart.noises.clean:FAMILY",
        "adversarial": "robustart.noises.adversarial:FAMILY",
        "corruption": "robustart.noises.corruption:FAMILY",
        "imagenet-s": "robustart.noises.imagenet_s:FAMILY",
        "precision": "robustart.noises.precision:FAMILY",
        "quantized": "robustart.noises.quantized:FAMILY",
    },
    # robustart.zoo.registry.FAMILIES: model families (each module registers its entries)
    "zoo_families": {
        "cnn": "robustart.zoo.entries:CNN",
        "transformer": "robustart.zoo.entries:TRANSFORMER",
        "mixer": "robustart.zoo.entries:MIXER",
        "nas": "robustart.nas.entries:FAMILY",
    },
    # robustart.zoo.registry.FORM_PROVIDERS: who parses and builds `NAME@<form>` models
    "model_forms": {
        "quant": "robustart.quant.forms:FORMS",
    },
    # robustart.quant.backends.BACKENDS: where a quantized model's layers run
    "quant_backends": {
        "fake": "robustart.quant.backends:FAKE",
        "cpu-int8": "robustart.quant.backends:CPU_INT8",
        "triton": "robustart.quant.backends:TRITON",
    },
    # robustart.quant.binary.BINARIZATION_METHODS: the methods of `NAME@binary-<method>` forms
    "binarization_methods": {
        "bnn": "robustart.quant.binary:BNN",
        "xnor": "robustart.quant.binary:XNOR",
        "irnet": "robustart.quant.binary:IRNET",
        "dirnet": "robustart.quant.binary:DIRNET",
        "reactnet": "robustart.quant.binary:REACTNET",
    },
    # robustart.bench.presets.BENCH_PRESETS: the noise lists `robustart bench --preset` names
    "bench_presets": {
        "quick": "robustart.bench.presets:QUICK",
        "robustart": "robustart.bench.presets:ROBUSTART",
    },
    # robustart.bench.executors.EXECUTORS: who runs a plan's units (`robustart bench --executor`)
    "executors": {
        "local": "robustart.bench.executors.local:EXECUTOR",
        "ray": "robustart.bench.executors.ray:EXECUTOR",
        "slurm": "robustart.bench.executors.slurm:EXECUTOR",
    },
}
