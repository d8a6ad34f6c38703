"""The data: index, cache, the generated and downloaded sets, splits, pipeline, augmentation, stain, slides."""
