"""Training: one recipe (recipe.py) and its typed config (config.py), the curriculum (curriculum.py), checkpoints with
exact resume (checkpoint.py)."""
