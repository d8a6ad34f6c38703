"""Recipes: named training recipes (recipe), their cross-validation (crossval), the colour baseline
(colour), slide context (context), test-time augmentation (tta)."""
