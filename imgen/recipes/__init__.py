"""Things that train models, above imgen.train: reflow pairs and 2-rectified flow, progressive distillation,
CLIP and unCLIP training. Methods (imgen.methods) own losses; recipes chain Trainer runs."""
