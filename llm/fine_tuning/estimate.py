"""Before a run spends an hour: peak GPU memory and time of the recipe on a real model, estimated from its parts.

Memory: the weights (16-bit, 32-bit, or the linear layers in 4 or 8 bits), LoRA's weights with their gradients and
Adam's state, the activations a training step keeps for its backward pass (at the batch's padded length), the loss's
logits, and the per-epoch test's KV cache. Time: the training steps, the eval loss and the test per epoch, bound by
kernel launches on a recent GPU (measured on an H200) unless the card's arithmetic is slower. The estimate is checked
against every figure measured on a GPU (ESTIMATE_CHECKS, docs/gpu.md).

Light (no torch): `--dry-run` prints it in a second or two.
"""

import math
from dataclasses import dataclass

from llm.common.specs import MAX_LENGTH, ModelSpec, Recipe

MIB = 2**20
CUDA_CONTEXT_MIB = 600  # the CUDA context and the driver's share, outside PyTorch's allocator
RESERVED_OVER_ALLOCATED = 1.12  # the allocator's cache over what tensors hold (measured on the H200: 3,710 / 3,304)
# 4-bit NF4: half a byte per weight, plus double-quantised absmax: one byte per block of 64 and a float per 256 blocks.
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)


@dataclass(frozen=True)
class Shape:
    """A model's dimensions and parameter counts, from the spec's full_config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_dim: int  # keys (and values) per token per layer
    vocab: int
    layer_linear: int  # matrix weights in one layer (what 4 or 8 bits quantise)
    layer_other: int  # biases and norms in one layer
    embedding: int
    lm_head: int  # 0 when tied to the embedding
    final_norm: int
    saved_per_token: int  # activation elements one layer keeps per token for the backward pass (LoRA training)
    eager_attention: bool  # the attention probabilities are kept too

    @property
    def parameters(self) -> int:
        return self.layers * (self.layer_linear + self.layer_other) + self.embedding + self.lm_head + self.final_norm


def shape_of(spec: ModelSpec) -> Shape:
    c = spec.full_config
    h, ff, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    if spec.architecture == "gpt_neox":
        # query_key_value 3h x h, dense h x h, h -> ff, ff -> h, each with a bias; two LayerNorms (weight, bias).
        return Shape(layers, h, ff, c["num_attention_heads"], h, vocab, 4 * h * h + 2 * h * ff, 9 * h + ff,
                     vocab * h, vocab * h, 2 * h, 6 * h + ff, eager_attention=False)
    # Gemma-2: q, k, v, o and the gated MLP, no biases; four RMSNorms per layer; the LM head tied to the embedding.
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    linear = h * q + 2 * h * kv + q * h + 3 * h * ff
    return Shape(layers, h, ff, c["num_attention_heads"], kv, vocab, linear, 4 * h, vocab * h, 0, h,
                 4 * h + q + 2 * kv + q + 3 * ff, eager_attention=True)


def lora_parameters(spec: ModelSpec, rank: int) -> int:
    """LoRA's A and B on every target module: rank x (inputs + outputs) each."""
    c = spec.full_config
    h, ff = c["hidden_size"], c["intermediate_size"]
    if spec.architecture == "gpt_neox":
        sizes = {"query_key_value": (h, 3 * h)}
    else:
        q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
        sizes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "gate_proj": (h, ff),
                 "up_proj": (h, ff), "down_proj": (ff, h)}
    return c["num_hidden_layers"] * sum(rank * (inputs + outputs) for inputs, outputs in
                                        (sizes[name] for name in spec.lora_targets))


@dataclass(frozen=True)
class Plan:
    """What is estimated: a model, how its weights are held, and the run's batches."""

    spec: ModelSpec
    method: str  # "bf16", "fp32", "4bit", "8bit"
    batch: int = Recipe.batch_size
    rank: int = Recipe.lora_rank
    row_tokens: int = 128  # the longest batch's padded length
    mean_row_tokens: float = 48.0
    train_rows: int = 360
    eval_rows: int = 60
    test_prompts: int = 60
    test_batch: int = 60
    epochs: int = Recipe.epochs
    gradient_checkpointing: bool = False

    @property
    def compute_bytes(self) -> int:
        return 4 if self.method == "fp32" else 2  # the quantised methods compute in bf16


@dataclass(frozen=True)
class Memory:
    weights: float  # MiB, as every figure here
    lora_state: float
    activations: float
    logits: float
    test_cache: float

    @property
    def training(self) -> float:
        return self.weights + self.lora_state + self.activations + self.logits

    @property
    def test(self) -> float:
        return self.weights + self.lora_state * 12 / 16 + self.test_cache  # the gradients are freed by then

    @property
    def peak(self) -> float:
        return max(self.training, self.test)

    @property
    def card_gib(self) -> float:
        """What the run takes of a card: the peak with PyTorch's cache, and the CUDA context."""
        return (self.peak * RESERVED_OVER_ALLOCATED + CUDA_CONTEXT_MIB) / 1024

    def fits(self, card_gib: float) -> bool:
        return self.card_gib <= card_gib


