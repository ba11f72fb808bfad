"""Every pluggable kind's registry: name → "module:attribute", nothing imported until used.

The CLI, search spaces, reports and tests read the names from here, so a new method, encoder,
augmentation, source, protocol, scheduler or sampler is one new file plus one line below (or, from
outside the package, one `register` call or one entry point: see `ecg_tune/registry.py`). Importing
this module is cheap (no torch, pandas, Ray), so `ecg-tune --help` can list the choices.

- methods: `ssl.methods.base.Method` subclasses with a `Params` dataclass and `default_encoder`.
- encoders: `ssl.encoders.base.Encoder` subclasses with `Params`, `eval_recipe`, `no_weight_decay()`.
- augmentations: `ssl.augment.base.Augmentation` subclasses with `Params`.
- sources: `data.sources.base.Source` classes (corpus readers for `ecg-tune prepare`).
- protocols: `evaluate.protocols.base.Protocol` subclasses: `run(model, dataset, setup)`.
- schedulers / samplers: `tune.schedulers` / `tune.samplers` classes: `build(spec, ...)`.
"""

from __future__ import annotations

from ecg_tune.registry import Registry

_M = "ecg_tune.ssl.methods"
METHODS = Registry(
    "method",
    {
        "simclr": f"{_M}.simclr:SimCLR",
        "byol": f"{_M}.byol:BYOL",
        "swav": f"{_M}.swav:SwAV",
        "cpc": f"{_M}.cpc:CPC",
        "supervised": f"{_M}.supervised:Supervised",
        "mae": f"{_M}.mae:MAE",
        "jepa": f"{_M}.jepa:JEPA",
        "cmsc": f"{_M}.cmsc:CMSC",
    },
)

_E = "ecg_tune.ssl.encoders"
ENCODERS = Registry(
    "encoder",
    {
        "xresnet1d50": f"{_E}.xresnet1d:XResNet1d50",
        "xresnet1d101": f"{_E}.xresnet1d:XResNet1d101",
        "cpc_fc": f"{_E}.cpc:CPCFC",
        "cpc_conv": f"{_E}.cpc:CPCConv",
        "inception1d": f"{_E}.inception1d:Inception1d",
        "lstm": f"{_E}.lstm:LSTMEncoder",
        "vit1d": f"{_E}.vit1d:ViT1d",
        "s4d": f"{_E}.s4d:S4DEncoder",
    },
)

_A = "ecg_tune.ssl.augment"
AUGMENTATIONS = Registry(
    "augmentation",
    {
        "gaussian_noise": f"{_A}.gaussian_noise:GaussianNoise",
        "random_resized_crop": f"{_A}.random_resized_crop:RandomResizedCrop",
        "timeout": f"{_A}.timeout:TimeOut",
        "channel_resize": f"{_A}.channel_resize:ChannelResize",
        "dynamic_time_warp": f"{_A}.dynamic_time_warp:DynamicTimeWarp",
        "baseline_wander": f"{_A}.baseline_wander:BaselineWander",
        "powerline_noise": f"{_A}.powerline_noise:PowerlineNoise",
        "em_noise": f"{_A}.em_noise:EMNoise",
        "baseline_shift": f"{_A}.baseline_shift:BaselineShift",
        "gaussian_blur": f"{_A}.gaussian_blur:GaussianBlur",
        "normalize": f"{_A}.normalize:Normalize",
        "random_crop": f"{_A}.random_crop:RandomCrop",
    },
)

_S = "ecg_tune.data.sources"
SOURCES = Registry(
    "source",
    {
        "ptbxl": f"{_S}.ptbxl:PtbxlSource",
        "cinc": f"{_S}.cinc:CincSource",
        "wfdb": f"{_S}.wfdb:WfdbSource",
        "code15": f"{_S}.code15:Code15Source",
        "chapman": f"{_S}.chapman:ChapmanSource",
    },
)

_P = "ecg_tune.evaluate.protocols"
PROTOCOLS = Registry(
    "protocol",
    {
        "linear": f"{_P}.linear:Linear",
        "finetune": f"{_P}.finetune:Finetune",
        "supervised": f"{_P}.fresh:Supervised",
        "random": f"{_P}.fresh:Random",
        "label-efficiency": f"{_P}.label_efficiency:LabelEfficiency",
        "noise": f"{_P}.noise:NoiseRobustness",
    },
)

_T = "ecg_tune.tune.schedulers"
SCHEDULERS = Registry(
    "scheduler",
    {
        "asha": f"{_T}:ASHA",
        "asha_promotion": f"{_T}:ASHAPromotion",
        "hyperband": f"{_T}:HyperBand",
        "pbt": f"{_T}:PBT",
        "fifo": f"{_T}:FIFO",
    },
)

_O = "ecg_tune.tune.samplers"
SAMPLERS = Registry(
    "sampler",
    {
        "tpe": f"{_O}:TPE",
        "random": f"{_O}:Random",
        "cmaes": f"{_O}:CmaEs",
        "gp": f"{_O}:GP",
        "qmc": f"{_O}:QMC",
        "nsgaii": f"{_O}:NSGAII",
    },
)

KINDS: dict[str, Registry] = {
    "methods": METHODS,
    "encoders": ENCODERS,
    "augmentations": AUGMENTATIONS,
    "protocols": PROTOCOLS,
    "schedulers": SCHEDULERS,
    "samplers": SAMPLERS,
    "sources": SOURCES,
}
