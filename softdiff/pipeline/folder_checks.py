"""Cross-checks of a model folder's files before anything is built from them.

A pipeline folder (softdiff.pipeline.folders) holds ``model_index.json`` (the data space and the training
noise schedule), ``model/`` (``config.json``, the score net, and ``diffusion_pytorch_model.safetensors``, its
weights) and ``scheduler/`` (the sampler); a model folder of the legacy layout holds the net's two files with
``scheduler_config.json`` (the training noise schedule) and ``data_info.json`` (the data space). Every JSON file
is read with a bounded size and nesting depth and must hold finite numbers only; the weights' header (tensor
names, shapes, dtypes) is compared with the network the config describes, built on the ``meta`` device (no
memory); the data shape and classes must fit that network; schedule values must lie in their valid ranges. Each
failure is one DataError sentence naming the file, the key or tensor, and what is valid.
"""
from __future__ import annotations

import inspect
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from softdiff import nets
from softdiff.diffusion.process import ForwardProcess
from softdiff.diffusion.schedulers import DIFFUSION_PREDICTION_TYPES, is_flow_config
from softdiff.errors import DataError, first_line

CONFIG = "config.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
SCHEDULE = "scheduler_config.json"
DATA_INFO = "data_info.json"
MAX_JSON_BYTES = 8 << 20  # a schedule of 100,000 trained betas takes about 2.5 MB
MAX_JSON_DEPTH = 32       # softdiff's files nest at most 3 levels
MAX_TIMESTEPS = 100_000
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # any float width loads into a float parameter
SAFETENSORS_DTYPES = {torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                      torch.uint8: "U8", torch.bool: "BOOL"}
INFINITE_DEFAULTS = {"lambda_min_clipped": -math.inf}  # DPM-Solver's "no clipping", saved by diffusers
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")  # the "learned" ones need
# a net that outputs twice the channels


# ------------------------------------------------------------------------------------------------- JSON
def _depth(obj) -> int:
    depth, level = 0, [obj]
    while level:
        depth += 1
        level = [v for o in level if isinstance(o, (dict, list)) for v in (o.values() if isinstance(o, dict) else o)]
    return depth - 1


def _non_finite(obj, where: str = "") -> tuple[str, float] | None:
    """The key path and value of the first NaN / inf number inside ``obj`` (bar INFINITE_DEFAULTS)."""
    if isinstance(obj, float) and not math.isfinite(obj) and INFINITE_DEFAULTS.get(where) != obj:
        return where, obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        found = _non_finite(value, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip("."))
        if found:
            return found
    return None