def memory(plan: Plan) -> Memory:
    shape = shape_of(plan.spec)
    rest = shape.parameters - shape.layers * shape.layer_linear  # embeddings, LM head, biases, norms
    per_weight = {"bf16": 2, "fp32": 4, "4bit": NF4_BYTES, "8bit": 1}[plan.method]
    weights = shape.layers * shape.layer_linear * per_weight + rest * (4 if plan.method == "fp32" else 2)
    # LoRA in float32 (peft upcasts it over a 16-bit base): weight, gradient and Adam's two moments. Over a
    # quantised base TRL keeps it in bf16, as QLoRA does: half of that.
    lora = lora_parameters(plan.spec, plan.rank) * (8 if plan.method in ("4bit", "8bit") else 16)
    tokens = plan.batch * plan.row_tokens
    per_layer = shape.saved_per_token * tokens * plan.compute_bytes
    if shape.eager_attention:  # Gemma-2's soft-capped attention keeps its probabilities (and their float32 input)
        per_layer += plan.batch * shape.heads * plan.row_tokens ** 2 * (plan.compute_bytes + 4)
    if plan.gradient_checkpointing:  # each layer's input is kept, one layer's activations at a time
        activations = shape.layers * tokens * shape.hidden * plan.compute_bytes + per_layer
    else:
        activations = shape.layers * per_layer
    logits = tokens * shape.vocab * 4  # the loss works on float32 logits
    cache = 2 * shape.layers * plan.test_batch * MAX_LENGTH * shape.kv_dim * plan.compute_bytes
    cache += plan.test_batch * shape.vocab * 4  # one step's logits
    return Memory(weights / MIB, lora / MIB, activations / MIB, logits / MIB, cache / MIB)


# Measured on an H200 (bf16, the plain recipe, random weights at Polyglot-Ko 1.3B's full shape, batch 4):
# 6.26 s for an epoch's 90 steps, 1.26 s for the eval loss on 60 rows, 0.50 s for the test of 60 prompts in one
# batch (llm/fine_tuning/examples/gpu_2611261056/full.csv, epoch 2). At ~1 % of the card's arithmetic, these are
# the time of launching kernels and Python: a floor that a faster GPU does not lower.
H200_STEP_S, H200_EVAL_ROW_S, H200_TEST_S = 6.26 / 90, 1.26 / 60, 0.50
# Kernel launches per layer, which the floor scales with: the base layer's and LoRA's (about 6 per adapted module).
LAUNCHES = {"gpt_neox": 20, "gemma2": 30}
LORA_LAUNCHES = 6
QUANTISED_SLOWER = {"4bit": 1.3, "8bit": 2.0}  # dequantising each linear layer; an assumption until measured
EFFICIENCY = 0.4  # the share of a card's peak a compute-bound step reaches


def _launch_scale(spec: ModelSpec) -> float:
    per_layer = LAUNCHES[spec.architecture] + LORA_LAUNCHES * len(spec.lora_targets)
    reference = LAUNCHES["gpt_neox"] + LORA_LAUNCHES  # Polyglot-Ko with LoRA on query_key_value, as measured
    return spec.full_config["num_hidden_layers"] * per_layer / (24 * reference)


def training_flops_per_token(spec: ModelSpec, rank: int) -> int:
    """6 per trainable and 4 per frozen matrix weight (docs/gpu.md: counting FLOPs)."""
    shape = shape_of(spec)
    frozen = shape.layers * shape.layer_linear + (shape.lm_head or shape.embedding)
    return 6 * lora_parameters(spec, rank) + 4 * frozen


@dataclass(frozen=True)
class Time:
    floor_s: float  # the whole run where kernel launches bind, as on the H200
    compute_tflop: float  # the arithmetic of the whole run

    def on(self, peak_tflops: float | None) -> float:
        """Seconds on a card of this dense bf16 peak (None: where launches bind)."""
        return self.floor_s if not peak_tflops else max(self.floor_s, self.compute_tflop / (peak_tflops * EFFICIENCY))


def time(plan: Plan) -> Time:
    scale = _launch_scale(plan.spec) * QUANTISED_SLOWER.get(plan.method, 1.0)
    steps = math.ceil(plan.train_rows / plan.batch)
    epoch = steps * H200_STEP_S * scale + plan.eval_rows * H200_EVAL_ROW_S * scale + H200_TEST_S * math.ceil(
        plan.test_prompts / plan.test_batch) * scale
    if plan.gradient_checkpointing:
        epoch *= 4 / 3  # each layer's forward runs twice
    tokens = plan.train_rows * plan.mean_row_tokens
    flops = plan.epochs * tokens * training_flops_per_token(plan.spec, plan.rank)
    return Time(plan.epochs * epoch, flops / 1e12)
