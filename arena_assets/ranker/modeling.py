"""Loading the backbone and the training fast paths: dtypes, attention, liger kernels, recompute, masters."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch.distributed.tensor import DTensor
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PreTrainedModel,
)

from arena_assets.ranker.config import TrainConfig
from arena_assets.ranker.head_rows import watches_head_rows
from arena_assets.ranker.lora_dropout import DropoutLinear, recompute_lora_dropout
from arena_assets.ranker.rebuilt_activations import rebuild_activations, rebuilds_activations

log = logging.getLogger(__name__)
RANDOM_INIT_SEED = 0  # random_init's weights (benchmarks)
LIGER_OPS = ("rope", "rms_norm", "swiglu")  # the kernels _apply_liger_kernel_to_instance is asked for below
# The fast-path log line's words for (fp8_matmuls, fp8_forward).
FROZEN_MATMULS = {
    (False, True): "in the compute dtype",
    (True, True): "in e4m3",
    (True, False): "in the compute dtype forward, e4m3 for the input gradient",
}


def resolve_dtype(precision: str, device: torch.device, *, training: bool = False) -> torch.dtype:
    """The compute dtype; `auto` is bf16 on a GPU with native bf16, fp32 on the CPU, and on a GPU without
    (a T4, where bf16 is only emulated) fp16 for inference and fp32 for training (fp16 training would need
    loss scaling)."""
    explicit = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision in explicit:
        return explicit[precision]
    if device.type != "cuda":
        return torch.float32
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float32 if training else torch.float16


def resolve_attention(requested: str, device: torch.device, *, packed: bool = False) -> str:
    """FlashAttention 2 when installed on a GPU under `auto`, otherwise PyTorch SDPA; for packed rows the
    packing attention (ranker/packing.py), which runs padded batches through SDPA."""
    if packed:
        if requested not in ("auto", "sdpa"):
            raise ValueError(
                f"pack_sequences brings its own attention (varlen flash; SDPA for padded batches); "
                f"attn_implementation {requested!r} does not combine with it: set it to auto"
            )
        from arena_assets.ranker.packing import attention_implementation

        return attention_implementation()
    if requested != "auto":
        return requested
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def liger_enabled(use_liger: str, device: torch.device) -> bool:
    """Whether liger-kernel's kernels apply: `on` requires them, `auto` uses them on CUDA if installed."""
    installed = importlib.util.find_spec("liger_kernel") is not None
    if use_liger == "on" and not installed:
        raise RuntimeError(
            "use_liger='on' but liger-kernel is not installed: pip install 'arena-assets[gpu]'"
        )
    return use_liger != "off" and installed and device.type == "cuda"


def fused_dropout_available(device: torch.device, rank: int) -> bool:
    """Whether LoRA dropout can run in Triton kernels: a CUDA device, Triton (which CUDA torch brings) and a
    rank the kernels hold."""
    if device.type != "cuda" or importlib.util.find_spec("triton") is None:
        return False
    from arena_assets.ranker import fused_dropout  # Triton: a GPU process's import

    return rank <= fused_dropout.MAX_RANK


def load_backbone(
    path: str,
    *,
    dtype: torch.dtype,
    device: torch.device,
    attn_implementation: str = "auto",
    use_liger: str = "auto",
    random_init: bool = False,
    device_map: str | None = None,
    packed: bool = False,
) -> PreTrainedModel:
    """A causal LM from a Hugging Face directory, on `device`, with the chosen kernels.

    `random_init` builds the model from the directory's config.json with random weights, initialised on
    `device` (benchmarks of a model shape whose weights are not at hand). `device_map="auto"` spreads its
    layers over every GPU present instead (a model larger than one GPU, for no-grad scoring). `packed` loads
    it with the attention that packed rows need (ranker/packing.py).
    """
    attention = resolve_attention(attn_implementation, device, packed=packed)
    if device_map is not None and random_init:
        return _random_init_spread(path, dtype=dtype, attn_implementation=attention)
    if device_map is not None:
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, attn_implementation=attention, device_map=device_map
        )
    if random_init:
        log.warning("random_init: %s built from its config with RANDOM weights (benchmark only)", path)
        config = AutoConfig.from_pretrained(path)
        with _seeded_random_init(), torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attention)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attention)
    if liger_enabled(use_liger, device):
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        # Only the elementwise kernels: the loss never touches full-vocabulary logits, so the fused
        # cross-entropy kernels have nothing to do here.
        _apply_liger_kernel_to_instance(
            model=model,
            rope=True,
            rms_norm=True,
            swiglu=True,
            cross_entropy=False,
            fused_linear_cross_entropy=False,
        )
        _resolve_liger_implementations()
        model.arena_liger = True
    return model.to(device)


