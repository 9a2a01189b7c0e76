"""What a merge is asked to do: the method, its models and parameters, read from the command
line's words or from a mergekit YAML file, with mergekit's per-layer gradients and filters."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import MergeRefused

METHODS = ("linear", "slerp", "ties", "dare", "passthrough", "moe")
DTYPES = ("f16", "bf16", "f32")
MAX_EXPERTS = 4
_MERGEKIT_DTYPES = {"float16": "f16", "fp16": "f16", "bfloat16": "bf16", "bf16": "bf16",
                    "float32": "f32", "fp32": "f32", "f16": "f16", "f32": "f32"}

#: GGUF tensor parts and the Hugging Face names mergekit filters are written against
_HF_ALIASES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj", "token_embd": "model.embed_tokens",
    "output_norm": "model.norm", "output": "lm_head",
}


#: a parameter: a number, a gradient list, or mergekit's [(filter, value), ...] (None: any)
Value = float | tuple[float, ...]
Setting = tuple[tuple[str | None, Value], ...]


def constant(value: Value) -> Setting:
    return ((None, value),)


@dataclass(frozen=True)
class LayerSlice:
    """Layers ``start`` to ``end - 1`` of model number ``model`` (0-based), stacked as they
    are (pass-through); ``end`` None: to its last layer."""

    model: int
    start: int
    end: int | None


@dataclass(frozen=True)
class Expert:
    """The prompts that should route tokens to one MoE expert."""

    positive: tuple[str, ...]
    negative: tuple[str, ...] = ()


@dataclass
class MergeSpec:
    method: str
    models: list[str]  #: model references, in order (SLERP: t=0 is the first)
    base: str | None = None  #: TIES/DARE task vectors are taken against it; MoE: shared parts
    t: Setting = constant(0.5)
    weights: list[float] | None = None
    density: float = 1.0  #: TIES: the share of each task vector kept
    drop: float = 0.0  #: DARE: the share dropped at random (the rest rescaled)
    consensus: bool = False  #: elect a sign per weight (TIES; DARE as mergekit's dare_ties)
    seed: int = 0
    slices: list[LayerSlice] = field(default_factory=list)
    experts: list[Expert] = field(default_factory=list)
    experts_used: int = 2
    gate_mode: str = "cheap_embed"
    dtype: str = "f16"

    def parameters(self) -> dict[str, Any]:
        """The parameters that shaped the result, as recorded in its metadata."""
        out: dict[str, Any] = {"dtype": self.dtype}
        if self.method in ("linear", "slerp"):
            out["t"] = [[f, list(v) if isinstance(v, tuple) else v] for f, v in self.t]
        if self.weights is not None:
            out["weights"] = self.weights
        if self.method in ("ties", "dare"):
            out.update(base=self.base, density=self.density, drop=self.drop,
                       consensus=self.consensus, seed=self.seed)
        if self.method == "passthrough":
            out["layers"] = [[s.model, s.start, s.end] for s in self.slices]
        if self.method == "moe":
            out.update(base=self.base, experts_used=self.experts_used, gate_mode=self.gate_mode,
                       experts=[{"positive": list(e.positive), "negative": list(e.negative)}
                                for e in self.experts])
        return out

    def check(self) -> None:
        """Refuse parameters out of range before any model is opened."""
        if self.method not in METHODS:
            raise MergeRefused(f"unknown merge method '{self.method}'",
                               hint=f"Use one of: {', '.join(METHODS)}.")
        if self.dtype not in DTYPES:
            raise MergeRefused(f"unknown output type '{self.dtype}'; use f16, bf16 or f32")
        n = len(self.models)
        need = {"slerp": (2, 2), "passthrough": (1, 99), "moe": (2, MAX_EXPERTS),
                "linear": (1, 99)}.get(
            self.method, (1 if self.base else 2, 99))
        if not need[0] <= n <= need[1]:
            many = f"{need[0]}" if need[0] == need[1] else f"{need[0]} to {need[1]}"
            raise MergeRefused(f"{self.method} takes {many} models, got {n}")
        for _f, v in self.t:
            for x in v if isinstance(v, tuple) else (v,):
                if not 0 <= x <= 1:
                    raise MergeRefused(f"t must lie between 0 and 1, got {x:g}")
        if not 0 < self.density <= 1:
            raise MergeRefused(f"density must lie in (0, 1], got {self.density:g}")
        if not 0 <= self.drop < 1:
            raise MergeRefused(f"drop must lie in [0, 1), got {self.drop:g}")
        if self.weights is not None and len(self.weights) != n:
            raise MergeRefused(f"{len(self.weights)} weights given for {n} models")
        if self.method == "linear" and n != 2 and self.weights is None and _is_set(self.t):
            raise MergeRefused("--t weighs exactly two models; give two models")
        if self.base and self.method not in ("ties", "dare", "moe"):
            raise MergeRefused(f"{self.method} takes no base model",
                               hint="--base is for TIES, DARE and MoE.")
        if self.method in ("ties", "dare") and not self.base:
            raise MergeRefused(f"{self.method.upper()} needs a base model (--base)",
                               hint="Name the model the others were fine-tuned from.")
        if self.method == "passthrough":
            if not self.slices:
                raise MergeRefused("pass-through needs layer ranges (--layers)",
                                   hint="For example --layers 1:0-24,2:8-24.")
            for s in self.slices:
                if not 0 <= s.model < n:
                    raise MergeRefused(f"--layers names model {s.model + 1}, but {n} were given")
        if self.method == "moe":
            if len(self.experts) != n:
                raise MergeRefused(
                    f"MoE needs the prompts of each of its {n} experts (--experts FILE); "
                    f"got {len(self.experts)}")
            if self.gate_mode not in ("cheap_embed", "random"):
                raise MergeRefused(f"gate mode '{self.gate_mode}' is not supported",
                                   hint="Use cheap_embed (or random).")
            if not 1 <= self.experts_used <= n:
                raise MergeRefused(f"experts per token must be 1 to {n}, "
                                   f"got {self.experts_used}")


def _is_set(t: Setting) -> bool:
    return t != constant(0.5)


def hf_alias(name: str) -> str:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight`` (for filters)."""
    m = re.fullmatch(r"blk\.(\d+)\.(\w+?)\.(weight|bias)", name)
    if m:
        return f"model.layers.{m[1]}.{_HF_ALIASES.get(m[2], m[2])}.{m[3]}"
    stem, _, kind = name.rpartition(".")
    return f"{_HF_ALIASES.get(stem, stem)}.{kind}"


