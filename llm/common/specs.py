"""The model registry (ModelSpec), where things live, and the training recipe.

Only plain values: scripts import this before parsing arguments, so `--help` answers at once.
"""

from dataclasses import dataclass, field, replace
from pathlib import Path

from llm.common.cli import SEED, TEMPERATURE, float_range, int_range
from llm.common.options import option

REPO_LLM_DIR = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO_LLM_DIR / "OhLoRA_fine_tuning.csv"
MODELS_DIR = REPO_LLM_DIR / "models"


def repo_relative(path: Path) -> str:
    """A path relative to the repository root when it is inside it: shorter, and the same on every checkout."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO_LLM_DIR.parent)) if path.is_relative_to(REPO_LLM_DIR.parent) else str(path)


@dataclass(frozen=True)
class Recipe:
    """Hyperparameters; the defaults are the original experiments'. A field made with `option` is a command-line
    option of the fine-tuning scripts too: one new hyperparameter is one line here (and its use in training.py)."""

    epochs: int = option(60, "training epochs", type=int_range(1, 100_000))
    lora_rank: int = option(64, "LoRA rank r", type=int_range(1, 4096))
    lora_alpha: int = option(16, "LoRA alpha (the update is scaled by alpha / r)", type=int_range(1, 100_000))
    lora_dropout: float = option(0.05, "LoRA dropout", type=float_range(0.0, 0.99, low_inclusive=True))
    learning_rate: float = option(2e-4, "learning rate", type=float_range(0.0, 1.0))
    batch_size: int = option(4, "train batch size per device", type=int_range(1, 4096))
    gradient_accumulation_steps: int = option(1, "batches summed into one optimizer step", type=int_range(1, 4096))
    eval_batch_size: int = 1
    logging_steps: int = 5
    temperature: float = option(0.6, "sampling temperature of the per-epoch valid-prompt test", type=TEMPERATURE)
    seed: int = option(42, "random seed", type=SEED)
    max_trials: int = option(5, "generations per prompt while the answer is empty", type=int_range(1, 100))
    checkpoints_kept: int = 2


def recipe_for(is_tiny: bool, **given) -> Recipe:
    """The recipe of a run: the original's, or the tiny stand-in's (TINY_RECIPE) without weights; `given`
    (options set on the command line or in a config) over either."""
    return replace(Recipe(**TINY_RECIPE) if is_tiny else Recipe(), **given)


# Generation, as in the original experiments: at most 80 tokens per sequence, prompt included; prompts go to
# generate() in batches of 16 (plain values here, so that scripts' --help needs no torch).
MAX_LENGTH = 80
DEFAULT_BATCH_SIZE = 16

# The tiny stand-in is random at start and LoRA only adapts its attention, so it needs a higher learning
# rate than the real models; the epoch count keeps a default run on 2 CPU cores under 5 minutes.
TINY_RECIPE = {"epochs": 30, "learning_rate": 3e-3}
TINY_CONTEXT = 256  # tokens: the stand-in's context, ample for the dataset's pairs
QUANTIZATIONS = ("none", "4bit", "8bit")  # how the base model's linear layers load (bitsandbytes)


@dataclass(frozen=True)
class ModelSpec:
    """Everything that differs between the two base models; the pipeline reads the rest from here."""

    name: str  # --model of the chat and benchmarks
    display_name: str
    shape: str  # --shape of the benchmarks: the real model at full size, randomly initialised
    architecture: str  # config.json model_type
    model_dir: Path
    adapter_dir: Path
    logs_dir: Path
    lora_targets: tuple[str, ...]
    full_config: dict  # the real model's shape, for measurements at full size without weights
    tiny_config: dict
    special_tokens: dict[str, str]
    training_script: str  # the script that makes this model's adapter, named in messages
    load_kwargs: dict = field(default_factory=dict)
    merged_dir: Path | None = None  # where llm/export_model.py writes the adapter merged into the base

    def config_class(self) -> type:
        """The transformers config class of the architecture (imported here: this module stays light)."""
        from transformers import Gemma2Config, GPTNeoXConfig

        return {"gpt_neox": GPTNeoXConfig, "gemma2": Gemma2Config}[self.architecture]


POLYGLOT = ModelSpec(
    name="polyglot",
    display_name="Polyglot-Ko 1.3B",
    shape="polyglot-ko-1.3b",
    architecture="gpt_neox",
    model_dir=MODELS_DIR / "polyglot_original",
    adapter_dir=MODELS_DIR / "polyglot_fine_tuned",
    logs_dir=REPO_LLM_DIR / "fine_tuning" / "fine_tuning_logs_polyglot",
    lora_targets=("query_key_value",),
    # EleutherAI/polyglot-ko-1.3b: 24 layers, d_model 2048, d_ff 8192, 16 heads of 128, rotary on 64 dims.
    full_config=dict(
        vocab_size=30080, hidden_size=2048, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=8192, max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        use_parallel_residual=True, tie_word_embeddings=False, bos_token_id=0, eos_token_id=2,
    ),
    tiny_config=dict(
        hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024,
        max_position_embeddings=TINY_CONTEXT,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        use_parallel_residual=True, tie_word_embeddings=False,
    ),
    special_tokens={"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "pad_token": "<|pad|>"},
    training_script="llm/run_fine_tuning_polyglot.py",
    merged_dir=MODELS_DIR / "polyglot_merged",
)

GEMMA = ModelSpec(
    name="gemma",
    display_name="Gemma-2 2B",
    shape="gemma-2-2b",
    architecture="gemma2",
    model_dir=MODELS_DIR / "original",
    adapter_dir=MODELS_DIR / "fine_tuned",
    logs_dir=REPO_LLM_DIR / "fine_tuning" / "fine_tuning_logs",
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    # google/gemma-2-2b: 26 layers, d_model 2304, d_ff 9216, 8 query / 4 key-value heads of 256.
    full_config=dict(
        vocab_size=256000, hidden_size=2304, num_hidden_layers=26, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, intermediate_size=9216, max_position_embeddings=8192,
        sliding_window=4096, query_pre_attn_scalar=256, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    ),
    tiny_config=dict(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        intermediate_size=512, max_position_embeddings=TINY_CONTEXT, sliding_window=TINY_CONTEXT,
        query_pre_attn_scalar=32,
    ),
    special_tokens={"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"},
    training_script="llm/run_fine_tuning.py",
    # Gemma-2's attention soft-capping is only exact in the eager implementation.
    load_kwargs={"attn_implementation": "eager"},
    merged_dir=MODELS_DIR / "merged",
)

# The one model registry: a third base model is one more ModelSpec here (and, if wanted, a 3-line run script).
SPECS = {spec.name: spec for spec in (POLYGLOT, GEMMA)}
SHAPES = {spec.shape: spec for spec in SPECS.values()}


def spec_for_architecture(architecture: str) -> ModelSpec | None:
    """The registered spec of a config.json model_type, or None for an architecture the project has not tested."""
    return next((spec for spec in SPECS.values() if spec.architecture == architecture), None)
