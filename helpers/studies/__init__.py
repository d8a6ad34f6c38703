"""Studies: one model trained and scored (experiment), variants side by side (study), searches
(tuning), comparisons (compare), the leak demonstration (leak)."""
