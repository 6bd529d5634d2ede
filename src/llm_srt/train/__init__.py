"""Training: one recipe (recipe.py), the curriculum (curriculum.py), checkpoints with exact resume (checkpoint.py)."""
