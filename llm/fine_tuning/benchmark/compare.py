"""--compare: the plain recipe, then each speed option alone on the same machine; the table of their ratios and the
combination of the faster options that keep the recipe."""

import dataclasses

from llm.common.cli import UserError
from llm.common.device import Device
from llm.common.options import field_default, option_fields
from llm.common.specs import ModelSpec
from llm.fine_tuning.benchmark.flops import throughput
from llm.fine_tuning.benchmark.results import STATUS_OK, Outcome, Variant, loss_text
from llm.fine_tuning.speed import COMPILE_BACKEND, SpeedOptions

# A speed option joins the suggested combination when its epochs take at most this share of plain's: epochs of
# one run varied by about 15 % on an H200, so a smaller gain over 2 steady epochs is not told from noise.
FASTER = 0.90
WARM_UP = "warm-up"  # the variant name of the --warm-up-epochs rows in the CSV


@dataclasses.dataclass(frozen=True)
class DatasetShape:
    """What some variants' values come from: the per-epoch test's prompts, the eval loss's rows, the longest row."""

    valid_prompts: int
    valid_answers: int
    pad_length: int  # tokens every batch is padded to for fixed shapes: the longest row, rounded up to 8


def compare_variants(spec: ModelSpec, device: Device, shape: DatasetShape) -> list[Variant]:
    """Plain first, then each speed option alone, the likeliest gains first (a --time-budget skips the last);
    Liger last, since it patches transformers' modules for good."""
    own = spec.load_kwargs.get("attn_implementation", "sdpa")
    other = "eager" if own != "eager" else "sdpa"
    gemma = spec.architecture == "gemma2"
    plain = SpeedOptions()
    variants = [
        Variant("plain", plain, True, "the recipe as the fine-tuning scripts run it on a CPU"),
        Variant("test-one-batch", plain.with_changes(test_batch_size=shape.valid_prompts), True,
                f"the per-epoch test's {shape.valid_prompts} prompts in one generate() call"),
        Variant("eval-one-batch", plain.with_changes(eval_batch_size=shape.valid_answers), True,
                f"the eval loss's {shape.valid_answers} rows in one forward pass: the same training; the loss "
                f"weighs tokens, not rows"),
        Variant("quiet-steps", plain.with_changes(quiet_steps=True), True,
                "no host synchronisation per step (no per-step token accuracy and entropy)"),
        Variant("fused-optimizer", plain.with_changes(fused_optimizer=True), True, "AdamW in one fused kernel"),
        Variant("fixed-shapes", plain.with_changes(pad_to_length=shape.pad_length), True,
                f"every batch padded to {shape.pad_length} tokens"),
        Variant("compiled-model", plain.with_changes(compile_model=COMPILE_BACKEND), True,
                "the decoder layers through torch.compile in training and eval: the same recipe, but its dropout "
                "draws from another random stream, so the losses differ a little"),
        Variant("cuda-graphs", plain.with_changes(compile_model=COMPILE_BACKEND, compile_mode="reduce-overhead",
                                                  pad_to_length=shape.pad_length), True,
                f"compiled with CUDA graphs (reduce-overhead), every batch padded to {shape.pad_length} tokens"),
        Variant("padding-free", plain.with_changes(padding_free=True), True,
                "same batches without pad tokens; sequences kept apart by their position ids"),
        Variant("static-cache", plain.with_changes(static_cache=True), True, "the per-epoch test with a static KV cache"),
        Variant("compiled-test", plain.with_changes(static_cache=True, compile_test=True), True,
                "the per-epoch test with a static KV cache and torch.compile"),
        Variant(f"attn-{other}", plain.with_changes(attn=other), not gemma,
                "drops Gemma-2's attention soft-capping (sdpa has none)" if gemma else ""),
        Variant("flash-attention-2", plain.with_changes(attn="flash_attention_2"), True, ""),
        Variant("packing", plain.with_changes(packing=True), False, "fewer, longer steps: not the recipe's optimisation"),
    ]
    if device.kind == "cuda":
        variants += [Variant("float32", plain.with_changes(dtype="float32"), False, "fp32 weights, no bf16 autocast"),
                     Variant("float32-tf32", plain.with_changes(dtype="float32", tf32=True), False,
                             "fp32 weights, TF32 products"),
                     Variant("tf32", plain.with_changes(tf32=True), True, "TF32 for the float32 products left under bf16")]
    else:
        variants += [Variant("bfloat16", plain.with_changes(dtype="bfloat16"), False, "bf16 weights and autocast on the CPU"),
                     Variant("tf32", plain.with_changes(tf32=True), True, "")]
    return variants + [Variant("liger", plain.with_changes(liger=True), True, "Liger's RMSNorm, RoPE and GeGLU kernels")]