def evaluate(setting: Setting, tensor: str, position: float) -> float:
    """mergekit's rule: the first (filter, value) whose filter appears in the tensor's name
    (GGUF or Hugging Face spelling) wins; a list is a gradient over ``position`` in [0, 1]."""
    names = (tensor, hf_alias(tensor))
    for flt, value in setting:
        if flt is None or flt == "*" or any(flt in n for n in names):
            if not isinstance(value, tuple):
                return float(value)
            if len(value) == 1:
                return float(value[0])
            scaled = position * (len(value) - 1)
            i0 = int(scaled)
            i1 = min(len(value) - 1, i0 + 1)
            frac = scaled - i0
            return float((1 - frac) * value[i0] + frac * value[i1])
    raise MergeRefused(f"no value of t applies to tensor {tensor}",
                       hint="Add a value without a filter as the last entry.")


def parse_t(text: str) -> Setting:
    """``0.3`` or a gradient list ``0,0.5,1`` / ``[0, 0.5, 1]``."""
    parts = [p for p in re.split(r"[\s,]+", text.strip().strip("[]")) if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise MergeRefused(f"--t takes a number or a list of numbers, not '{text}'") from None
    if not values:
        raise MergeRefused("--t is empty")
    return constant(values[0] if len(values) == 1 else values)


def parse_layers(text: str) -> list[LayerSlice]:
    """``1:0-24,2:8-24``: layers [0, 24) of the first model, then [8, 24) of the second
    (models counted from 1, ranges end-exclusive like mergekit's layer_range; ``2:8-`` runs
    to the last layer)."""
    out = []
    for item in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d+):(\d+)-(\d*)", item)
        if not m or int(m[1]) < 1:
            raise MergeRefused(f"cannot read layer range '{item}'",
                               hint="Write MODEL:START-END, e.g. 1:0-24,2:8-24 (models "
                                    "counted from 1, END excluded).")
        start, end = int(m[2]), int(m[3]) if m[3] else None
        if end is not None and end <= start:
            raise MergeRefused(f"layer range '{item}' is empty")
        out.append(LayerSlice(int(m[1]) - 1, start, end))
    return out