def read_json_object(path: Path, what: str) -> dict:
    """The JSON object in ``path`` (``what`` it describes, for messages): at most MAX_JSON_BYTES, nested at
    most MAX_JSON_DEPTH levels, finite numbers only."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model folder '{path.parent}' has no {path.name} ({what}); pass RUN_DIR/model or "
                        "RUN_DIR/model_ema of a finished run.")
    with open(path, "rb") as f:
        raw = f.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise DataError(f"'{path}' is larger than {MAX_JSON_BYTES >> 20} MB; {what} takes a few kB: the file is "
                        "not one softdiff wrote.")
    too_deep = DataError(f"'{path}' nests more than {MAX_JSON_DEPTH} levels of lists or objects; {what} nests "
                         "at most 3: the file is not one softdiff wrote.")
    try:
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:  # nested deeper than the interpreter's stack
        raise too_deep from None
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"'{path}' is not valid JSON ({str(err).splitlines()[0]}); the model folder is damaged: "
                        "retrain, or rerun train.py with --resume latest to rewrite it.") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise too_deep
    if not isinstance(data, dict):
        raise DataError(f"'{path}' must hold a JSON object ({what}).")
    bad = _non_finite(data)
    if bad:
        raise DataError(f"'{path}' has {bad[0]}={bad[1]}; every number in {what} must be finite.")
    return data


# ------------------------------------------------------------------------------------------- the network
@dataclass
class NetSpec:
    """A checked network folder: the class, its constructor arguments and the weights file they fit."""

    folder: Path
    cls: type
    config: dict
    weights: Path


def _weights_header(weights: Path) -> dict[str, tuple[list[int], str]]:
    try:
        with safe_open(str(weights), "pt") as f:
            return {name: (list(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype()) for name in f.keys()}
    except Exception as err:  # an empty, truncated or foreign file
        reason = first_line(err)
        raise DataError(f"'{weights}' is not a readable safetensors file ({reason}); the model folder is damaged: "
                        "rerun train.py with --resume latest to rewrite it.") from None


def _init_config(config: dict, cls: type, where: Path) -> dict:
    """The constructor arguments in ``config``; unknown keys (a newer softdiff's) are named and left out."""
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(k for k in config if not k.startswith("_") and (k not in params or k == "self"))
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        warnings.warn(f"'{where}' has keys that {cls.__name__} does not take (ignored): {shown}.", stacklevel=2)
    return {k: v for k, v in config.items() if k in params and k != "self"}


def _skeleton(spec: NetSpec, max_tensors: int) -> torch.nn.Module:
    """The network on the meta device: its parameter names, shapes and dtypes without any memory. Building
    stops at the first tensor beyond ``max_tensors`` (far more than the weights file holds): a config asking
    for 10^8 layers is refused at once, not after minutes."""
    from torch.nn.modules import module

    count = 0

    def counted(*_):
        nonlocal count
        count += 1
        if count > max_tensors:
            raise ValueError(f"it has more than {max_tensors} tensors, far more than {WEIGHTS} holds")

    hooks = [module.register_module_parameter_registration_hook(counted),
             module.register_module_buffer_registration_hook(counted)]
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            return spec.cls(**spec.config)
    except Exception as err:  # wrong types or values in config.json
        first = first_line(err)
        raise DataError(f"model folder '{spec.folder}' could not be loaded: {CONFIG} does not describe a valid "
                        f"{spec.cls.__name__} ({first}).") from None
    finally:
        for hook in hooks:
            hook.remove()


def _fmt(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _check_weights_fit(spec: NetSpec) -> None:
    """Every tensor the network has, with its shape and a compatible dtype, and no other, in the weights file."""
    header = _weights_header(spec.weights)
    expected = {k: (list(v.shape), v.dtype) for k, v in _skeleton(spec, 2 * len(header) + 1000).state_dict().items()}
    lead, net = f"model folder '{spec.folder}' could not be loaded:", f"{CONFIG}'s {spec.cls.__name__}"
    missing = [k for k in expected if k not in header]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{lead} {WEIGHTS} has no tensor '{missing[0]}'{more}, which {net} needs; the weights "
                        "do not belong to this config.")
    extra = sorted(k for k in header if k not in expected)
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise DataError(f"{lead} {WEIGHTS} holds tensor '{extra[0]}'{more}, which {net} does not have; the weights "
                        "do not belong to this config.")
    for name, (shape, dtype) in expected.items():
        got_shape, got_dtype = header[name]
        if got_shape != shape:
            raise DataError(f"{lead} tensor '{name}' in {WEIGHTS} has shape {_fmt(got_shape)}, but {net} needs "
                            f"{_fmt(shape)}; the weights do not belong to this config.")
        valid = FLOAT_DTYPES if dtype.is_floating_point else (SAFETENSORS_DTYPES.get(dtype, str(dtype)),)
        if got_dtype not in valid:
            raise DataError(f"{lead} tensor '{name}' in {WEIGHTS} is {got_dtype}; {net} needs "
                            f"{'one of ' if len(valid) > 1 else ''}{', '.join(valid)}.")


def check_net_folder(path: Path) -> NetSpec:
    """A folder holding ``config.json`` and safetensors weights that fit the network it describes.

    Only safetensors weights are accepted: pickle files (``diffusion_pytorch_model.bin``) can run code when
    loaded, so a folder that holds only those is refused.
    """
    score_nets = nets.SCORE_NETS  # read at each check: nets registered after import count too
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"model folder '{path}' does not exist; pass RUN_DIR/model or RUN_DIR/model_ema.")
    config = read_json_object(path / CONFIG, "the model's config")
    cls = score_nets.get(config.get("_class_name"))
    if cls is None:
        raise DataError(f"'{path / CONFIG}' does not describe a softdiff score net "
                        f"(_class_name must be one of: {', '.join(score_nets)}).")
    weights = path / WEIGHTS
    if not weights.is_file():
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
        found = f" (it holds {', '.join(pickled)}: pickle files, which can run code and are never loaded)" \
            if pickled else ""
        raise DataError(f"model folder '{path}' has no {WEIGHTS}{found}; softdiff loads safetensors weights only.")
    spec = NetSpec(path, cls, _init_config(config, cls, path / CONFIG), weights)
    _check_weights_fit(spec)
    return spec


