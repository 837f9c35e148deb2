"""The speed options (llm/fine_tuning/speed.py), declared once: every option's flag gives it back, what it changes
in the trainer, what cannot run here and which combinations contradict each other."""

import dataclasses

import pytest

from llm.common.cli import ArgumentParser, UserError
from llm.common.device import Device
from llm.common.options import given, option_fields
from llm.common.specs import GEMMA, POLYGLOT
from llm.fine_tuning.speed import GPU_DEFAULTS, SpeedOptions, add_speed_options, defaults_for

CPU = Device("cpu", "x86_64", None, False, None)
AMPERE = Device("cuda", "NVIDIA A10", (8, 6), True, 24.0)
TURING = Device("cuda", "Tesla T4", (7, 5), False, 16.0)
CHANGED = {"test_batch_size": 60, "eval_batch_size": 8, "quiet_steps": True, "fused_optimizer": True,
           "pad_to_length": 128, "compile_model": "aot_eager", "compile_mode": "reduce-overhead",
           "padding_free": True, "static_cache": True, "compile_test": True, "attn": "eager", "packing": False,
           "packing_length": 512, "dtype": "float32", "tf32": True, "liger": True}


def parse(flags: list[str]) -> SpeedOptions:
    parser = ArgumentParser()
    add_speed_options(parser)
    return SpeedOptions(**given(SpeedOptions, parser.parse_args(flags)))


def test_every_option_has_a_value_away_from_its_default_here():
    assert {field.name for field in option_fields(SpeedOptions)} == set(CHANGED)


def test_the_flags_of_any_options_give_the_same_options_back():
    everything = SpeedOptions(**CHANGED)
    assert parse(everything.flags()) == everything
    for name, value in CHANGED.items():
        one = SpeedOptions(**{name: value})
        assert parse(one.flags()) == one, name
    assert SpeedOptions().flags() == [] and SpeedOptions().describe() == "(plain recipe)"


def test_what_the_options_change_in_the_trainer():
    assert SpeedOptions().trainer_overrides() == {}
    overrides = SpeedOptions(eval_batch_size=60, fused_optimizer=True, pad_to_length=96, quiet_steps=True,
                             compile_model="inductor", compile_mode="reduce-overhead").trainer_overrides()
    assert overrides == {"per_device_eval_batch_size": 60, "optim": "adamw_torch_fused", "pad_to_multiple_of": 96,
                         "logging_nan_inf_filter": False, "torch_compile": True, "torch_compile_backend": "inductor",
                         "torch_compile_mode": "reduce-overhead"}
    assert SpeedOptions(packing=True, packing_length=300).trainer_overrides() == {"packing": True, "max_length": 300}


def test_contradictions_are_one_line_before_anything_loads():
    with pytest.raises(UserError, match="give one of --packing and --padding-free"):
        SpeedOptions(packing=True, padding_free=True).check()
    with pytest.raises(UserError, match="--compile-mode goes with --compile-model"):
        SpeedOptions(compile_mode="default").check()


def test_what_a_device_cannot_run_is_said_not_attempted():
    assert SpeedOptions(tf32=True).unavailable(POLYGLOT, TURING).startswith("TF32")
    assert SpeedOptions(tf32=True).unavailable(POLYGLOT, AMPERE) is None
    assert "no bf16" in SpeedOptions(dtype="bfloat16").unavailable(POLYGLOT, TURING)
    assert "CUDA" in SpeedOptions(compile_model="inductor", compile_mode="reduce-overhead").unavailable(POLYGLOT, CPU)
    assert "CUDA" in SpeedOptions(attn="flash_attention_2").unavailable(GEMMA, CPU)
    assert SpeedOptions(compile_model="inductor", pad_to_length=128).unavailable(POLYGLOT, CPU) is None


def test_a_gpu_gets_its_defaults_and_what_is_given_wins():
    assert defaults_for(CPU, {}) == SpeedOptions()
    assert defaults_for(AMPERE, {}) == SpeedOptions(**GPU_DEFAULTS)
    assert defaults_for(AMPERE, {"test_batch_size": 4}).test_batch_size == 4
    assert dataclasses.asdict(defaults_for(AMPERE, {"quiet_steps": True})) == \
        dataclasses.asdict(SpeedOptions(**GPU_DEFAULTS, quiet_steps=True))
