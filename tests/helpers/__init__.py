"""What the tests share besides fixtures: running scripts, the dataset and its broken copies, tiny model folders."""