def load_net(spec: NetSpec) -> torch.nn.Module:
    """The network of a checked folder with its weights, in eval mode; DataError for NaN / inf weights."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(spec.weights))
    except Exception as err:  # the header was fine, the data is not (a file truncated after the check)
        reason = first_line(err)
        raise DataError(f"'{spec.weights}' is not a readable safetensors file ({reason}).") from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DataError(f"tensor '{name}' in '{spec.weights}' holds NaN or inf values; the weights are "
                            "broken (a diverged run): use another run or checkpoint.")
    with torch.random.fork_rng(devices=[]):  # the initial values are overwritten: leave the global RNG as it was
        net = spec.cls(**spec.config)
    net.load_state_dict(state, strict=True)
    return net.eval()


# ------------------------------------------------------------------------------------- the data and schedule
def _net_shape_ok(shape: list[int], spec: NetSpec) -> tuple[bool, str]:
    """Whether one example of ``shape`` fits the network, and the shape it takes (for messages)."""
    c = spec.config
    if "sample_size" in c:  # an image net (softdiff.nets.registry.IMAGE_ARGUMENTS); the others take `dim`
        want = [c.get("in_channels", 1), c.get("sample_size", 8), c.get("sample_size", 8)]
        return shape == want, _fmt(want)
    dim = c.get("dim", 2)
    return math.prod(shape) == dim, f"{dim} numbers in all"


def check_data_info(info: dict, path: Path, spec: NetSpec | None = None, names: dict[str, str] | None = None) -> None:
    """DataError unless ``info`` (read from ``path``) describes data that ``spec``'s network can draw.
    ``names`` renames keys in messages (a saved pipeline's sample_shape)."""
    name = lambda key: (names or {}).get(key, key)
    shape, rng, classes, kind = info.get("shape"), info.get("data_range"), info.get("num_classes"), info.get("kind")
    ok = (kind in ("image", "vector") and isinstance(info.get("name"), str)
          and isinstance(shape, list) and len(shape) == (3 if kind == "image" else 1)
          and all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 100_000 for s in shape)
          and isinstance(rng, list) and len(rng) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)
          and (classes is None or (isinstance(classes, int) and not isinstance(classes, bool) and classes > 0)))
    if not ok:
        raise DataError(f"'{path}' does not describe the data: it needs kind (image|vector), name, {name('shape')} "
                        "(3 positive sizes for images, 1 for vectors), data_range [low, high] and num_classes "
                        "(null or a positive integer).")
    if not (math.isfinite(rng[0]) and math.isfinite(rng[1]) and rng[0] < rng[1]):
        raise DataError(f"'{path}' has data_range={rng}; it must be two finite numbers [low, high] with low < high.")
    if spec is None:
        return
    fits, wanted = _net_shape_ok(shape, spec)
    if not fits:
        raise DataError(f"'{path}' has {name('shape')}={shape}, but the {spec.cls.__name__} in "
                        f"'{spec.folder / CONFIG}' draws {wanted}; the files do not belong together.")
    embeds = spec.config.get("num_class_embeds")
    if embeds and (classes is None or classes > embeds):
        raise DataError(f"'{path}' has num_classes={classes}, but the {spec.cls.__name__} in "
                        f"'{spec.folder / CONFIG}' is conditioned on {embeds} classes; num_classes must be 1 to "
                        f"{embeds}.")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_scheduler_values(config: dict, where: Path) -> None:
    """DataError unless the values of a diffusers scheduler config lie in their valid ranges: betas in (0, 1),
    a positive (flow) shift, num_train_timesteps from 1 to MAX_TIMESTEPS, a known timestep spacing and
    variance, no thresholding nor zero terminal SNR."""
    steps = config.get("num_train_timesteps", 1000)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_TIMESTEPS:
        raise DataError(f"'{where}' has num_train_timesteps={steps!r}; it must be an integer from 1 to "
                        f"{MAX_TIMESTEPS}.")
    betas = config.get("trained_betas")
    if betas is not None:
        if not (isinstance(betas, list) and len(betas) == steps):
            raise DataError(f"'{where}' has trained_betas that are not a list of num_train_timesteps={steps} "
                            "numbers.")
        bad = next((i for i, b in enumerate(betas) if not (_is_number(b) and 0 < b < 1)), None)
        if bad is not None:
            raise DataError(f"'{where}' has trained_betas[{bad}]={betas[bad]!r}; every beta must be in (0, 1).")
    else:
        for key in ("beta_start", "beta_end"):
            value = config.get(key)
            if value is not None and not (_is_number(value) and 0 < value < 1):
                raise DataError(f"'{where}' has {key}={value!r}; it must be a number in (0, 1).")
    for key in ("shift", "flow_shift"):
        value = config.get(key)
        if value is not None and not (_is_number(value) and value > 0):
            raise DataError(f"'{where}' has {key}={value!r}; it must be a positive number.")
    spacing = config.get("timestep_spacing")
    if spacing is not None and spacing not in TIMESTEP_SPACINGS:
        raise DataError(f"'{where}' has timestep_spacing={spacing!r}; choose one of: {', '.join(TIMESTEP_SPACINGS)}.")
    variance = config.get("variance_type")
    if variance is not None and variance not in VARIANCE_TYPES:
        raise DataError(f"'{where}' has variance_type={variance!r}; choose one of: {', '.join(VARIANCE_TYPES)}.")
    for key in ("thresholding", "rescale_betas_zero_snr"):  # clamp samples / make the last alpha 0
        if config.get(key, False) is not False:
            raise DataError(f"'{where}' has {key}={json.dumps(config[key])}; softdiff's schedules never set it: it "
                            "must be false.")
    offset = config.get("steps_offset", 0)
    if not (isinstance(offset, int) and not isinstance(offset, bool) and 0 <= offset < steps):
        raise DataError(f"'{where}' has steps_offset={offset!r}; it must be an integer from 0 to {steps - 1}.")