def _load_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MergeRefused(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MergeRefused(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise MergeRefused(f"{path.name} is not valid YAML: {exc}".splitlines()[0]) from None


def _prompts(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(p, str) for p in value):
        return tuple(value)
    raise MergeRefused(f"{where}: prompts must be a text or a list of texts")


def _expert(item: Any, where: str) -> tuple[Expert, str | None]:
    if isinstance(item, dict):
        expert = Expert(_prompts(item.get("positive_prompts"), where),
                        _prompts(item.get("negative_prompts"), where))
        source = item.get("source_model")
        model = str(source) if source is not None else None
    else:
        expert, model = Expert(_prompts(item, where)), None
    if not expert.positive:
        raise MergeRefused(f"{where}: an expert without positive prompts cannot be routed to")
    return expert, model


def read_experts(path: str | Path) -> tuple[list[Expert], list[str | None]]:
    """The experts file (YAML or JSON): a list with one entry per model, each a list of
    positive prompts or {positive_prompts, negative_prompts}; or mergekit's MoE file with
    its ``experts:`` list. Returns the experts and the source model each names (or None)."""
    p = Path(path)
    data = _load_yaml(p)
    if isinstance(data, dict):
        data = data.get("experts")
    if not isinstance(data, list) or not data:
        raise MergeRefused(f"{p.name} holds no list of experts",
                           hint="Write one entry per model: positive_prompts: [...].")
    pairs = [_expert(item, f"{p.name}, expert {i + 1}") for i, item in enumerate(data)]
    return [e for e, _m in pairs], [m for _e, m in pairs]


def _setting(value: Any, name: str) -> Setting:
    if isinstance(value, int | float):
        return constant(float(value))
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return constant(tuple(float(v) for v in value))
    if isinstance(value, list) and all(isinstance(v, dict) and "value" in v for v in value):
        out = []
        for entry in value:
            inner = _setting(entry["value"], name)[0][1]
            out.append((None if entry.get("filter") is None else str(entry["filter"]), inner))
        return tuple(out)
    raise MergeRefused(f"cannot read parameter '{name}': {json.dumps(value)[:80]}")


def _scalar(params: dict[str, Any], key: str, default: float) -> float:
    value = params.get(key, default)
    if not isinstance(value, int | float):
        raise MergeRefused(f"parameter '{key}' must be one number here, got {value!r}")
    return float(value)


def _ref(value: Any, folder: Path) -> str:
    if isinstance(value, dict):  # mergekit's {model: ..., lora: ...} form
        value = value.get("model") or value.get("path")
    text = str(value or "").strip()
    if not text:
        raise MergeRefused("a model in the config has no name")
    local = folder / text
    return str(local) if not Path(text).is_absolute() and local.is_file() else text


def read_mergekit_config(path: str | Path) -> MergeSpec:
    """A mergekit YAML file as a MergeSpec. Model names are Corral model references (a
    path relative to the file's folder works too)."""
    p = Path(path)
    cfg = _load_yaml(p)
    if not isinstance(cfg, dict):
        raise MergeRefused(f"{p.name} is not a mergekit configuration")
    folder = p.parent
    params: dict[str, Any] = dict(cfg.get("parameters") or {})
    dtype = _MERGEKIT_DTYPES.get(str(cfg.get("out_dtype") or cfg.get("dtype") or "float16"))
    if dtype is None:
        raise MergeRefused(f"{p.name}: dtype must be float16, bfloat16 or float32")
    base = _ref(cfg["base_model"], folder) if cfg.get("base_model") else None
    if "experts" in cfg:
        experts, sources = read_experts(p)
        sourced = [_ref(s, folder) if s else "" for s in sources]
        if not all(sourced):
            raise MergeRefused(f"{p.name}: every expert needs a source_model")
        return MergeSpec("moe", sourced, base=base or sourced[0], experts=experts,
                         experts_used=int(cfg.get("experts_per_token", 2)),
                         gate_mode=str(cfg.get("gate_mode", "cheap_embed")), dtype=dtype)
    method = str(cfg.get("merge_method", "")).lower()
    aliases = {"dare_linear": ("dare", False), "dare_ties": ("dare", True),
               "ties": ("ties", True), "linear": ("linear", False),
               "slerp": ("slerp", False), "passthrough": ("passthrough", False)}
    if method not in aliases:
        raise MergeRefused(f"{p.name}: merge method '{method or '(none)'}' is not supported",
                           hint="Use linear, slerp, ties, dare_linear, dare_ties or passthrough.")
    name, consensus = aliases[method]
    models: list[str] = []
    weights: list[float] = []
    slices: list[LayerSlice] = []
    for entry in cfg.get("models") or []:
        models.append(_ref(entry.get("model") if isinstance(entry, dict) else entry, folder))
        weights.append(_scalar((entry.get("parameters") or {}) if isinstance(entry, dict)
                               else {}, "weight", 1.0))
    for sl in cfg.get("slices") or []:
        for src in sl.get("sources") or []:
            ref = _ref(src.get("model"), folder)
            if ref not in models:
                models.append(ref)
                weights.append(_scalar(src.get("parameters") or {}, "weight", 1.0))
            lr = src.get("layer_range") or [0, None]
            slices.append(LayerSlice(models.index(ref), int(lr[0]),
                                     None if lr[1] is None else int(lr[1])))
    if name == "slerp":
        if base is None or base not in models:
            raise MergeRefused(f"{p.name}: SLERP needs base_model to be one of its two models")
        models.remove(base)
        models.insert(0, base)  # t = 0 is the base model
    if name in ("ties", "dare") and base in models:
        i = models.index(base)  # the base has no task vector of its own
        del models[i], weights[i]
    spec = MergeSpec(name, models, base=base if name in ("ties", "dare") else None,
                     consensus=consensus, dtype=dtype,
                     density=_scalar(params, "density", 0.5 if name == "ties" else 1.0),
                     seed=int(params.get("seed", cfg.get("seed", 0)) or 0),
                     slices=slices if name == "passthrough" else [])
    if name == "dare":
        spec.drop, spec.density = 1.0 - spec.density, 1.0
    if "t" in params:
        spec.t = _setting(params["t"], "t")
    if name in ("linear", "ties", "dare") and any(w != 1.0 for w in weights):
        spec.weights = weights
    return spec