def _resolve_liger_implementations() -> None:
    """Have liger-kernel pick its implementations now, outside any forward.

    liger-kernel 0.8.5 imports an op's implementations at its first call and logs each one that fails to
    import with the exception itself, whose traceback holds the frames of that call. Inside the first
    forward those frames hold the pass's activations, and through them its autograd graph, for as long as
    something keeps the log record (pytest's log capture does). The graph's AccumulateGrad nodes then
    outlive the pass, and a CUDA-graph capture that meets one made on the default stream fails
    ("operation would make the legacy stream depend on a capturing blocking stream")."""
    if importlib.util.find_spec("liger_kernel.backends") is None:
        return  # releases before the registry call their kernels directly
    from liger_kernel.backends import available_impls

    for op in LIGER_OPS:
        available_impls(op)


def _random_init_spread(path: str, *, dtype: torch.dtype, attn_implementation: str) -> PreTrainedModel:
    """A model of the directory's config.json with random weights, its layers spread over every GPU as
    `device_map="auto"` would place them (benchmarks of a shape too large for one GPU, with no weights)."""
    from accelerate import dispatch_model, infer_auto_device_map, init_empty_weights
    from accelerate.utils import get_balanced_memory, set_module_tensor_to_device

    log.warning("random_init: %s built from its config with RANDOM weights (benchmark only)", path)
    config = AutoConfig.from_pretrained(path)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    no_split = model._no_split_modules
    budget = get_balanced_memory(model, dtype=dtype, no_split_module_classes=no_split)
    placement = infer_auto_device_map(model, max_memory=budget, no_split_module_classes=no_split, dtype=dtype)
    with _seeded_random_init():
        for name, param in model.named_parameters():
            where = next(placement[p] for p in _prefixes(name) if p in placement)
            value = torch.empty(param.shape, dtype=dtype, device=where).normal_(0.0, config.initializer_range)
            set_module_tensor_to_device(model, name, where, value=value)
    for name, buffer in model.named_buffers():  # rotary frequencies: computed, not loaded
        if buffer.is_meta:
            raise RuntimeError(f"random_init with a device map left buffer {name} unset")
    return dispatch_model(model, device_map=placement)


@contextlib.contextmanager
def _seeded_random_init() -> Iterator[None]:
    """Random weights from a fixed seed, so that every process and every benchmark run builds the same
    model (their outputs compare); the caller's random state is restored after."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(RANDOM_INIT_SEED)
        yield


def _prefixes(name: str) -> list[str]:
    """`a.b.c` -> ["a.b.c", "a.b", "a", ""]: the device-map keys that may hold a parameter, deepest first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), -1, -1)]


def peak_memory_gb() -> float:
    """The highest peak of allocated memory on any GPU this process used (GiB); 0 without CUDA."""
    if not torch.cuda.is_available():
        return 0.0
    return max(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())) / 2**30


def apply_gradient_checkpointing(model: PreTrainedModel, share: float) -> int:
    """Recompute activations in the first `share` of decoder layers; returns how many layers recompute."""
    layers = decoder_layers(model)
    count = round(share * len(layers))
    if count == 0:
        return 0
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for layer in layers[count:]:
        layer.gradient_checkpointing = False
    return count


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(base.model.layers)


