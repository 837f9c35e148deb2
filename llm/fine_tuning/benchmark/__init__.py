"""The training benchmark (llm/fine_tuning/benchmark_training.py): the fine-tuning recipe at real size, epoch by
epoch, where the time goes and which speed options make it faster.

  options.py   what the benchmark is asked (its own options; the speed options are llm/fine_tuning/speed.py's)
  machine.py   the device and its bf16 peak, for the utilisation
  flops.py     model FLOPs per training token, tokens/s, TFLOP/s, MFU
  timing.py    a TrainerCallback that splits each epoch into steps, eval loss, test and the rest
  results.py   the CSV, the summary JSON and the printed lines
  runner.py    one variant: a fresh model through the fine-tuning program's own training
  compare.py   the variants of --compare, the table, the fastest combination that keeps the recipe
  main.py      the script's main
"""
