"""BreakHis: the index (names, index, splits), the generated BreakHis-like set, and the pretraining track."""