def fast_path_report(model: Any, config: Any, dtype: torch.dtype) -> str:
    """One log line saying which fast paths are on."""
    layers = decoder_layers(model)
    recompute = sum(bool(getattr(layer, "gradient_checkpointing", False)) for layer in layers)
    adapter_dtype = next(p.dtype for n, p in model.named_parameters() if "lora_" in n)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dropouts = [m for m in model.modules() if isinstance(m, DropoutLinear)]
    fused = any(m.fused for m in dropouts)
    dropout = "in lora_A's kernels" if fused else "recomputed" if dropouts else "kept"
    from arena_assets.ranker.lora_output import AddmmLoraLinear  # peft: a training process's import

    update_in_matmul = any(isinstance(m, AddmmLoraLinear) for m in model.modules())
    if fused and update_in_matmul:  # AddmmLoraLinear runs lora_A and the frozen layer as one autograd node
        dropout += ", one input gradient with the frozen projection's"
    rebuilt = any(rebuilds_activations(layer) and not getattr(layer, "gradient_checkpointing", False)
                  for layer in layers)  # fmt: skip
    return (
        f"fast paths: compute {str(dtype).removeprefix('torch.')}, adapters in "
        f"{str(adapter_dtype).removeprefix('torch.')}"
        f"{' with fp32 master weights' if adapter_dtype != torch.float32 else ''}, "
        f"recompute {recompute}/{len(layers)} layers, attention {base.config._attn_implementation}, "
        f"rows {'packed, swaps sharing their prefix' if config.pack_sequences else 'padded'}, "
        f"liger {'on' if getattr(base, 'arena_liger', False) else 'off'}, "
        f"LoRA dropout {dropout}, "
        f"LoRA update {'in the matmul' if update_in_matmul else 'added after it'}, "
        f"norm and SwiGLU outputs {'rebuilt in backward' if rebuilt else 'kept'}, "
        f"last layer {'at the read rows only' if watches_head_rows(base.model) else 'at all positions'}, "
        f"compiled layers {'on' if getattr(layers[0], '_compiled_call_impl', None) else 'off'}, "
        f"CUDA graphs {'on for rows of one length' if config.cuda_graphs else 'off'}, "
        f"frozen matmuls {FROZEN_MATMULS[config.fp8_matmuls, config.fp8_forward]}"
    )