def check_schedule(schedule: dict, where: Path, spec: NetSpec | None = None) -> None:
    """DataError unless ``schedule`` (read from ``where``) is a valid training noise schedule (for ``spec``'s
    network, when given)."""
    if "num_train_timesteps" not in schedule:
        raise DataError(f"'{where}' has no num_train_timesteps; it must be an integer from 1 to {MAX_TIMESTEPS}.")
    check_scheduler_values(schedule, where)
    if not is_flow_config(schedule) and schedule.get("prediction_type") not in DIFFUSION_PREDICTION_TYPES:
        raise DataError(f"'{where}' has prediction_type={schedule.get('prediction_type')!r}; choose one of: "
                        f"{', '.join(DIFFUSION_PREDICTION_TYPES)}.")
    try:
        process = ForwardProcess(schedule)
        process.scheduler()
    except Exception as err:
        raise DataError(f"'{where}' is not a valid noise schedule "
                        f"({str(err).splitlines()[0] if str(err) else type(err).__name__}).") from None
    alphas = process.alphas_cumprod
    if alphas is not None and not bool((torch.isfinite(alphas) & (alphas > 0) & (alphas <= 1)).all()):
        raise DataError(f"'{where}' gives a noise schedule whose cumulative alphas leave (0, 1]; every one must be "
                        "in (0, 1].")
    steps = spec.config.get("num_train_timesteps") if spec is not None else None
    if steps is not None and steps != schedule["num_train_timesteps"]:
        raise DataError(f"'{where}' has num_train_timesteps={schedule['num_train_timesteps']}, but the "
                        f"{spec.cls.__name__} in '{spec.folder / CONFIG}' was built for {steps}; the files do not "
                        "belong together.")


# ------------------------------------------------------------------------------------------ a model folder
@dataclass
class ModelSpec:
    """A checked model folder: the network, the training noise schedule and the data description."""

    net: NetSpec
    schedule: dict
    info: dict


def check_model_folder(path: Path) -> ModelSpec:
    """Every file of a legacy model folder, checked against each other; nothing is built but meta tensors."""
    path = Path(path)
    net = check_net_folder(path)
    schedule = read_json_object(path / SCHEDULE, "the training noise schedule")
    check_schedule(schedule, path / SCHEDULE, net)
    info = read_json_object(path / DATA_INFO, "the data description")
    check_data_info(info, path / DATA_INFO, net)
    return ModelSpec(net, schedule, info)