def unavailable_in_comparison(variant: Variant, spec: ModelSpec, device: Device) -> str | None:
    """Why a variant cannot (or, in a comparison on the CPU, need not) run here, or None."""
    if device.kind != "cuda" and variant.speed.compile_model:
        return ("compiling is for the GPU here: on this CPU it costs more than the whole comparison (about 25 s "
                "for the tiny stand-in); --compile-model alone runs it")
    return variant.speed.unavailable(spec, device)


def pick_variants(all_variants: list[Variant], names: str | None) -> list[Variant]:
    if names is None:
        return all_variants
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = {variant.name: variant for variant in all_variants}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise UserError(f"--variants: unknown {', '.join(unknown)}; the variants here are {', '.join(known)}")
    return [known["plain"]] + [known[name] for name in wanted if name != "plain"]


def combined(outcomes: list[Outcome]) -> tuple[SpeedOptions, list[str]]:
    """The options that each took at most FASTER of plain's epoch time and keep the recipe, together."""
    plain = outcomes[0]
    chosen = [outcome.variant for outcome in outcomes[1:]
              if outcome.status == STATUS_OK and outcome.variant.same_recipe and plain.status == STATUS_OK
              and outcome.steady_epoch_s <= FASTER * plain.steady_epoch_s]
    values: dict[str, object] = {}
    for variant in chosen:
        for field in option_fields(SpeedOptions):
            value = getattr(variant.speed, field.name)
            if value != field_default(field):
                values[field.name] = value
    return SpeedOptions(**values), [variant.name for variant in chosen]


def _row(outcome: Outcome, plain: Outcome, peak_tflops: float | None) -> str:
    variant = outcome.variant
    flags, keeps = variant.speed.describe(), "yes" if variant.same_recipe else "no"
    if outcome.status != STATUS_OK:
        return f"| {variant.name} | `{flags}` | {outcome.status} | | | | | | | | | | {keeps} |"
    later = outcome.rows[1:] or outcome.rows

    def mean(name: str) -> float:
        return sum(getattr(row, name) for row in later) / len(later)

    train_s = mean("train_s")
    speed = throughput(later[0].tokens, train_s, outcome.flops_per_token, peak_tflops)
    ratio = (f"{outcome.steady_epoch_s / plain.steady_epoch_s:.2f}x"
             if plain.status == STATUS_OK and plain.steady_epoch_s else "")
    peaks = [getattr(row, name) for row in outcome.rows for name in ("peak_allocated_mb", "peak_rss_mb")
             if getattr(row, name) is not None]
    rate = f"{speed.tokens_per_s:,.0f}" if speed.tokens_per_s else "-"
    mfu = f"{speed.mfu:.1%}" if speed.mfu else "-"
    return (f"| {variant.name} | `{flags}` | ok | {outcome.steady_epoch_s:.2f} | {ratio} | {train_s:.2f} | "
            f"{mean('eval_s'):.2f} | {mean('test_s'):.2f} | {rate} | {mfu} | {max(peaks):,.0f} | "
            f"{loss_text(outcome.rows[-1].eval_loss) or '-'} | {keeps} |")


def comparison_table(outcomes: list[Outcome], peak_tflops: float | None) -> str:
    lines = ["| variant | flags | status | s/epoch | vs plain | train s | eval s | test s | tokens/s | MFU | "
             "peak MB | eval loss | keeps the recipe |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    return "\n".join(lines + [_row(outcome, outcomes[0], peak_tflops) for outcome in outcomes])