class MasterWeights:
    """fp32 master copies of the trainable parameters, which the optimizer steps instead of them.

    The model computes with bf16 adapters; the optimizer steps the fp32 copies, which are copied back after
    each step, so small updates are not lost to bf16 rounding. Under FSDP the parameters are DTensors and
    each rank keeps masters of its own shard only (plain tensors, so the optimizer state and checkpoints
    are a rank's own); the gradient norm is then summed over the ranks.
    """

    def __init__(self, named_params: list[tuple[str, torch.nn.Parameter]]) -> None:
        self.model_params = [p for _, p in named_params]
        self.names = [n for n, _ in named_params]
        self.sharded = any(isinstance(p, DTensor) for p in self.model_params)
        self.masters = [
            torch.nn.Parameter(local_shard(p).detach().float().clone()) for p in self.model_params
        ]

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return list(zip(self.names, self.masters, strict=True))

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return iter(self.masters)

    def grads_to_master(self) -> None:
        """Move the model's gradients onto the masters, in fp32 (one batched copy, not one per tensor)."""
        pairs = [(m, p) for m, p in zip(self.masters, self.model_params, strict=True) if p.grad is not None]
        for master, _ in pairs:
            if master.grad is None:  # the optimizer's zero_grad(set_to_none) freed last step's
                master.grad = torch.empty_like(master)
        torch._foreach_copy_([m.grad for m, _ in pairs], [local_shard(p.grad) for _, p in pairs])
        for param in self.model_params:
            param.grad = None

    def master_to_model(self) -> None:
        """Copy the updated masters back into the model's parameters (one batched copy)."""
        with torch.no_grad():
            torch._foreach_copy_([local_shard(p) for p in self.model_params], self.masters)

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Scale the masters' gradients to a total norm of at most `max_norm`; returns the norm before, a
        tensor on the device (reading it waits for the GPU, so the trainer reads it only to log)."""
        grads = [m.grad for m in self.masters if m.grad is not None]
        total = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        if self.sharded:
            # Each rank holds a disjoint shard of every gradient: the squares add up over the ranks.
            squared = total.square()
            torch.distributed.all_reduce(squared)
            total = squared.sqrt()
        torch.nn.utils.clip_grads_with_norm_(self.masters, max_norm, total)
        return total

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: m.detach().clone() for n, m in zip(self.names, self.masters, strict=True)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, master in zip(self.names, self.masters, strict=True):
                master.copy_(state[name])
        self.master_to_model()


def local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of an FSDP parameter or gradient (a DTensor); a plain tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def build_model(config: TrainConfig, device: torch.device, *, finish: bool = True) -> tuple[Any, torch.dtype]:
    """The backbone with LoRA adapters on the configured projections (a peft PeftModel); with `finish`
    False, its frozen projections not yet in fp8 nor its layers compiled (`finish_model`)."""
    # Imported here: the predictor, which must run in a plain notebook image, never needs peft.
    from peft import LoraConfig, get_peft_model

    from arena_assets.ranker.lora_output import add_lora_in_matmul

    dtype = resolve_dtype(config.precision, device, training=True)
    model = load_backbone(
        config.backbone,
        dtype=dtype,
        device=device,
        attn_implementation=config.attn_implementation,
        use_liger=config.use_liger,
        random_init=config.random_init,
        packed=config.pack_sequences,
    )
    model.config.use_cache = False
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    # peft upcasts adapters to fp32 by default, so every LoRA matmul runs in fp32 with dtype copies around
    # it; with adapter_compute_dtype they stay in the compute dtype and MasterWeights keeps fp32 copies.
    peft_model = get_peft_model(model, lora, autocast_adapter_dtype=not config.adapter_compute_dtype)
    if config.recompute_lora_dropout:
        # The kernels take half-precision adapters in eager runs; compiled layers trace the eager dropout.
        half = config.adapter_compute_dtype and dtype in (torch.bfloat16, torch.float16)
        fused = config.fused_lora_dropout and half and not config.compile_layers
        recompute_lora_dropout(peft_model, fused=fused and fused_dropout_available(device, config.lora_r))
    if config.lora_update_in_matmul:
        add_lora_in_matmul(peft_model)
    apply_gradient_checkpointing(peft_model, config.gradient_checkpointing)
    if config.rebuild_activations and not config.compile_layers:  # measured and tested in eager layers only
        liger = getattr(peft_model.get_base_model(), "arena_liger", False)
        rebuild_activations(decoder_layers(peft_model), liger=liger)
    if finish:
        finish_model(config, peft_model, device)
    return peft_model, dtype


def finish_model(config: TrainConfig, peft_model: Any, device: torch.device) -> None:
    """The last changes to a built model, which a full-precision pass can no longer follow: the frozen
    projections in fp8 (`fp8_matmuls`), then the layers compiled (`compile_layers`)."""
    if config.fp8_matmuls:
        from arena_assets.ranker.fp8 import quantize_linears, require_fp8

        require_fp8(device)
        quantize_linears(decoder_layers(peft_model), backward=True, forward=config.fp8_forward)
    if config.compile_layers:
        # Regional compilation: the layers share their code, so dynamo compiles one graph (per input shape
        # class) and reuses it in every layer, where compiling the whole model would unroll 48 of them.
        for layer in decoder_layers(peft_model):
            layer.compile()


def build_optimizer(
    config: TrainConfig, params: list[tuple[str, torch.nn.Parameter]]
) -> torch.optim.Optimizer:
    """AdamW with separate learning rates for lora_A and lora_B weights."""
    groups = [
        {"params": [p for n, p in params if "lora_A" in n], "lr": config.lr_lora_a},
        {"params": [p for n, p in params if "lora_A" not in n], "lr": config.lr_lora_b},
    ]
    groups = [g for g in groups if g["params"]]
    kwargs = {"betas": config.adam_betas, "eps": config.adam_eps, "weight_decay": config.weight_decay}
    if config.optimizer == "adamw_8bit":
        import bitsandbytes as bnb  # optional GPU extra

        return bnb.optim.AdamW8bit(groups, **kwargs)
    # One fused kernel for the whole update on the GPU instead of a chain of foreach kernels; same math.
    on_gpu = all(p.is_cuda for group in groups for p in group["params"])
    return torch.optim.AdamW(groups, **kwargs, fused=on_gpu or None)
